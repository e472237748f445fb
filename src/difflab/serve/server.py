"""Running the app under uvicorn, with shutdown that answers queued requests 503 first."""

from __future__ import annotations

import uvicorn

from difflab.serve.app import create_app
from difflab.serve.service import Service


class Server(uvicorn.Server):
    """uvicorn's server; on SIGINT/SIGTERM the queue is answered 503 before uvicorn waits for
    the requests in flight (the running batch) to finish."""

    def __init__(self, service: Service, log_level: str = "info") -> None:
        cfg = service.config
        super().__init__(uvicorn.Config(
            create_app(service), host=cfg.host, port=cfg.port, log_level=log_level,
            timeout_graceful_shutdown=int(cfg.timeout_s) + 1,
            limit_concurrency=cfg.max_connections,  # bounds memory under a flood
            server_header=False))
        self.service = service

    def handle_exit(self, sig: int, frame: object) -> None:
        self.service.batcher.begin_shutdown_threadsafe()
        super().handle_exit(sig, frame)

    @property
    def port(self) -> int:
        """The port it listens on (the one the OS chose for port 0)."""
        return self.servers[0].sockets[0].getsockname()[1]
