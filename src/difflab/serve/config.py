"""What a server allows and how it batches (`ServeConfig`), and acceleration plans (`Plan`).

Every value is checked when the config is built, before any model loads, so `difflab serve`
with a bad option prints one `error:` line. A plan file names acceleration settings a request
may pick by name (`difflab.runtime.plan`); requests never name files.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from difflab.config import ConfigError
from difflab.limits import check_float, check_int, get_limits
from difflab.runtime.plan import NAME, NO_PLAN, Plan, check_name, read_plans

__all__ = ["NAME", "NO_PLAN", "Plan", "ServeConfig", "check_name", "read_plans"]


@dataclass(frozen=True)
class ServeConfig:
    """Limits, batching and security of one server (defaults: safe for a laptop)."""

    host: str = "127.0.0.1"  # loopback: only this machine can connect
    port: int = 8000
    max_batch: int = 16  # images in one batched forward
    max_wait_ms: float = 50.0  # how long the oldest queued request waits for company
    max_queue: int = 256  # queued requests; one more gets 429
    max_images: int = 0  # images one request may ask for (prompts x n); 0: min(8, max_batch)
    max_steps: int = 100  # sampling steps one request may ask for
    max_prompt_chars: int = 500
    max_body_bytes: int = 65_536
    max_connections: int = 1_000  # open connections; more are answered 503 by uvicorn
    timeout_s: float = 120.0  # a request not answered by then gets 504 and is cancelled
    api_key: str = ""  # "" = no key needed
    cors_origins: tuple[str, ...] = ()  # () = no cross-origin requests
    precision: str = "auto"
    sizes: tuple[int, ...] = ()  # image sides besides the model's own a request may ask for

    def __post_init__(self) -> None:
        check_int("port", self.port, 0, 65_535)
        check_int("max_batch", self.max_batch, 1, get_limits().max_batch_size,
                  limit="max_batch_size")
        check_float("max_wait_ms", self.max_wait_ms, 0.0, 60_000.0)
        check_int("max_queue", self.max_queue, 1, 1_000_000)
        if self.max_images == 0:
            object.__setattr__(self, "max_images", min(8, self.max_batch))
        check_int("max_images", self.max_images, 1, self.max_batch)
        check_int("max_steps", self.max_steps, 1, get_limits().max_sample_steps,
                  limit="max_sample_steps")
        check_int("max_prompt_chars", self.max_prompt_chars, 1, get_limits().max_prompt_chars,
                  limit="max_prompt_chars")
        check_int("max_body_bytes", self.max_body_bytes, 1_024, 64 * 2**20)
        check_int("max_connections", self.max_connections, 1, 1_000_000)
        check_float("timeout_s", self.timeout_s, 0.0, 86_400.0, lo_open=True)
        if self.api_key and (len(self.api_key) < 16 or not self.api_key.isprintable()
                             or " " in self.api_key):
            raise ConfigError("api key must be at least 16 printable characters without "
                              "spaces (e.g. `python -c 'import secrets; "
                              "print(secrets.token_urlsafe())'`)")
        for origin in self.cors_origins:
            if origin != "*" and not re.match(r"^https?://[^/\s]+$", origin):
                raise ConfigError(f"CORS origin {origin!r} must be scheme://host[:port] "
                                  "(e.g. http://localhost:3000) or *")
        for side in self.sizes:
            check_int("size", side, 1, get_limits().max_image_size, limit="max_image_size")

    @property
    def loopback(self) -> bool:
        """Whether only this machine can reach the server."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False
