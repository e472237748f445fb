"""Helpers of the serving tests: a real server in a thread on a free loopback port."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import httpx

from difflab.serve import ServeConfig, Server, Service

STEPS = 4  # the tests check behaviour, not images: few steps


def config(**changes) -> ServeConfig:
    """A test server's config: fp32 (exact comparisons), any free port, small limits."""
    return ServeConfig(**{"port": 0, "precision": "fp32", "max_steps": 400, **changes})


@contextlib.contextmanager
def serving(service: Service) -> Iterator[httpx.Client]:
    """Run `service` under uvicorn in a thread; a client on its URL; stopped after."""
    server = Server(service, log_level="warning")
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=60) as client:
            client.service = service  # the tests look inside: queue, metrics, shutdown
            yield client
    finally:
        server.should_exit = True
        thread.join(timeout=60)


def wait_until(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def events(response: httpx.Response) -> Iterator[tuple[str, dict]]:
    """The (event, data) pairs of a server-sent-events response, as they arrive."""
    import json

    event = None
    for line in response.iter_lines():
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: ") and event:
            yield event, json.loads(line[6:])
            event = None


def pixels(b64: str):
    """A base64 PNG of an answer as a (H, W, 3) uint8 array."""
    import base64
    import io

    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"))


def assert_same_image(a, b) -> None:
    """The same image up to float rounding: CPU convolution kernels choose their algorithm by
    batch size, so a batched image's floats differ from the lone one's by ~1e-6, which can move
    a rare pixel across a rounding boundary (one level of 255)."""
    import numpy as np

    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    assert a.shape == b.shape and diff.max() <= 1 and (diff > 0).mean() <= 0.005, (
        diff.max(), (diff > 0).sum())
