"""Micro-batching: queued requests with the same settings share one batched forward.

The scheduler runs on the server's event loop; sampling runs on one worker thread, one batch at
a time. The oldest queued request leads the next batch; requests with its settings join, in
arrival order, until the batch holds `max_batch` images or the leader has waited `max_wait_ms`
(under load the queue is already full, so batches fill at once). Per-sample seeds make every
image the one the same request gets alone (`difflab.runtime.pipeline`).

A request whose client leaves is cancelled: dropped from the queue, or, when every request of
the running batch is gone, the batch stops at its next step. Shutdown answers queued requests
503 and lets the running batch finish.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import math
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from difflab.config import ConfigError
from difflab.runtime import SampleConfig
from difflab.serve.metrics import ServeMetrics

log = logging.getLogger("difflab.serve")


class ServeError(Exception):
    """A request that cannot be answered with images: HTTP status, one-line message, headers."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


class _Abort(Exception):
    """Raised from the step callback to stop a batch nobody waits for any more."""


@dataclass(eq=False)
class Job:
    """One request: an image per (prompt, seed) pair, sampled with `config`."""

    prompts: list[str]  # one per image
    seeds: list[int]
    config: SampleConfig
    key: Hashable  # requests with equal keys may share a batch
    context: dict[str, Any] = field(default_factory=dict)  # what the sampler needs besides
    stream: asyncio.Queue | None = None  # ("progress", step, steps) / ("done",) events
    arrived: float = field(default_factory=time.monotonic)
    started: float | None = None
    cancelled: bool = False
    future: asyncio.Future | None = None

    @property
    def images(self) -> int:
        return len(self.prompts)


@dataclass
class JobResult:
    """What a finished request gets: one PNG per image, and where its time went."""

    pngs: list[bytes]
    queue_seconds: float
    compute_seconds: float  # the whole batch's sampling time
    batch_images: int


# compute(batch, step) -> one list of PNGs per job; runs on the worker thread and calls
# step() after every sampling step.
Compute = Callable[[list[Job], Callable[[], None]], list[list[bytes]]]


