"""Inversions: negative-prompt inversion decodes like the conditional model, fixed-point DDIM
inversion is exact, and null-text optimisation improves on the null it starts from."""

import pytest
import torch

from difflab.config import ConfigError
from difflab.edit.inversion import invert, reconstruct


@pytest.fixture
def setup(tiny_pipeline):
    pipe = tiny_pipeline
    x0 = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    cond = pipe.condition(["a red circle", "a blue square"])
    null = pipe.conditioner.null("", 2, pipe.device)
    model = pipe.process.denoiser(pipe.net)
    return model, x0, torch.linspace(1, 0, 5), cond, null


def _err(model, inversion, x0):
    with torch.no_grad():
        return (reconstruct(model, inversion) - x0).abs().max()


def test_negative_prompt_inversion_decodes_like_guidance_one(setup):
    model, x0, sigmas, cond, null = setup
    with torch.no_grad():
        guided = invert("negative-prompt", model, x0, sigmas, cond, 3.0, null)
        plain = invert("ddim", model, x0, sigmas, cond, 1.0, None)
    assert torch.equal(guided.noise, plain.noise)
    with torch.no_grad():
        torch.testing.assert_close(reconstruct(model, guided), reconstruct(model, plain),
                                   atol=1e-5, rtol=1e-5)


def test_fixed_point_ddim_inversion_is_exact_under_guidance(setup):
    model, x0, sigmas, cond, null = setup
    with torch.no_grad():
        classic = invert("ddim", model, x0, sigmas, cond, 3.0, null)
        exact = invert("ddim", model, x0, sigmas, cond, 3.0, null, fixed_point_iters=8)
    assert _err(model, exact, x0) < 1e-3 < _err(model, classic, x0)


def test_null_text_improves_on_the_null_it_starts_from(setup):
    model, x0, sigmas, cond, null = setup
    start = invert("null-text", model, x0, sigmas, cond, 3.0, null, inner_steps=0)
    tuned = invert("null-text", model, x0, sigmas, cond, 3.0, null, inner_steps=10, lr=0.1)
    assert len(tuned.unconds) == len(sigmas) - 1
    assert _err(model, tuned, x0) < 0.5 * _err(model, start, x0)
    # an image's null states depend on that image alone (up to the rounding of batched
    # arithmetic, which Adam's normalised steps amplify where gradients vanish)
    one = invert("null-text", model, x0[:1], sigmas, {k: v[:1] for k, v in cond.items()}, 3.0,
                 {k: v[:1] for k, v in null.items()}, inner_steps=10, lr=0.1)
    with torch.no_grad():
        torch.testing.assert_close(reconstruct(model, one), reconstruct(model, tuned)[:1],
                                   atol=1e-3, rtol=0)


def test_bad_inversion_options_are_named(setup):
    model, x0, sigmas, cond, null = setup
    with pytest.raises(ConfigError, match="inversion 'ddim' has no option 'lr'; valid: "
                                          "fixed_point_iters"):
        invert("ddim", model, x0, sigmas, cond, 3.0, null, lr=0.1)
    with pytest.raises(ConfigError, match="unknown inversion method 'edict'"):
        invert("edict", model, x0, sigmas, cond, 3.0, null)
