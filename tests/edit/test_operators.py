"""Measurement operators: adjoints pass the dot-product test, pseudo-inverses are pseudo-inverses,
DDNM's result reproduces the measurement, RePaint keeps the known pixels, DPS without its step
is plain DDIM, and the classical baselines do what they claim."""

import pytest
import torch

from difflab.config import ConfigError
from difflab.core.samplers import BatchNoise, sample_ddim
from difflab.edit.operators import Inpaint, LinearOperator, make_operator, random_pixel_mask
from difflab.edit.restore import (
    BASELINES,
    baseline_nearest,
    baseline_tv,
    restore,
    restore_ddnm,
    restore_dps,
    restore_repaint,
    total_variation,
)

SHAPE = (3, 16, 16)
SPECS = ["inpaint:0.6", "sr2", "sr4", "deblur:0.8", "cs:0.25"]  # deblur: every K > cutoff


def _rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("spec", SPECS)
def test_adjoint_passes_the_dot_product_test(spec):
    op = make_operator(spec, SHAPE, seed=3)
    x = _rand(2, *SHAPE).float()
    y = _rand(*op.A(x).shape, seed=1).float()
    lhs = (op.A(x).double() * y.double()).sum()
    rhs = (x.double() * op.A_T(y).double()).sum()
    assert abs(lhs - rhs) <= 1e-5 * (lhs.abs() + rhs.abs())


@pytest.mark.parametrize("spec", SPECS)
def test_pinv_is_a_pseudo_inverse(spec):
    op = make_operator(spec, SHAPE)
    x = _rand(2, *SHAPE).float()
    y = op.A(x)
    torch.testing.assert_close(op.A(op.pinv(y)), y, atol=2e-5, rtol=1e-4)  # A A⁺ A = A
    p = op.pinv(op.A(x))  # A⁺ A is a projection: applying it twice changes nothing
    torch.testing.assert_close(op.pinv(op.A(p)), p, atol=2e-5, rtol=1e-4)
    # the null-space step keeps the measurement whatever x was
    torch.testing.assert_close(op.A(op.project(_rand(2, *SHAPE, seed=5).float(), y)), y,
                               atol=2e-5, rtol=1e-4)


def test_bad_problem_specs_are_one_line_errors():
    with pytest.raises(ConfigError, match="valid: cs, deblur, inpaint, sr"):
        make_operator("blurr", SHAPE)
    with pytest.raises(ConfigError, match="sr factor 3 must be >= 2 and divide"):
        make_operator("sr3", SHAPE)
    with pytest.raises(ConfigError, match="missing fraction must be in"):
        make_operator("inpaint:1.5", SHAPE)
    with pytest.raises(ConfigError, match="only sr takes a factor"):
        make_operator("cs4", SHAPE)
    with pytest.raises(ConfigError, match="does not match the 16x16 image"):
        Inpaint(SHAPE, torch.ones(8, 8, dtype=torch.bool))
    op = make_operator("sr4", SHAPE)
    with pytest.raises(ConfigError, match="measures \\(3, 4, 4\\)"):
        op.check_measurement(torch.zeros(1, 3, 8, 8))


@pytest.fixture
def denoiser(tiny_pipeline):
    cond = tiny_pipeline.condition([""])
    return tiny_pipeline.process.denoiser(tiny_pipeline.net), cond


@pytest.mark.parametrize("spec", SPECS)
def test_ddnm_satisfies_the_measurement_without_noise(denoiser, spec):
    model, cond = denoiser
    op = make_operator(spec, SHAPE, seed=1)
    x = _rand(1, *SHAPE).float().clamp(-1, 1)
    y = op.A(x)
    sigmas = torch.linspace(1, 0, 5)
    with torch.no_grad():
        out = restore_ddnm(model, y, op, sigmas, extra_args=cond, noise=BatchNoise([0]))
    torch.testing.assert_close(op.A(out), y, atol=1e-5, rtol=1e-5)