class Batcher:
    """The queue, the batch scheduler and the sampling thread of one server."""

    def __init__(self, compute: Compute, *, max_batch: int, max_wait_ms: float, max_queue: int,
                 metrics: ServeMetrics) -> None:
        self.compute = compute
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self.metrics = metrics
        self.pending: list[Job] = []
        self.running: list[Job] = []
        self.draining = False
        self.last_batch_seconds = 1.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._arrival: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None

    # ---- lifecycle (event loop) ----------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._arrival = asyncio.Event()
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="difflab-serve")
        self._task = asyncio.create_task(self._schedule())

    def begin_shutdown(self) -> None:
        """Refuse new requests, answer queued ones 503; the running batch finishes."""
        self.draining = True
        for job in self.pending:
            self._fail(job, ServeError(503, "the server is shutting down; retry elsewhere"))
            self.metrics.outcome("shutdown")
        self.pending.clear()
        self._update_gauges()
        if self._arrival is not None:
            self._arrival.set()

    def begin_shutdown_threadsafe(self) -> None:
        """`begin_shutdown` from another thread (a signal handler)."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.begin_shutdown)

    async def stop(self) -> None:
        """Shut down and wait for the running batch; then stop the thread."""
        self.begin_shutdown()
        if self._task is not None:
            while self.running:
                await asyncio.sleep(0.01)
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    # ---- requests (event loop) -----------------------------------------------------------

    def submit(self, job: Job) -> asyncio.Future:
        """Queue `job`; 503 while shutting down, 429 (with Retry-After) when the queue is full."""
        if self.draining or self._loop is None:
            self.metrics.outcome("shutdown")
            raise ServeError(503, "the server is shutting down; retry elsewhere")
        if len(self.pending) >= self.max_queue:
            self.metrics.outcome("queue_full")
            raise ServeError(429, f"the queue is full ({self.max_queue} requests); retry later",
                             {"Retry-After": str(self.retry_after())})
        job.future = self._loop.create_future()
        self.pending.append(job)
        self._update_gauges()
        self._arrival.set()
        return job.future

    def cancel(self, job: Job) -> None:
        """The client is gone: drop `job` from the queue, or mark it so its batch may stop."""
        if job.future is not None and job.future.done():
            return
        job.cancelled = True
        if job in self.pending:
            self.pending.remove(job)
            self._update_gauges()
        self._fail(job, ServeError(499, "the client closed the request"))

    def retry_after(self) -> int:
        """Seconds until the queue has likely drained (at least 1)."""
        queued = sum(j.images for j in self.pending)
        batches = math.ceil(queued / self.max_batch) + 1
        return max(1, math.ceil(batches * self.last_batch_seconds))

    # ---- scheduling (event loop) ---------------------------------------------------------

    def _take(self, lead: Job) -> tuple[list[Job], int]:
        """The queued jobs that share `lead`'s batch, oldest first, within max_batch images."""
        batch, images = [], 0
        for job in self.pending:
            if job.key == lead.key and images + job.images <= self.max_batch:
                batch.append(job)
                images += job.images
        return batch, images

    async def _collect(self) -> list[Job]:
        """Wait (at most until the leader's deadline) for a full batch; return what is there."""
        while self.pending:
            lead = self.pending[0]
            batch, images = self._take(lead)
            wait = lead.arrived + self.max_wait - time.monotonic()
            if images >= self.max_batch or wait <= 0 or self.draining:
                for job in batch:
                    self.pending.remove(job)
                return batch
            self._arrival.clear()
            try:
                await asyncio.wait_for(self._arrival.wait(), wait)
            except asyncio.TimeoutError:
                pass
        return []

    async def _schedule(self) -> None:
        while True:
            while not self.pending:
                self._arrival.clear()
                await self._arrival.wait()
            batch = await self._collect()
            if not batch:
                continue
            self.running = batch
            now = time.monotonic()
            for job in batch:
                job.started = now
            self._update_gauges()
            try:
                outcomes = await self._loop.run_in_executor(self._pool, self._run, batch)
            finally:
                self.running = []
                self._update_gauges()
            for job, outcome in zip(batch, outcomes, strict=True):
                if isinstance(outcome, ServeError):
                    self._fail(job, outcome)
                else:
                    self._finish(job, outcome)

    def _finish(self, job: Job, result: JobResult) -> None:
        if job.future is not None and not job.future.done():
            job.future.set_result(result)
        if job.stream is not None:
            job.stream.put_nowait(("done",))

    def _fail(self, job: Job, error: ServeError) -> None:
        if job.future is not None and not job.future.done():
            job.future.set_exception(error)
            job.future.exception()  # retrieved: a gone client's error is not "never retrieved"
        if job.stream is not None:
            job.stream.put_nowait(("done",))

    def _update_gauges(self) -> None:
        self.metrics.queue_depth.set(len(self.pending))
        self.metrics.queue_images.set(sum(j.images for j in self.pending))
        self.metrics.running_images.set(sum(j.images for j in self.running))

    # ---- sampling (worker thread) --------------------------------------------------------

    def _run(self, batch: list[Job]) -> list[JobResult | ServeError]:
        """Sample one batch; a user error in it is retried request by request, so that one
        bad request fails alone."""
        steps = batch[0].config.steps
        done = [0]

        def step() -> None:
            done[0] += 1
            if all(job.cancelled for job in batch):
                raise _Abort
            for job in batch:
                if job.stream is not None:
                    self._loop.call_soon_threadsafe(job.stream.put_nowait,
                                                    ("progress", min(done[0], steps), steps))

        start = time.perf_counter()
        try:
            pngs = self.compute(batch, step)
        except _Abort:
            self._loop.call_soon_threadsafe(self.metrics.steps.inc, done[0])
            return [ServeError(499, "the client closed the request")] * len(batch)
        except ConfigError as e:
            if len(batch) > 1:
                return [self._run([job])[0] for job in batch]
            return [ServeError(422, str(e))]
        except Exception as e:  # a bug: the traceback goes to a crash file, not the client
            from difflab.crash import report_bug

            log.error(report_bug(e, ["difflab", "serve"]))
            return [ServeError(500, "internal error while sampling; the server log says where "
                               "its traceback was saved")] * len(batch)
        seconds = time.perf_counter() - start
        self.last_batch_seconds = seconds
        images = sum(job.images for job in batch)
        self._loop.call_soon_threadsafe(self._record, images, done[0])
        return [JobResult(p, job.started - job.arrived, seconds, images)
                for job, p in zip(batch, pngs, strict=True)]

    def _record(self, images: int, steps: int) -> None:
        self.metrics.batch_done(images)
        self.metrics.steps.inc(steps)
