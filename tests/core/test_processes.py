"""Wrappers agree on the exact denoiser; each process's target at its optimum gives it back."""

import math

import pytest
import torch
from torch import nn

from difflab.config import ConfigError
from difflab.core.analytic import GaussianMixture
from difflab.core.denoisers import EDMDenoiser, EpsDenoiser, FlowDenoiser, VDenoiser, X0Denoiser
from difflab.core.processes import (
    PROCESSES,
    EDMProcess,
    FlowProcess,
    VPProcess,
    process_from_config,
)
from difflab.registry import UnknownNameError

MIX = GaussianMixture(torch.tensor([[1.0, -0.5, 0.2], [-0.8, 0.4, 0.0]], dtype=torch.float64),
                      torch.tensor([0.3, 0.6]))
SIGMAS = torch.tensor([0.02, 0.3, 1.0, 4.0, 30.0], dtype=torch.float64)
X = torch.randn(5, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2


def _exact(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    return MIX.posterior_mean(x, sigma, torch.ones_like(sigma))


class PredictionNet(nn.Module):
    """The exact denoiser rewritten as one prediction type; t carries sigma (identity map)."""

    def __init__(self, convert) -> None:
        super().__init__()
        self.convert = convert

    def forward(self, x_in: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        s = t[:, None]
        return self.convert(x_in, s)


def _ve_nets():
    """Closed-form conversions of D into each prediction type, from the papers' definitions."""
    def eps(x_in, s):  # input sqrt(abar) x; eps = (x - D) / sigma
        x = x_in * (1 + s**2).sqrt()
        return (x - _exact(x, s[:, 0])) / s

    def v(x_in, s):  # v = sqrt(abar) eps - sqrt(1 - abar) x0
        x = x_in * (1 + s**2).sqrt()
        e = (x - _exact(x, s[:, 0])) / s
        return (e - s * _exact(x, s[:, 0])) / (1 + s**2).sqrt()

    def x0(x_in, s):
        return _exact(x_in * (1 + s**2).sqrt(), s[:, 0])

    def edm(x_in, s, sd=0.5):  # F = (D - c_skip x) / c_out, EDM Table 1
        x = x_in * (s**2 + sd**2).sqrt()
        c_skip, c_out = sd**2 / (s**2 + sd**2), s * sd / (s**2 + sd**2).sqrt()
        return (_exact(x, s[:, 0]) - c_skip * x) / c_out

    ident = lambda s: s  # noqa: E731
    return [EpsDenoiser(PredictionNet(eps), ident), VDenoiser(PredictionNet(v), ident),
            X0Denoiser(PredictionNet(x0), ident), EDMDenoiser(PredictionNet(edm), ident, 0.5)]


def test_parameterisation_wrappers_agree_on_the_exact_denoiser() -> None:
    outs = [w(X, SIGMAS) for w in _ve_nets()]
    for out in outs:
        torch.testing.assert_close(out, _exact(X, SIGMAS))


def test_flow_wrapper_agrees_with_ve_form_by_change_of_variables() -> None:
    t = torch.tensor([0.05, 0.3, 0.5, 0.8, 0.97], dtype=torch.float64)

    def velocity(x, s):  # v = noise - x0 = (x - D) / t in the flow geometry
        d = MIX.posterior_mean(x, s[:, 0], 1 - s[:, 0])
        return (x - d) / s

    flow = FlowDenoiser(PredictionNet(velocity), lambda s: s)
    # x_flow = (1 - t) x_ve with sigma_ve = t / (1 - t): the same posterior mean
    x_flow = X * (1 - t[:, None])
    torch.testing.assert_close(flow(x_flow, t), _exact(X, t / (1 - t)))
    assert torch.equal(flow.alpha(t), 1 - t)


PROCESS_CASES = [
    *(VPProcess(prediction=p, schedule=s, discrete=d)
      for p in ("eps", "v", "x0") for s in ("linear", "cosine") for d in (True, False)),
    FlowProcess(), FlowProcess(logit_mean=0.5, shift=3.0), EDMProcess(),
]


@pytest.mark.parametrize("process", PROCESS_CASES, ids=repr)
def test_target_at_the_optimum_gives_back_the_exact_denoiser(process) -> None:
    alpha_of = process.denoiser(nn.Identity()).alpha

    def optimal_net(x_in: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        # E[target | x_in]: target is linear in (x0, noise), so plug in their posterior means
        sigma = process.sigma_from_t(t)
        c_in = process.net_input(torch.zeros_like(x_in), torch.ones_like(x_in), sigma)[0]
        x = x_in * sigma[:, None] / c_in  # undo the input scaling: c_in * sigma / sigma
        alpha = alpha_of(sigma)
        d = MIX.posterior_mean(x, sigma, alpha)
        return process.target(d, (x - alpha[:, None] * d) / sigma[:, None], sigma)

    gen = torch.Generator().manual_seed(1)
    sigma = process.sample_sigma(6, generator=gen).double().clamp(1e-3, 1e3)
    if isinstance(process, FlowProcess):
        sigma = sigma.clamp(max=0.999)
    x0, noise = MIX.sample(6, gen), torch.randn(6, 3, generator=gen, dtype=torch.float64)
    alpha = alpha_of(sigma)[:, None]
    x = alpha * x0 + sigma[:, None] * noise
    model = process.denoiser(PredictionNet(lambda x_in, s: optimal_net(x_in, s[:, 0])))
    expected = MIX.posterior_mean(x, sigma, alpha[:, 0])
    torch.testing.assert_close(model(x, sigma), expected, rtol=1e-6, atol=1e-6)
    # and the network input is what the wrapper feeds the network at that sigma
    x_in, t = process.net_input(x0, noise, sigma)
    torch.testing.assert_close(process.sigma_from_t(t), sigma, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("process", PROCESS_CASES, ids=repr)
def test_timesteps_are_in_roughly_0_to_1000(process) -> None:
    sigma = process.default_schedule(20)[:-1]
    t = process.sigma_to_t(sigma)
    assert t.min() >= -1 and t.max() <= 1001
    assert (t[1:] < t[:-1]).all()  # decreasing sigma -> decreasing t


def test_loss_weights() -> None:
    sigma = torch.tensor([0.05, 0.5, 2.0, 20.0])
    assert torch.equal(VPProcess().loss_weight(sigma), torch.ones(4))
    # min-SNR-gamma for eps-prediction is min(SNR, gamma) / SNR with SNR = 1 / sigma^2
    snr = sigma.pow(-2)
    torch.testing.assert_close(VPProcess(weighting="min_snr").loss_weight(sigma),
                               snr.clamp(max=5.0) / snr)
    torch.testing.assert_close(VPProcess(prediction="v", weighting="min_snr").loss_weight(sigma),
                               snr.clamp(max=5.0) / (snr + 1))
    # EDM's lambda(sigma) on the denoiser loss is exactly 1 on the F-target loss
    torch.testing.assert_close(EDMProcess().loss_weight(sigma), torch.ones(4))
    t = torch.tensor([0.1, 0.5, 0.9])
    flow_snr = ((1 - t) / t) ** 2
    torch.testing.assert_close(FlowProcess(weighting="min_snr").loss_weight(t),
                               flow_snr.clamp(max=5.0) * t**2)


def test_training_densities() -> None:
    gen = torch.Generator().manual_seed(0)
    ln_sigma = EDMProcess(p_mean=-1.2, p_std=1.2).sample_sigma(20000, gen).log()
    assert abs(ln_sigma.mean() + 1.2) < 0.05 and abs(ln_sigma.std() - 1.2) < 0.05
    t = FlowProcess(logit_mean=0.0, logit_std=1.0).sample_sigma(20000, gen)
    assert 0 < t.min() and t.max() < 1 and abs(t.median() - 0.5) < 0.02
    shifted = FlowProcess(shift=3.0).sample_sigma(20000, gen)
    assert abs(shifted.median() - 0.75) < 0.02  # the shift maps the median 1/2 to 3/4
    vp = VPProcess()
    idx = vp.sigma_to_t(vp.sample_sigma(20000, gen))
    assert abs(idx.mean() - 499.5) < 10 and torch.allclose(idx, idx.round(), atol=1e-3)


@pytest.mark.parametrize("process", PROCESS_CASES, ids=repr)
def test_stratified_noise_levels_take_one_from_each_stratum_of_the_training_density(process):
    """stratified_sigma(n): the k-th smallest lies in [sigma_at(k/n), sigma_at((k+1)/n)], and
    sigma_at maps uniform quantiles onto sample_sigma's density."""
    gen = torch.Generator().manual_seed(0)
    n = 16
    sigma = process.stratified_sigma(n, gen).double().sort().values
    edges = process.sigma_at(torch.arange(n + 1, dtype=torch.float64) / n).double()
    lo, hi = torch.minimum(edges[:-1], edges[1:]), torch.maximum(edges[:-1], edges[1:])
    assert ((sigma >= lo - 1e-6) & (sigma <= hi + 1e-6)).all()
    q = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    drawn = process.sample_sigma(40000, gen).double().log().quantile(q)
    torch.testing.assert_close(process.sigma_at(q).double().log(), drawn, atol=0.05, rtol=0)


def test_config_round_trip_and_errors() -> None:
    for process in PROCESS_CASES:
        assert process_from_config(process.to_config()) == process
    assert math.isclose(process_from_config({"kind": "flow", "shift": 3}).shift, 3.0)
    with pytest.raises(UnknownNameError, match="edm, flow, vp"):
        process_from_config({"kind": "ddpm"})
    with pytest.raises(ConfigError, match="eps, v, x0"):
        VPProcess(prediction="score")
    with pytest.raises(ConfigError, match="uniform, min_snr, edm"):
        FlowProcess(weighting="p2")
    with pytest.raises(ConfigError, match="unknown key"):
        process_from_config({"kind": "vp", "shift": 3.0})
    assert PROCESSES.names() == ["edm", "flow", "vp"]


def test_vp_beta_tables() -> None:
    """Explicit betas give DDPM's cumulative product; scaled_linear is linear in sqrt(beta)."""
    assert torch.equal(VPProcess(beta_start=1e-4, beta_end=0.02).train_sigmas(),
                       VPProcess().train_sigmas())  # the default is DDPM's (1e-4, 0.02)
    sd = VPProcess(schedule="scaled_linear")
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    abar = torch.cumprod(1 - betas, 0)
    torch.testing.assert_close(sd.train_sigmas(), ((1 - abar) / abar).sqrt())
    assert process_from_config(sd.to_config()) == sd
    assert float(sd.sigma_to_t(sd.train_sigmas()[[0, 500, 999]]).round().sum()) == 1499
    with pytest.raises(ConfigError, match="discrete-time table"):
        VPProcess(schedule="scaled_linear", discrete=False)
    with pytest.raises(ConfigError, match="schedule='cosine'"):
        VPProcess(schedule="cosine", beta_start=1e-4, beta_end=0.02)
    with pytest.raises(ConfigError, match="0 < beta_start <= beta_end < 1"):
        VPProcess(beta_start=0.02, beta_end=1e-4)
