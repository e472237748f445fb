"""The FastAPI app: routes, the API key, the body limit, errors as one-line JSON, SSE progress.

    POST /v1/images   images for prompt(s) (JSON with base64 PNGs, a PNG, or an SSE stream)
    GET  /v1/models   the model, adapters, plans, samplers, sizes and limits
    GET  /healthz     200 while serving, 503 while shutting down
    GET  /metrics     Prometheus text format
    GET  /            the web page (static HTML + JS)
    GET  /openapi.json
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from difflab import __version__
from difflab.config import ConfigError
from difflab.serve.batcher import Job, JobResult, ServeError
from difflab.serve.schemas import ErrorResponse, ImageRequest, ImageResponse
from difflab.serve.service import Service

STATIC = Path(__file__).parent / "static"
PAGE_HEADERS = {
    # the page runs only its own script and shows only its own images
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                               "style-src 'self'; script-src 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
}
ERRORS = {code: {"model": ErrorResponse} for code in (401, 413, 422, 429, 503, 504)}


class BodyLimit:
    """Refuse request bodies over `max_bytes` with 413, by Content-Length or as they stream."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = f"request body over {self.max_bytes} bytes"
        length = dict(scope["headers"]).get(b"content-length", b"0")
        if not length.isdigit() or int(length) > self.max_bytes:
            await JSONResponse({"error": too_large}, 413)(scope, receive, send)
            return
        seen = 0

        async def limited() -> dict[str, Any]:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise HTTPException(413, too_large)
            return message

        await self.app(scope, limited, send)


