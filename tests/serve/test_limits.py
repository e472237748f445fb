"""Limits and lifecycle: a full queue answers 429, a client that leaves cancels its request,
a slow request times out with 504, and shutdown answers the queue 503 while the running batch
finishes."""

from __future__ import annotations

import threading

from serve_helpers import STEPS, events, wait_until

LONG = {"prompt": "a red circle", "steps": 400, "stream": True}  # seconds: cancelled early


def in_background(client, body):
    """POST `body` from another thread; returns (thread, [response])."""
    out = []
    thread = threading.Thread(target=lambda: out.append(client.post("/v1/images", json=body)))
    thread.start()
    return thread, out


def started(stream):
    """Read a streamed answer until its first sampling step; the rest of its events. (Keep
    them: closing the iterator closes the connection, which cancels the request.)"""
    seen = events(stream)
    for kind, _ in seen:
        if kind == "progress":
            return seen
    raise AssertionError("the stream ended before sampling started")


def test_a_full_queue_answers_429_and_a_client_that_leaves_stops_its_batch(serve):
    with serve(max_batch=1, max_queue=1) as client:
        service = client.service
        with client.stream("POST", "/v1/images", json=LONG) as running:
            rest = started(running)
            thread, queued = in_background(client, {"prompt": "a blue square", "steps": STEPS})
            wait_until(lambda: len(service.batcher.pending) == 1)
            full = client.post("/v1/images", json={"prompt": "a white ring", "steps": STEPS})
            assert full.status_code == 429 and "queue is full" in full.json()["error"]
            assert int(full.headers["retry-after"]) >= 1
            rest.close()  # the client leaves
        # the long request's client left: its batch stops, and the queued one runs
        thread.join(timeout=60)
        assert queued[0].status_code == 200
        wait_until(lambda: service.metrics.requests.labels("cancelled")._value.get() == 1)
    steps = service.metrics.steps._value.get()
    assert steps < 400, steps  # the long batch stopped early (the queued one ran 4)
    assert service.metrics.requests.labels("queue_full")._value.get() == 1
    assert service.metrics.images._value.get() == 1  # only the queued request's image


def test_a_request_that_leaves_the_queue_never_runs(serve):
    with serve(max_batch=1) as client:
        service = client.service
        with client.stream("POST", "/v1/images", json=LONG) as running:
            rest = started(running)
            with client.stream("POST", "/v1/images", json={**LONG, "steps": STEPS}) as waiting:
                seen = events(waiting)
                assert next(seen) == ("queued", {"ahead": 0})
                assert len(service.batcher.pending) == 1
                seen.close()  # the client leaves
            wait_until(lambda: not service.batcher.pending)
            assert service.batcher.running  # the first is still sampling
            rest.close()
        wait_until(lambda: not service.batcher.running)
    assert service.metrics.images._value.get() == 0
    assert service.metrics.requests.labels("cancelled")._value.get() == 2


def test_a_request_past_the_timeout_gets_504_and_is_stopped(serve):
    with serve(timeout_s=0.5) as client:
        service = client.service
        r = client.post("/v1/images", json={**LONG, "stream": False})
        assert r.status_code == 504 and "no answer within 0.5 s" in r.json()["error"]
        wait_until(lambda: not service.batcher.running)
    assert service.metrics.steps._value.get() < 400
    assert service.metrics.requests.labels("timeout")._value.get() == 1


def test_shutdown_finishes_the_running_batch_and_answers_the_queue_503(serve):
    with serve(max_batch=1) as client:
        service = client.service
        with client.stream("POST", "/v1/images", json={**LONG, "steps": 60}) as running:
            seen = started(running)
            thread, queued = in_background(client, {"prompt": "a blue square", "steps": STEPS})
            wait_until(lambda: len(service.batcher.pending) == 1)
            service.batcher.begin_shutdown_threadsafe()  # what SIGINT / SIGTERM call
            thread.join(timeout=60)
            assert queued[0].status_code == 503 and "shutting down" in queued[0].json()["error"]
            assert client.get("/healthz").status_code == 503
            later = client.post("/v1/images", json={"prompt": "a white ring", "steps": STEPS})
            assert later.status_code == 503
            rest = [kind for kind, _ in seen]
        assert rest[-1] == "done"  # the running request got its image
