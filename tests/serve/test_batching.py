"""Micro-batching: concurrent compatible requests share one forward and get the images they
get alone; incompatible ones do not share; a bad request in a batch fails alone."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from serve_helpers import STEPS, assert_same_image, pixels

from difflab.config import ConfigError
from difflab.runtime import SampleConfig

REQUESTS = [{"prompt": "a red circle", "seed": 5},
            {"prompt": ["a blue square", "two green triangles"], "seed": 40},
            {"prompt": "a white ring", "seed": 9}]


def post_together(client, bodies):
    with ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(lambda b: client.post("/v1/images", json=b), bodies))


def test_concurrent_requests_share_a_batch_and_get_their_lone_images(serve, catalog):
    bodies = [{**b, "steps": STEPS, "guidance": 2.0} for b in REQUESTS]
    # the batch fires when it is full (4 images), long before the 10 s wait
    with serve(max_batch=4, max_images=4, max_wait_ms=10_000) as client:
        batched = [r.json() for r in post_together(client, bodies)]
    assert [b["timing"]["batch_images"] for b in batched] == [4, 4, 4]
    with serve(max_batch=4, max_images=4, max_wait_ms=0) as client:
        alone = [client.post("/v1/images", json=b).json() for b in bodies]
    assert [a["timing"]["batch_images"] for a in alone] == [1, 2, 1]
    config = SampleConfig(steps=STEPS, cfg=2.0, precision="fp32")
    for together, lone in zip(batched, alone, strict=True):
        prompts = [im["prompt"] for im in lone["images"]]
        seeds = [im["seed"] for im in lone["images"]]
        direct = catalog.base.generate(prompts, seeds, config)  # the library, same request
        for i, (a, b) in enumerate(zip(together["images"], lone["images"], strict=True)):
            assert (a["prompt"], a["seed"]) == (b["prompt"], b["seed"])
            assert_same_image(pixels(a["b64_png"]), pixels(b["b64_png"]))
            assert_same_image(pixels(b["b64_png"]), direct[i])


def test_only_requests_with_the_same_settings_share_a_batch(serve):
    bodies = [{"prompt": "a red circle", "steps": STEPS, "seed": 1},
              {"prompt": "a red circle", "steps": STEPS + 1, "seed": 1},
              {"prompt": "a red circle", "steps": STEPS, "seed": 1, "size": 16},
              {"prompt": "a red circle", "steps": STEPS, "seed": 1, "plan": "deepcache-n2"}]
    with serve(max_batch=8, max_wait_ms=300) as client:
        answers = [r.json() for r in post_together(client, bodies)]
        assert [a["timing"]["batch_images"] for a in answers] == [1, 1, 1, 1]
        assert pixels(answers[2]["images"][0]["b64_png"]).shape == (16, 16, 3)
        # a plan batches with itself and keeps each image its own
        plan = [{"prompt": p, "steps": 6, "seed": 3, "plan": "deepcache-n2"}
                for p in ("a red circle", "a blue square")]
        together = [r.json() for r in post_together(client, plan)]
    assert [a["timing"]["batch_images"] for a in together] == [2, 2]
    with serve(max_wait_ms=0) as client:
        for body, shared in zip(plan, together, strict=True):
            plain = client.post("/v1/images", json={**body, "plan": "none"}).json()
            lone = client.post("/v1/images", json=body).json()
            assert_same_image(pixels(lone["images"][0]["b64_png"]),
                              pixels(shared["images"][0]["b64_png"]))
            assert plain["images"][0]["b64_png"] != lone["images"][0]["b64_png"]
            assert lone["timing"]["speedup"] is not None  # measured against that plain run


def test_a_request_the_model_refuses_fails_alone(serve):
    with serve(max_batch=4, max_wait_ms=10_000) as client:
        compute = client.service.batcher.compute

        def refuse_one(batch, step):  # the model refuses one prompt, as a class model would
            if any("bad" in p for job in batch for p in job.prompts):
                raise ConfigError("'a bad prompt' is not a class of this model")
            return compute(batch, step)

        client.service.batcher.compute = refuse_one
        bodies = [{"prompt": p, "steps": STEPS} for p in
                  ("a red circle", "a bad prompt", "a blue square", "a white ring")]
        answers = post_together(client, bodies)
    assert [r.status_code for r in answers] == [200, 422, 200, 200]
    assert "not a class of this model" in answers[1].json()["error"]