def _one_line(exc: RequestValidationError) -> str:
    """Pydantic's errors as one line: `steps: Input should be ...; prompt: Field required`."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts)


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


async def _client_gone(request: Request) -> None:
    """Return once the client disconnects (the body has been read: only that can arrive)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def create_app(service: Service) -> FastAPI:
    """The ASGI app of `service`; its lifespan starts and stops the batcher."""
    config, metrics = service.config, service.metrics

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    # no /docs or /redoc: those pages load scripts from a CDN; /openapi.json is the schema
    app = FastAPI(title="difflab", version=__version__, lifespan=lifespan, docs_url=None,
                  redoc_url=None, description="Text-to-image sampling with micro-batching.")
    app.add_middleware(BodyLimit, max_bytes=config.max_body_bytes)
    if config.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(config.cors_origins),
                           allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type", "X-API-Key"])
    key_digest = hashlib.sha256(config.api_key.encode()).digest() if config.api_key else None

    def require_key(request: Request) -> None:
        """With an API key set: `Authorization: Bearer KEY` or `X-API-Key: KEY`."""
        if key_digest is None:
            return
        given = request.headers.get("x-api-key", "")
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if not given and scheme.lower() == "bearer":
            given = token.strip()
        # constant time: compare digests of equal length
        if not hmac.compare_digest(hashlib.sha256(given.encode()).digest(), key_digest):
            metrics.outcome("unauthorized")
            raise ServeError(401, "missing or wrong API key; send 'Authorization: Bearer KEY'",
                             {"WWW-Authenticate": "Bearer"})

    @app.exception_handler(ServeError)
    async def _serve_error(request: Request, exc: ServeError) -> Response:
        return JSONResponse({"error": exc.message}, exc.status, headers=exc.headers)

    @app.exception_handler(ConfigError)
    async def _config_error(request: Request, exc: ConfigError) -> Response:
        metrics.outcome("invalid")
        return JSONResponse({"error": str(exc)}, 422)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        metrics.outcome("invalid")
        return JSONResponse({"error": _one_line(exc)}, 422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return JSONResponse({"error": str(exc.detail)}, exc.status_code, headers=exc.headers)

    def result_of(future: asyncio.Future) -> JobResult:
        """A finished job's result; a failure in its batch is counted, then raised."""
        try:
            return future.result()
        except ServeError as e:
            if e.status in (422, 500):
                metrics.outcome("invalid" if e.status == 422 else "error")
            raise

    async def wait(job: Job, future: asyncio.Future, request: Request) -> JobResult:
        """The job's result; 504 after the timeout, and cancellation if the client leaves."""
        gone = asyncio.ensure_future(_client_gone(request))
        try:
            await asyncio.wait({future, gone}, timeout=config.timeout_s,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
        if future.done():
            return result_of(future)
        service.batcher.cancel(job)
        if gone.done() and not gone.cancelled():
            metrics.outcome("cancelled")
            raise ServeError(499, "the client closed the request")
        metrics.outcome("timeout")
        raise ServeError(504, f"no answer within {config.timeout_s:g} s; the request was "
                         "cancelled")

    async def stream(job: Job, future: asyncio.Future) -> AsyncIterator[bytes]:
        """SSE: `queued`, `progress` per step, then `done` (the JSON answer) or `error`."""
        deadline = job.arrived + config.timeout_s
        try:
            pending = service.batcher.pending
            yield _sse("queued", {"ahead": pending.index(job) if job in pending else 0})
            while True:
                try:
                    event = await asyncio.wait_for(job.stream.get(),
                                                   deadline - time.monotonic())
                except asyncio.TimeoutError:
                    service.batcher.cancel(job)
                    metrics.outcome("timeout")
                    yield _sse("error", {"status": 504, "error": "no answer within "
                                         f"{config.timeout_s:g} s; the request was cancelled"})
                    return
                if event[0] == "progress":
                    yield _sse("progress", {"step": event[1], "steps": event[2]})
                    continue
                try:
                    result = result_of(future)
                except ServeError as e:
                    yield _sse("error", {"status": e.status, "error": e.message})
                    return
                body = service.answer(job, result)
                metrics.outcome("ok", body["timing"]["seconds"])
                yield _sse("done", body)
                return
        finally:  # the client left (the stream was cancelled) or it ended
            if not future.done():
                service.batcher.cancel(job)
                metrics.outcome("cancelled")

    @app.post("/v1/images", response_model=ImageResponse, responses={
        **ERRORS, 200: {"content": {"image/png": {}, "text/event-stream": {}}}},
        dependencies=[Depends(require_key)])
    async def images(body: ImageRequest, request: Request) -> Any:
        """Sample images; concurrent compatible requests share a batch."""
        job = service.job(body)
        if body.stream:
            job.stream = asyncio.Queue()
        future = service.submit(job)
        if body.stream:
            return StreamingResponse(stream(job, future), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-store"})
        result = await wait(job, future, request)
        answer = service.answer(job, result)
        metrics.outcome("ok", answer["timing"]["seconds"])
        if body.response_format == "png":
            image = answer["images"][0]
            return Response(base64.b64decode(image["b64_png"]), media_type="image/png",
                            headers={"X-Seed": str(image["seed"]),
                                     "X-Seconds": str(answer["timing"]["seconds"])})
        return answer

    @app.get("/v1/models", dependencies=[Depends(require_key)])
    async def models() -> dict[str, Any]:
        """The model, adapters, plans, samplers, sizes and limits requests may choose from."""
        return service.describe()

    @app.get("/healthz", responses={503: {"model": ErrorResponse}})
    async def healthz() -> Response:
        """200 while serving; 503 once shutting down."""
        if service.batcher.draining:
            return JSONResponse({"status": "shutting down"}, 503)
        return JSONResponse({"status": "ok", "queue": len(service.batcher.pending)})

    @app.get("/metrics", dependencies=[Depends(require_key)],
             response_class=Response, responses={200: {"content": {"text/plain": {}}}})
    async def prometheus() -> Response:
        """Queue depth, batch sizes, latency, outcomes and images/s (Prometheus text)."""
        return Response(metrics.exposition(), media_type="text/plain; version=0.0.4")

    @app.get("/", include_in_schema=False)
    async def page() -> Response:
        return FileResponse(STATIC / "index.html", headers=PAGE_HEADERS)

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str) -> Response:
        files = {p.name: p for p in STATIC.iterdir() if p.suffix in (".js", ".css")}
        if name not in files:  # a fixed set of files: no path from the request reaches disk
            raise HTTPException(404, f"no static file {name!r}")
        return FileResponse(files[name], headers=PAGE_HEADERS)

    return app
