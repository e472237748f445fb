"""The HTTP API: schema, validation with one-line 4xx errors, the API key, CORS, PNG answers,
server-sent progress and Prometheus metrics."""

from __future__ import annotations

import io

import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families
from serve_helpers import STEPS, assert_same_image, events, pixels

KEY = "k" * 8 + "-secret-key-123"


def test_routes_schema_and_page(serve):
    with serve() as client:
        assert client.get("/healthz").json() == {"status": "ok", "queue": 0}
        models = client.get("/v1/models").json()
        assert models["model"] == "shapes-base"
        assert [p["name"] for p in models["plans"]] == ["none", "deepcache-n2"]
        assert models["image"]["sizes"] == [32, 16] and "euler" in models["samplers"]
        schema = client.get("/openapi.json").json()
        assert "/v1/images" in schema["paths"] and "ImageRequest" in schema["components"]["schemas"]
        page = client.get("/")
        assert "<progress" in page.text and "script-src 'self'" in page.headers[
            "content-security-policy"]
        assert client.get("/static/page.js").status_code == 200
        assert client.get("/static/..%2F..%2Fconfig.py").status_code == 404
        assert client.get("/docs").status_code == 404  # it would load scripts from a CDN


@pytest.mark.parametrize(("body", "status", "message"), [
    ({"prompt": "a red circle", "steps": 0}, 422, "steps: Input should be greater than"),
    ({"prompt": "a red circle", "steps": 401}, 422, "steps = 401; this server allows 1..400"),
    ({"prompt": "a red circle", "sampler": "eulr"}, 422, "unknown sampler 'eulr'; valid: ddim"),
    ({"prompt": "a red circle", "path": "/etc/passwd"}, 422, "path: Extra inputs are not"),
    ({"prompt": "a red circle", "adapter": "../../etc"}, 422, "unknown adapter '../../etc'"),
    ({"prompt": "a red circle", "plan": "fast"}, 422, "unknown plan 'fast'; valid: none, deep"),
    ({"prompt": "a red circle", "size": 24}, 422, "size = 24; this server samples 32, 16"),
    ({"prompt": ["a", "b", "c"], "n": 3}, 422, "= 9 images; this server allows 8 per request"),
    ({"prompt": "a\x00b"}, 422, "control character U+0000"),
    ({"prompt": "x" * 501}, 422, "501 characters; this server allows 500"),
    ({"prompt": "a", "n": 2, "response_format": "png"}, 422, "'png' returns one image"),
    ({"prompt": []}, 422, "prompt is an empty list"),
    ({"n": 1}, 422, "prompt: Field required"),
    ({"prompt": "a red circle", "seed": -1}, 422, "seed: Input should be greater than"),
    ({"prompt": "a red circle", "guidance": 1e9}, 422, "cfg = 1000000000.0 is out of range"),
])
def test_bad_requests_get_one_line_errors(serve, body, status, message):
    with serve() as client:
        r = client.post("/v1/images", json=body)
        assert r.status_code == status
        assert message in r.json()["error"] and "\n" not in r.json()["error"]


def test_bodies_over_the_limit_are_refused(serve):
    with serve(max_body_bytes=2048) as client:
        big = b'{"prompt": "' + b"x" * 4000 + b'"}'
        r = client.post("/v1/images", content=big, headers={"content-type": "application/json"})
        assert r.status_code == 413 and "over 2048 bytes" in r.json()["error"]
        chunks = iter([b'{"prompt": "', *[b"x" * 1000] * 4, b'"}'])  # no Content-Length
        r = client.post("/v1/images", content=chunks, headers={"content-type": "application/json"})
        assert r.status_code == 413
        assert client.post("/v1/images", content=b"{not json",
                           headers={"content-type": "application/json"}).status_code == 422


def test_the_api_key_is_required_when_set(serve):
    body = {"prompt": "a red circle", "steps": STEPS, "seed": 1}
    with serve(api_key=KEY) as client:
        r = client.post("/v1/images", json=body)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert client.post("/v1/images", json=body,
                           headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get("/metrics").status_code == 401
        assert client.get("/v1/models").status_code == 401
        assert client.get("/healthz").status_code == 200  # probes need no key
        assert client.get("/").status_code == 200  # the page asks for the key
        assert client.post("/v1/images", json=body,
                           headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
        assert client.post("/v1/images", json=body, headers={"X-API-Key": KEY}).status_code == 200


def test_cross_origin_requests_are_off_unless_configured(serve):
    preflight = {"Origin": "http://elsewhere.example", "Access-Control-Request-Method": "POST"}
    with serve() as client:
        r = client.options("/v1/images", headers=preflight)
        assert "access-control-allow-origin" not in r.headers
    with serve(cors_origins=("http://elsewhere.example",)) as client:
        r = client.options("/v1/images", headers=preflight)
        assert r.headers["access-control-allow-origin"] == "http://elsewhere.example"


def test_png_answers_and_seeds_reproduce(serve):
    with serve() as client:
        body = {"prompt": "a red circle", "steps": STEPS, "response_format": "png", "seed": 7}
        r = client.post("/v1/images", json=body)
        assert r.headers["content-type"] == "image/png" and r.headers["x-seed"] == "7"
        image = Image.open(io.BytesIO(r.content))
        assert image.size == (32, 32) and image.mode == "RGB"
        assert client.post("/v1/images", json=body).content == r.content
        drawn = client.post("/v1/images", json={"prompt": ["a red circle", "a blue square"],
                                                "n": 2, "steps": STEPS}).json()
        seeds = [im["seed"] for im in drawn["images"]]
        assert seeds == list(range(seeds[0], seeds[0] + 4))  # prompt-major, seed + i
        again = client.post("/v1/images", json={"prompt": "a blue square", "n": 2,
                                                "seed": seeds[2], "steps": STEPS}).json()
        for a, b in zip(again["images"], drawn["images"][2:], strict=True):
            assert_same_image(pixels(a["b64_png"]), pixels(b["b64_png"]))


def test_progress_streams_then_the_images_and_metrics_count_them(serve):
    with serve() as client:
        with client.stream("POST", "/v1/images", json={"prompt": "a red circle", "n": 2,
                                                       "steps": 5, "stream": True}) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            seen = list(events(r))
        kinds = [kind for kind, _ in seen]
        assert kinds == ["queued"] + ["progress"] * 5 + ["done"]
        assert [d["step"] for k, d in seen if k == "progress"] == [1, 2, 3, 4, 5]
        done = seen[-1][1]
        assert len(done["images"]) == 2 and pixels(done["images"][0]["b64_png"]).shape == (
            32, 32, 3)
        text = client.get("/metrics").text
    metrics = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples
               if not s.labels or s.labels.get("outcome") == "ok"}
    assert metrics["difflab_serve_images_total"] == 2
    assert metrics["difflab_serve_requests_total"] == 1
    assert metrics["difflab_serve_batch_images_count"] == 1
    assert metrics["difflab_serve_batch_images_sum"] == 2
    assert metrics["difflab_serve_request_seconds_count"] == 1
    assert metrics["difflab_serve_queue_depth"] == 0
    assert metrics["difflab_serve_images_per_second"] > 0
