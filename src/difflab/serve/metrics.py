"""The server's Prometheus metrics (`GET /metrics`, text exposition format), one registry per
server so that several servers in one process (tests, benchmarks) keep apart."""

from __future__ import annotations

import collections
import time

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300)
RATE_WINDOW_S = 60.0  # images/s is measured over the last minute


class ServeMetrics:
    """Queue depth, batch sizes, latency, outcomes and throughput of one server."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.queue_depth = Gauge("difflab_serve_queue_depth", "Requests waiting for a batch",
                                 registry=r)
        self.queue_images = Gauge("difflab_serve_queue_images", "Images waiting for a batch",
                                  registry=r)
        self.running_images = Gauge("difflab_serve_running_images",
                                    "Images in the batch being sampled", registry=r)
        self.batch_images = Histogram("difflab_serve_batch_images", "Images per batched forward",
                                      buckets=BATCH_BUCKETS, registry=r)
        self.latency = Histogram("difflab_serve_request_seconds",
                                 "Seconds from arrival to answer of answered image requests",
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.requests = Counter("difflab_serve_requests", "Image requests by outcome",
                                ["outcome"], registry=r)
        self.images = Counter("difflab_serve_images", "Images sampled", registry=r)
        self.steps = Counter("difflab_serve_steps", "Sampling steps run (batched forwards)",
                             registry=r)
        self.rate = Gauge("difflab_serve_images_per_second",
                          f"Images finished per second over the last {RATE_WINDOW_S:.0f} s",
                          registry=r)
        self.rate.set_function(self.images_per_second)
        self._finished: collections.deque[tuple[float, int]] = collections.deque()
        self._start = time.monotonic()

    def batch_done(self, images: int) -> None:
        """Record a finished batch of `images`."""
        now = time.monotonic()
        self.batch_images.observe(images)
        self.images.inc(images)
        self._finished.append((now, images))
        self._trim(now)

    def _trim(self, now: float) -> None:
        while self._finished and self._finished[0][0] < now - RATE_WINDOW_S:
            self._finished.popleft()

    def images_per_second(self) -> float:
        """Images finished in the last minute (or since start, when younger) per second."""
        now = time.monotonic()
        self._trim(now)
        span = min(RATE_WINDOW_S, now - self._start)
        return sum(n for _, n in self._finished) / span if span > 0 else 0.0

    def outcome(self, name: str, seconds: float | None = None) -> None:
        """Count a request's outcome (ok, invalid, unauthorized, queue_full, shutdown, timeout,
        cancelled, error); an answered one adds its latency."""
        self.requests.labels(name).inc()
        if seconds is not None:
            self.latency.observe(seconds)

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric."""
        return generate_latest(self.registry)
