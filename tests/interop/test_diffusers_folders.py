"""A local diffusers pipeline folder loads as a difflab denoiser equal to the in-memory one."""

import json

import pytest
import torch

pytest.importorskip("diffusers", reason="diffusers is an optional extra: difflab[diffusers]")

from diffusers import DPMSolverMultistepScheduler  # noqa: E402

from difflab.config import ConfigError, MissingFileError  # noqa: E402
from difflab.interop import (  # noqa: E402
    diffusers_denoiser,
    load_diffusers,
    tiny_pixart,
    vp_sigmas,
)


def _save_pipeline(folder, net, scheduler, pipeline="PixArtAlphaPipeline"):
    net.model.save_pretrained(folder / "transformer")
    scheduler.save_pretrained(folder / "scheduler")
    index = {"_class_name": pipeline, "transformer": ["diffusers", type(net.model).__name__],
             "scheduler": ["diffusers", type(scheduler).__name__]}
    (folder / "model_index.json").write_text(json.dumps(index))


def test_pipeline_folder_loads_as_the_same_denoiser(tmp_path):
    net = tiny_pixart(seed=4)
    scheduler = DPMSolverMultistepScheduler(beta_schedule="scaled_linear")
    _save_pipeline(tmp_path, net, scheduler)
    loaded = load_diffusers(tmp_path)
    assert torch.equal(loaded.sigmas(5), vp_sigmas(scheduler, 5))
    x, sigma = torch.randn(2, 4, 8, 8), torch.tensor([3.0, 0.5])
    context = torch.randn(2, 5, 16)
    with torch.no_grad():
        expected = diffusers_denoiser(net, scheduler)(x, sigma, context=context)
        assert torch.equal(loaded.denoiser(x, sigma, context=context), expected)


def test_bad_folders_raise_clear_errors(tmp_path):
    with pytest.raises(MissingFileError, match="model_index.json not found"):
        load_diffusers(tmp_path)
    (tmp_path / "model_index.json").write_text(json.dumps(
        {"transformer": ["diffusers", "FluxTransformer2DModel"]}))
    with pytest.raises(ConfigError, match="'FluxTransformer2DModel' is not supported; valid"):
        load_diffusers(tmp_path)
