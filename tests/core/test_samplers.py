"""Samplers on Gaussian / Gaussian-mixture data whose exact denoiser is known in closed form."""

import numpy as np
import pytest
import torch

from difflab.core.analytic import (
    ExactDenoiser,
    ExactFlowDenoiser,
    GaussianMixture,
    gaussian_ode_solution,
)
from difflab.core.context import current_context
from difflab.core.samplers import (
    SAMPLERS,
    BatchNoise,
    count_nfe,
    get_sampler,
    initial_noise,
    invert_ddim,
    sample_lms,
)
from difflab.core.schedules import get_sigmas_flow, get_sigmas_karras
from difflab.registry import UnknownNameError

GAUSS = GaussianMixture(torch.full((1, 4), 0.5, dtype=torch.float64), torch.tensor([0.7]))
MIX = GaussianMixture(
    torch.tensor([[1.0, 0.5, 0, 0], [-1.0, 0, 0.5, 0.2], [0.3, -1, 0, 1]], dtype=torch.float64),
    torch.tensor([0.3, 0.5, 0.4]),
    torch.tensor([0.5, 0.3, 0.2]),
)
STEPS = [16, 32, 64, 128]
# the order each sampler is stated to reach; LMS's Euler start-up caps its global order at 2
ORDERS = {"euler": 1, "ddim": 1, "heun": 2, "dpmpp_2m": 2, "lms": 2}


