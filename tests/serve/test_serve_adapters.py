"""An adapter served by name: its own copy of the model, never batched with the base."""

from __future__ import annotations

import copy
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from serve_helpers import STEPS, config, pixels, serving

from difflab.data.shapes import render_spec
from difflab.data.world import ObjectSpec, PromptSpec
from difflab.runtime import Pipeline, SampleConfig
from difflab.serve import Service, load_catalog
from difflab.tune.adapters import apply_adapters, base_reference, save_adapter
from difflab.tune.fit import TuneConfig, tune


def fresh(pipe: Pipeline) -> Pipeline:
    """A copy of a loaded pipeline with its own network (LoRA changes only the network)."""
    return Pipeline(copy.deepcopy(pipe.net), pipe.process, pipe.conditioner, pipe.image_shape,
                    source=pipe.source, config=pipe.config, kind=pipe.kind)


def test_requests_choose_an_adapter_by_folder_name(catalog, tmp_path, monkeypatch):
    specs = [PromptSpec(f"a {c} circle", "single", (ObjectSpec("circle", c),))
             for c in ("red", "blue")]
    images = np.stack([render_spec(s, 32, seed=i)[0] for i, s in enumerate(specs)])
    result = tune(fresh(catalog.base), TuneConfig(method="lora", steps=2, batch_size=2,
                                                           prior_images=2, lr=0.05),
                  images, [s.text for s in specs], progress=False)
    folder = tmp_path / "circle-lora"
    save_adapter(result, folder, base_reference("shapes-base"))
    # the model is loaded already: copies of it stand in for load()
    monkeypatch.setattr("difflab.serve.service.load", lambda model: fresh(catalog.base))
    served = load_catalog("shapes-base", adapters=[(str(folder), 1.0)], precision="fp32")
    body = {"prompt": "a red circle", "steps": STEPS, "seed": 3}
    with serving(Service(served, config(max_wait_ms=300))) as client:
        assert [a["name"] for a in client.get("/v1/models").json()["adapters"]] == [
            "circle-lora"]
        with ThreadPoolExecutor(2) as pool:
            base, tuned = pool.map(lambda b: client.post("/v1/images", json=b).json(),
                                   [body, {**body, "adapter": "circle-lora"}])
    assert base["timing"]["batch_images"] == tuned["timing"]["batch_images"] == 1
    direct = fresh(catalog.base)
    apply_adapters(direct, [(folder, 1.0)])
    expected = direct.generate(["a red circle"], [3], SampleConfig(steps=STEPS, precision="fp32"))
    np.testing.assert_array_equal(pixels(tuned["images"][0]["b64_png"]), expected[0])
    assert not np.array_equal(pixels(base["images"][0]["b64_png"]), expected[0])
