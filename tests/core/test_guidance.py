"""Classifier-free guidance, composable guidance, guidance interval and rescale."""

import pytest
import torch

from difflab.config import ConfigError
from difflab.core.context import StepContext, current_context, step_context
from difflab.core.denoisers import Denoiser
from difflab.core.guidance import cfg, composable
from difflab.core.samplers import get_sampler
from difflab.core.schedules import get_sigmas_karras


class CondGaussian(Denoiser):
    """Exact denoiser of N(y + context.mean(), 0.5^2) per sample; records each call."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[int, str | None]] = []

    def forward(self, x, sigma, y, context=None, context_mask=None):
        ctx = current_context()
        self.calls.append((x.shape[0], ctx.branch if ctx else None))
        mean = y.to(x.dtype)[:, None]
        if context is not None:  # average over the real tokens only
            m = context_mask[..., None].to(x.dtype)
            mean = mean + ((context * m).sum((1, 2)) / m.sum((1, 2)))[:, None]
        s2 = 0.25
        return mean + s2 / (s2 + sigma[:, None] ** 2) * (x - mean)


X = torch.randn(3, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
SIGMA = torch.full((3,), 1.5, dtype=torch.float64)
COND = {"y": torch.tensor([1, 2, 3])}
UNCOND = {"y": torch.zeros(3, dtype=torch.long)}


def test_scale_one_is_the_conditional_model() -> None:
    model = CondGaussian()
    torch.testing.assert_close(cfg(model, 1.0, UNCOND)(X, SIGMA, **COND), model(X, SIGMA, **COND))
    assert model.calls[0] == (3, None)  # one conditional forward of batch B


def test_cfg_is_one_batched_forward_in_documented_order() -> None:
    model = CondGaussian()
    d_c, d_u = model(X, SIGMA, **COND), model(X, SIGMA, **UNCOND)
    with step_context(StepContext(0, 10, 1.5)):
        out = cfg(model, 4.0, UNCOND)(X, SIGMA, **COND)
    torch.testing.assert_close(out, d_u + 4.0 * (d_c - d_u))
    assert model.calls[-1] == (6, "all")  # rows [cond (B), uncond (B)]


def test_composable_with_one_condition_equals_cfg() -> None:
    model = CondGaussian()
    a = composable(model, [(COND, 3.0)], UNCOND)(X, SIGMA, **UNCOND)
    torch.testing.assert_close(a, cfg(model, 3.0, UNCOND)(X, SIGMA, **COND))


def test_composable_sums_weighted_conditions() -> None:
    model = CondGaussian()
    other = {"y": torch.tensor([-1, 0, 5])}
    d_u, d_1, d_2 = (model(X, SIGMA, **c) for c in (UNCOND, COND, other))
    out = composable(model, [(COND, 2.0), (other, -0.5)], UNCOND)(X, SIGMA, **UNCOND)
    torch.testing.assert_close(out, d_u + 2.0 * (d_1 - d_u) - 0.5 * (d_2 - d_u))
    assert model.calls[-1][0] == 9


def test_interval_outside_runs_the_conditional_only() -> None:
    model = CondGaussian()
    guided = cfg(model, 5.0, UNCOND, interval=(0.5, 1.0))
    with step_context(StepContext(3, 10, 1.5)):
        out = guided(X, SIGMA, **COND)
    torch.testing.assert_close(out, model(X, SIGMA, **COND))
    assert model.calls[0] == (3, "cond")
    inside = torch.full((3,), 0.7, dtype=torch.float64)
    d_c, d_u = model(X, inside, **COND), model(X, inside, **UNCOND)
    torch.testing.assert_close(guided(X, inside, **COND), d_u + 5.0 * (d_c - d_u))


def test_rescale_matches_the_conditional_std() -> None:
    model = CondGaussian()
    d_c = model(X, SIGMA, **COND)
    plain = cfg(model, 7.0, UNCOND)(X, SIGMA, **COND)
    full = cfg(model, 7.0, UNCOND, rescale=1.0)(X, SIGMA, **COND)
    half = cfg(model, 7.0, UNCOND, rescale=0.5)(X, SIGMA, **COND)
    torch.testing.assert_close(full.std(1), d_c.std(1))
    torch.testing.assert_close(half, 0.5 * full + 0.5 * plain)


def test_negative_prompt_contexts_of_different_length_are_padded() -> None:
    model = CondGaussian()
    gen = torch.Generator().manual_seed(2)
    cond = {"y": COND["y"], "context": torch.randn(3, 5, 2, generator=gen, dtype=torch.float64),
            "context_mask": torch.ones(3, 5, dtype=torch.bool)}
    neg = {"y": UNCOND["y"], "context": torch.randn(3, 2, 2, generator=gen, dtype=torch.float64)}
    neg_full = {**neg, "context_mask": torch.ones(3, 2, dtype=torch.bool)}
    d_c, d_u = model(X, SIGMA, **cond), model(X, SIGMA, **neg_full)
    torch.testing.assert_close(cfg(model, 2.0, neg)(X, SIGMA, **cond), d_u + 2.0 * (d_c - d_u))


def test_guided_model_runs_in_a_sampler_and_publishes_steps() -> None:
    model = CondGaussian()
    sigmas = get_sigmas_karras(5, 0.05, 10.0).double()
    get_sampler("dpmpp_2m")(cfg(model, 2.0, UNCOND), X * 10, sigmas, extra_args=COND)
    assert [b for _, b in model.calls] == ["all"] * 5
    assert current_context() is None


def test_bad_guidance_arguments_raise() -> None:
    model = CondGaussian()
    with pytest.raises(ConfigError, match="interval"):
        cfg(model, 2.0, UNCOND, interval=(2.0, 1.0))
    with pytest.raises(ConfigError, match="rescale"):
        cfg(model, 2.0, UNCOND, rescale=1.5)
    with pytest.raises(ValueError, match="different keys"):
        cfg(model, 2.0, {})(X, SIGMA, **COND)


def test_step_context_nests_and_validates() -> None:
    assert current_context() is None
    with step_context(StepContext(1, 4, 2.0)) as outer:
        with step_context(outer.with_branch("uncond")):
            assert current_context().branch == "uncond"
        assert current_context() == StepContext(1, 4, 2.0, "cond")
    assert current_context() is None
    with pytest.raises(ValueError, match="cond, uncond, all"):
        StepContext(0, 1, 1.0, "neg")
