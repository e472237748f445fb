"""Quantized folders: written with a manifest, loaded back to the same network, labelled."""

from __future__ import annotations

import numpy as np
import pytest

from difflab.config import ConfigError
from difflab.quant.commands import quantize_checkpoint
from difflab.runtime import SampleConfig, load, quantize_pipeline, read_manifest
from difflab.runtime import artefacts as art
from difflab.runtime.quantized import save_quantized_pipeline

FAST = SampleConfig(steps=3, cfg=2.0, precision="fp32")


@pytest.mark.parametrize("recipe, execution", [("w4a8", "simulated"), ("w8a8_real", "real")])
def test_quantized_folder_loads_back_to_the_quantized_network(recipe, execution, digits_run,
                                                              tmp_path):
    report = quantize_checkpoint(digits_run.path, tmp_path / "q", recipe=recipe, calib_steps=2)
    assert report["execution"] == execution
    manifest = read_manifest(tmp_path / "q")
    base = art.resolve(digits_run.path)
    assert manifest.kind == "quantized"
    assert manifest.base == {"path": str(base),
                             "sha256": art.sha256_file(base / "model.safetensors")}
    assert manifest.config["quant"]["execution"] == execution
    assert manifest.config["model"] == read_manifest(base).config["model"]

    loaded = load(tmp_path / "q")
    assert loaded.kind == "quantized"
    said = {"simulated": "simulated (float emulation", "real": "real integer kernels"}
    assert said[execution] in loaded.describe()
    pipe = load(digits_run.path)  # the same recipe and calibration, in memory
    quantize_pipeline(pipe, recipe, calib_steps=2)
    prompts, seeds = ["0", "6"], [1, 2]
    np.testing.assert_array_equal(loaded.generate(prompts, seeds, FAST),
                                  pipe.generate(prompts, seeds, FAST))
    assert not np.array_equal(loaded.generate(prompts, seeds, FAST),
                              load(digits_run.path).generate(prompts, seeds, FAST))


def test_only_a_float_checkpoint_is_quantized_and_damage_is_caught(digits_run, tmp_path):
    quantize_checkpoint(digits_run.path, tmp_path / "q", recipe="w8a8", calib_steps=2)
    q = load(tmp_path / "q")
    handle = quantize_pipeline(load(digits_run.path), "w8a8", calib_steps=2)
    with pytest.raises(ConfigError, match="quantize a float checkpoint"):
        save_quantized_pipeline(q, handle, tmp_path / "qq")
    with pytest.raises(ConfigError, match="unknown QuantConfig fields"):
        quantize_pipeline(load(digits_run.path), "w8a8", overrides={"bits": 3})
    (tmp_path / "q" / "quant.json").write_text("{}")
    with pytest.raises(ConfigError, match="quant.json does not match"):
        load(tmp_path / "q")
