"""The shipped base model: loads by name, records how it was made, and still draws shapes."""

from __future__ import annotations

import pytest

from difflab.config import ConfigError
from difflab.evaluate import evaluate_suite
from difflab.runtime import SampleConfig, export_model, load, read_manifest
from difflab.runtime.artefacts import resolve, shipped_models

SHIPPED_FLOOR = 0.6  # single-object accuracy; shapes-base scores 0.81 at these settings


@pytest.mark.parametrize("name", ["shapes-base", "shapes-long"])
def test_the_shipped_models_carry_their_record(name):
    assert name in shipped_models()
    manifest = read_manifest(resolve(name))
    assert manifest.kind == "checkpoint"
    assert set(manifest.files) == {"model.safetensors"}  # no optimiser state ships
    assert manifest.metrics["split"] == "test"
    assert 0.0 < manifest.metrics["per_category"]["single"] <= 1.0
    assert "difflab demo" in manifest.provenance["reproduce"]
    assert manifest.provenance["machine"]["cpu"]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["shapes-base", "shapes-long"])
def test_the_shipped_models_score_above_a_floor(name):
    pipe = load(name)
    config = SampleConfig(sampler="euler_ancestral", steps=10, cfg=3.0, precision="fp32",
                          batch_size=64)
    result = evaluate_suite(pipe, "single", config, progress=False, split="dev")
    assert result.report.overall >= SHIPPED_FLOOR


def test_export_writes_the_network_alone(uncond_run, tmp_path):
    out = tmp_path / "exported"
    manifest = export_model(uncond_run.path, out, provenance={"reproduce": "difflab train x.toml"})
    assert sorted(p.name for p in out.iterdir()) == ["difflab.json", "model.safetensors"]
    assert manifest.provenance["reproduce"] == "difflab train x.toml"
    a, b = load(uncond_run.path), load(out)
    for (k, v), (k2, v2) in zip(a.net.state_dict().items(), b.net.state_dict().items(),
                                strict=True):
        assert k == k2 and v.equal(v2)
    with pytest.raises(ConfigError, match="not an empty folder"):
        export_model(uncond_run.path, out)