def _geometry(flow: bool, data: GaussianMixture, n: int):
    """(model, sigmas, x_start): flow runs t = 1 -> 0; VE runs Karras sigmas 10 -> 0.05, where the
    exact ODE map is compared (the last jump to 0 does not shrink with n in VE-form)."""
    z = torch.randn(16, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    if flow:
        return ExactFlowDenoiser(data), get_sigmas_flow(n), z
    return ExactDenoiser(data), get_sigmas_karras(n + 1, 0.05, 10.0)[:-1], 10.0 * z


def _reference(flow: bool, data: GaussianMixture, n: int) -> torch.Tensor:
    model, sigmas, x = _geometry(flow, data, n)
    if data is GAUSS:  # closed-form probability-flow ODE solution
        ones = torch.ones(x.shape[0], dtype=torch.float64)
        s0, s1 = sigmas[0] * ones, sigmas[-1] * ones
        return gaussian_ode_solution(data, x, model.alpha(s0), s0, model.alpha(s1), s1)
    model, fine, x = _geometry(flow, data, 512)  # high-order fine solve (same endpoints)
    return sample_lms(model, x, fine)


def _steps(name: str, flow: bool) -> list[int]:
    # DPM-Solver++ on uniform-t flow steps: the log-SNR steps next to t = 1 and t = 0 do not
    # shrink with n, which costs a log factor (error ~ log(n) / n^2), so order 2 shows later
    return [64, 128, 256] if flow and name == "dpmpp_2m" else STEPS


def _slope(name: str, flow: bool, data: GaussianMixture) -> float:
    steps = _steps(name, flow)
    ref = _reference(flow, data, steps[0])
    errors = []
    for n in steps:
        model, sigmas, x = _geometry(flow, data, n)
        errors.append((get_sampler(name)(model, x, sigmas) - ref).abs().max().item())
    return -np.polyfit(np.log(steps), np.log(errors), 1)[0]


@pytest.mark.parametrize("flow", [False, True], ids=["ve", "flow"])
@pytest.mark.parametrize("name", list(ORDERS))
def test_convergence_order_gaussian(name: str, flow: bool) -> None:
    slope = _slope(name, flow, GAUSS)
    slack = 1.6 if name == "lms" else 0.6  # LMS's interior order is 4
    assert ORDERS[name] - 0.35 < slope < ORDERS[name] + slack, slope


@pytest.mark.parametrize("flow", [False, True], ids=["ve", "flow"])
@pytest.mark.parametrize("name", ["euler", "heun", "dpmpp_2m"])
def test_convergence_order_mixture(name: str, flow: bool) -> None:
    slope = _slope(name, flow, MIX)
    assert ORDERS[name] - 0.35 < slope < ORDERS[name] + 0.6, slope


def test_euler_and_ddim_coincide_in_both_geometries() -> None:
    # both geometries are affine in sigma, where DDIM's update is the Euler step
    for flow in (False, True):
        model, sigmas, x = _geometry(flow, MIX, 10)
        torch.testing.assert_close(get_sampler("euler")(model, x, sigmas),
                                   get_sampler("ddim")(model, x, sigmas))


@pytest.mark.parametrize("flow", [False, True], ids=["ve", "flow"])
@pytest.mark.parametrize("name", ["euler_ancestral", "dpmpp_2m_sde", "ddim"])
def test_stochastic_samplers_reach_data_mean_and_variance(name: str, flow: bool) -> None:
    data = GaussianMixture(torch.tensor([[0.5]], dtype=torch.float64), torch.tensor([0.7]))
    n = 4000
    gen = torch.Generator().manual_seed(1)
    if flow:
        model, sigmas = ExactFlowDenoiser(data), get_sigmas_flow(100)
        x = torch.randn(n, 1, generator=gen, dtype=torch.float64)
    else:
        model, sigmas = ExactDenoiser(data), get_sigmas_karras(100, 0.01, 20.0)
        x = 20.0 * torch.randn(n, 1, generator=gen, dtype=torch.float64)
    hp = {"eta": 1.0} if name == "ddim" else {}
    def noise(like: torch.Tensor) -> torch.Tensor:  # one generator: fast for 4000 samples
        return torch.randn(like.shape, generator=gen, dtype=like.dtype)

    out = get_sampler(name)(model, x, sigmas, noise=noise, **hp)
    # 4000 samples: standard errors are 0.011 (mean) and 0.008 (std)
    assert abs(out.mean().item() - 0.5) < 0.05
    assert abs(out.std().item() - 0.7) < 0.05
    # and the noise really is used: another set of seeds gives other samples
    other = get_sampler(name)(model, x, sigmas, noise=noise, **hp)
    assert (other - out).abs().max() > 0.1


@pytest.mark.parametrize("flow", [False, True], ids=["ve", "flow"])
def test_ddim_inversion_round_trips(flow: bool) -> None:
    model = (ExactFlowDenoiser if flow else ExactDenoiser)(MIX)
    sigmas = get_sigmas_flow(100) if flow else get_sigmas_karras(100, 0.01, 20.0)
    x0 = MIX.sample(8, torch.Generator().manual_seed(3))
    noise = invert_ddim(model, x0, sigmas)
    back = get_sampler("ddim")(model, noise, sigmas)
    assert ((back - x0).norm() / x0.norm()).item() < 1e-3
    # the encoding is noise-like: its spread is that of noise at the top of the schedule
    assert noise.std() > 0.5 * sigmas[0]


def test_per_sample_seeds_do_not_depend_on_the_batch() -> None:
    model, sigmas = ExactDenoiser(MIX), get_sigmas_karras(12, 0.02, 20.0)
    for name in ["euler_ancestral", "dpmpp_2m_sde"]:
        x = initial_noise((4,), [7, 8, 9], dtype=torch.float64) * 20.0
        batch = get_sampler(name)(model, x, sigmas, noise=BatchNoise([7, 8, 9]))
        x1 = initial_noise((4,), [8], dtype=torch.float64) * 20.0
        alone = get_sampler(name)(model, x1, sigmas, noise=BatchNoise([8]))
        torch.testing.assert_close(batch[1:2], alone)
        assert not torch.allclose(batch[0], batch[1])


@pytest.mark.parametrize("name", SAMPLERS.names())
def test_nfe_bookkeeping_callback_and_step_context(name: str) -> None:
    seen = []

    class Probe(ExactDenoiser):
        def forward(self, x, sigma, **cond):
            seen.append(current_context())
            return super().forward(x, sigma, **cond)

    model, steps = Probe(GAUSS), 9
    sigmas = get_sigmas_karras(steps, 0.02, 20.0)
    x = initial_noise((4,), [0, 1], dtype=torch.float64) * 20.0
    events = []
    get_sampler(name)(model, x, sigmas, callback=events.append, noise=BatchNoise([0, 1]))
    assert model.calls == count_nfe(name, steps)
    assert [e["i"] for e in events] == list(range(steps))
    assert {"i", "x", "sigma", "sigma_next", "denoised"} <= set(events[0])
    assert [c.step for c in seen] == sorted(c.step for c in seen)
    assert seen[0].sigma == pytest.approx(20.0) and seen[0].num_steps == steps
    assert all(c.branch == "cond" for c in seen) and current_context() is None


def test_unknown_sampler_lists_valid_names() -> None:
    with pytest.raises(UnknownNameError, match="valid: .*dpmpp_2m.*euler"):
        get_sampler("eulr")
    with pytest.raises(UnknownNameError, match="heun"):
        count_nfe("nope", 10)


def test_batch_noise_rejects_wrong_batch() -> None:
    with pytest.raises(ValueError, match="3 seeds"):
        BatchNoise([1, 2, 3])(torch.zeros(2, 4))
