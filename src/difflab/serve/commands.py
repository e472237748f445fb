"""`difflab serve`: load a model once and answer image requests over HTTP."""

from __future__ import annotations

import typer

from difflab.serve.config import ServeConfig, read_plans

API_KEY_ENV = "DIFFLAB_API_KEY"


def serve_command(
    model: str = typer.Argument(..., help="a shipped model's name (shapes-base) or any "
                                "artefact folder"),
    plan: str = typer.Option("", help="JSON file of acceleration plans requests may choose "
                             'by name: {"NAME": {"accel": "deepcache:interval=2"}, ...}; '
                             "`difflab accelerate` writes one"),
    adapter: list[str] = typer.Option([], "--adapter", help="adapter folder, DIR[:weight] "
                                      "(repeatable; requests choose one by folder name)"),
    host: str = typer.Option("127.0.0.1", help="address to listen on (loopback: only this "
                             "machine)"),
    port: int = typer.Option(8000, help="port (0: any free port)"),
    api_key: str = typer.Option("", envvar=API_KEY_ENV, show_default=False,
                                help=f"require this key (or set {API_KEY_ENV})"),
    cors_origin: list[str] = typer.Option([], "--cors-origin", help="allow browser requests "
                                          "from this origin (repeatable; default: none)"),
    max_batch: int = typer.Option(16, help="images in one batched forward"),
    max_wait_ms: float = typer.Option(50.0, help="how long a request waits for others to "
                                      "batch with"),
    max_queue: int = typer.Option(256, help="queued requests before 429"),
    max_images: int = typer.Option(0, help="images one request may ask for (0: 8, or "
                                   "--max-batch if smaller)"),
    max_steps: int = typer.Option(100, help="sampling steps one request may ask for"),
    max_connections: int = typer.Option(1000, help="open connections before 503"),
    timeout: float = typer.Option(120.0, help="seconds before an unanswered request gets 504"),
    size: list[int] = typer.Option([], "--size", help="another image side requests may ask "
                                   "for (repeatable; checked on the model at start)"),
    precision: str = typer.Option("auto", help="auto, fp32, bf16 or fp16 (CUDA)"),
) -> None:
    """Serve MODEL over HTTP: `difflab serve shapes-base --plan plans.json`, then open
    http://127.0.0.1:8000/."""
    from difflab.runtime.machine import PRECISIONS
    from difflab.tune.adapters import parse_adapter

    config = ServeConfig(host=host, port=port, max_batch=max_batch, max_wait_ms=max_wait_ms,
                         max_queue=max_queue, max_images=max_images,
                         max_steps=max_steps,
                         max_connections=max_connections, timeout_s=timeout, api_key=api_key,
                         cors_origins=tuple(cors_origin), precision=precision,
                         sizes=tuple(size))
    if precision not in PRECISIONS:
        from difflab.config import ConfigError

        raise ConfigError(f"--precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    plans = read_plans(plan)
    adapters = [parse_adapter(a) for a in adapter]
    for p in plans.values():
        mismatch = p.machine_mismatch()
        if mismatch:
            typer.echo(f"warning: {mismatch}", err=True)
    if not config.loopback and not config.api_key:
        typer.echo(f"warning: listening on {host} without --api-key: anyone who can reach "
                   "this port can use the server", err=True)

    from difflab.serve.server import Server
    from difflab.serve.service import Service, load_catalog

    catalog = load_catalog(model, adapters, plans, config.sizes, precision)
    service = Service(catalog, config)
    typer.echo(f"serving {catalog.name} ({len(catalog.pipelines) - 1} adapters, "
               f"{len(catalog.plans) - 1} plans, sizes {', '.join(map(str, catalog.sizes))}) "
               f"on http://{host}:{port}/ ; batches of up to {max_batch} images")
    try:
        Server(service).run()
    except KeyboardInterrupt:  # uvicorn re-raises the SIGINT it handled, once it has stopped
        pass
    typer.echo("stopped")