def test_repaint_keeps_the_known_pixels_and_resampling_changes_the_rest(denoiser):
    model, cond = denoiser
    op = Inpaint(SHAPE, random_pixel_mask(SHAPE, 0.5, seed=2))
    y = op.A(_rand(1, *SHAPE).float().clamp(-1, 1))
    sigmas = torch.linspace(1, 0, 4)
    with torch.no_grad():
        once = restore_repaint(model, y, op, sigmas, extra_args=cond, noise=BatchNoise([0]),
                               resample=1)
        twice = restore_repaint(model, y, op, sigmas, extra_args=cond, noise=BatchNoise([0]),
                                resample=2)
    known = op.mask.expand_as(y)
    assert torch.equal(once[known], y[known])
    assert not torch.allclose(once, twice)
    with pytest.raises(ConfigError, match="repaint inpaints"):
        restore_repaint(model, y, make_operator("sr2", SHAPE), sigmas)


def test_dps_without_its_step_is_ddim_and_its_step_lowers_the_residual(tiny_pipeline):
    model = tiny_pipeline.process.denoiser(tiny_pipeline.net)
    cond = tiny_pipeline.condition(["", ""])
    op = make_operator("sr2", SHAPE)
    y = op.A(_rand(2, *SHAPE).float().clamp(-1, 1))
    sigmas = torch.linspace(1, 0, 6)
    with torch.no_grad():
        plain = restore_dps(model, y, op, sigmas, extra_args=cond, noise=BatchNoise([0, 1]),
                            zeta=0.0)
        noise = BatchNoise([0, 1])  # DPS draws its start first, then one draw per step
        start = sigmas[0] * noise(torch.zeros(2, *SHAPE))
        ddim = sample_ddim(model, start, sigmas, extra_args=cond, noise=noise, eta=1.0)
        guided = restore_dps(model, y, op, sigmas, extra_args=cond, noise=BatchNoise([0, 1]),
                             zeta=0.3)
    torch.testing.assert_close(plain, ddim, atol=1e-5, rtol=1e-5)
    residual = [(op.A(z) - y).flatten(1).norm(dim=1) for z in (plain, guided)]
    assert bool((residual[1] < residual[0]).all())


def test_baselines():
    x = _rand(1, *SHAPE).float().clamp(-1, 1)
    op = Inpaint(SHAPE, random_pixel_mask(SHAPE, 0.7, seed=1))
    filled = baseline_nearest(op, op.A(x))
    assert torch.equal(filled[..., op.mask], x[..., op.mask])  # known pixels untouched
    assert not (filled[..., ~op.mask] == 0).all()
    flat = torch.full((1, *SHAPE), 0.25)
    sr = make_operator("sr4", SHAPE)
    torch.testing.assert_close(restore("bicubic", None, sr.A(flat), sr, None), flat)
    blocks = torch.full((1, *SHAPE), -0.8)  # piecewise constant: what TV recovery favours
    blocks[..., 3:9, 4:12] = 0.6
    cs = make_operator("cs:0.3", SHAPE)
    y = cs.A(blocks)
    zero = restore("zero-fill", None, y, cs, None)
    tv = baseline_tv(cs, y, weight=0.01, iters=100)
    objective = [0.5 * (cs.A(z) - y).pow(2).sum() + 0.01 * total_variation(z).sum()
                 for z in (zero, tv)]
    assert objective[1] < objective[0]
    assert (tv - blocks).norm() < 0.5 * (zero - blocks).norm()
    with pytest.raises(ConfigError, match="bicubic upsamples; it cannot solve"):
        restore("bicubic", None, y, cs, None)
    assert set(BASELINES.names()) == {"bicubic", "nearest", "tv", "wiener", "zero-fill"}


class Colorize(LinearOperator):
    """The docs' example of a new problem (docs/editing.md): grey = mean of the channels."""

    singular = 3 ** -0.5

    def A(self, x):
        return x.mean(1, keepdim=True)

    def A_T(self, y):
        return y.expand(-1, 3, -1, -1) / 3

    def pinv(self, y):
        return y.expand(-1, 3, -1, -1)


def test_a_new_problem_is_one_small_class(denoiser):
    op = Colorize(SHAPE)
    x = _rand(1, *SHAPE).float()
    y = _rand(1, 1, 16, 16, seed=1).float()
    torch.testing.assert_close((op.A(x) * y).sum(), (x * op.A_T(y)).sum(), atol=1e-5, rtol=1e-5)
    model, cond = denoiser
    with torch.no_grad():
        out = restore("ddnm", model, op.A(x), op, torch.linspace(1, 0, 4), extra_args=cond)
    torch.testing.assert_close(op.A(out), op.A(x), atol=1e-5, rtol=1e-5)
