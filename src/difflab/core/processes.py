"""Noise processes: training densities, network inputs, regression targets and loss weights.

The API the trainer calls (loss = loss_weight(sigma) * mean((net(x_in, t, **cond) - target)^2)):
`sample_sigma(n, generator)`, `net_input(x0, noise, sigma) -> (x_in, t)`, `target(x0, noise,
sigma)`, `loss_weight(sigma)`, `denoiser(net)` and `default_schedule(n)`; `sigma_at(u)` (the
training density's quantile function) and `stratified_sigma(n, generator)` serve stratified
batches (`difflab tune --stratified`). sigma is always the sampler's sigma (VE-form for VP and
EDM, sigma = t for flow; see `denoisers.py`). The timestep t that the network embeds is a float
in roughly [0, 1000] for every process:
VP discrete: the (fractional) training index in [0, N - 1]; VP continuous: 1000 * t;
flow: 1000 * t; EDM: 1000 * (ln sigma - ln sigma_min) / (ln sigma_max - ln sigma_min), an affine
map of EDM's c_noise = ln(sigma) / 4 that sends the sampling range to [0, 1000].
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from difflab.config import ConfigError, from_dict, to_dict
from difflab.core.denoisers import (
    EDMDenoiser,
    EpsDenoiser,
    FlowDenoiser,
    ScaledDenoiser,
    VDenoiser,
    X0Denoiser,
    append_dims,
)
from difflab.core.schedules import (
    flow_shift,
    get_sigmas_flow,
    get_sigmas_karras,
    get_sigmas_vp_uniform,
)
from difflab.registry import Registry

PROCESSES: Registry = Registry("process")
VP_WRAPPERS = {"eps": EpsDenoiser, "v": VDenoiser, "x0": X0Denoiser}
VP_SCHEDULES = ("linear", "cosine", "scaled_linear")
WEIGHTINGS = ("uniform", "min_snr", "edm")
COSINE_S = 0.008  # iDDPM's offset keeps beta_0 from being vanishingly small
LINEAR_BETA = (0.1, 20.0)  # continuous-time linear betas; N * (1e-4, 0.02) of discrete DDPM
SCALED_LINEAR_BETA = (0.00085, 0.012)  # Stable Diffusion's betas, linear in sqrt(beta)


def _choice(what: str, value: str, valid: tuple[str, ...] | list[str]) -> None:
    if value not in valid:
        raise ConfigError(f"unknown {what} {value!r}; valid: {', '.join(valid)}")


class _Process:
    """Shared methods; subclasses are frozen dataclasses with the fields below."""

    kind: ClassVar[str]
    weighting: str
    snr_gamma: float
    sigma_data: float = 0.5  # used by the "edm" weighting; a field only on EDMProcess

    def stratified_sigma(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Variational Diffusion Models (2021), its low-discrepancy sampler: n noise levels of
        the training density, one from each of n equal-probability strata, in random order (the
        same density as `sample_sigma`; a batch's loss varies less)."""
        u = (torch.randperm(n, generator=generator)
             + torch.rand(n, generator=generator, dtype=torch.float64)) / n
        return self.sigma_at(u)

    def _check_weighting(self) -> None:
        _choice("loss weighting", self.weighting, WEIGHTINGS)
        if self.snr_gamma <= 0:
            raise ConfigError(f"snr_gamma must be > 0, got {self.snr_gamma!r}")

    def loss_weight(self, sigma: Tensor) -> Tensor:
        """Per-sample weight (n,) on the raw-output loss; min-SNR and EDM weights are defined on
        the denoised (x0) loss ("Efficient Diffusion Training via Min-SNR Weighting", 2023;
        EDM, 2022) and carried over with c_out^2, since |D - x0|^2 = c_out^2 |out - target|^2."""
        if self.weighting == "uniform":
            return torch.ones_like(sigma)
        wrapper = self.denoiser(nn.Identity())  # type: ignore[attr-defined]
        c_out = wrapper.scalings(sigma)[1]
        sigma_ve = sigma / wrapper.alpha(sigma)  # noise-to-signal ratio, the VE sigma
        if self.weighting == "min_snr":
            return sigma_ve.pow(-2).clamp(max=self.snr_gamma) * c_out**2
        sd = self.sigma_data
        return (sigma_ve**2 + sd**2) / (sigma_ve * sd) ** 2 * c_out**2

    def to_config(self) -> dict[str, Any]:
        """A dict a checkpoint can store; `process_from_config` inverts it."""
        return {"kind": self.kind, **to_dict(self)}


@dataclass(frozen=True)
class VPProcess(_Process):
    """VP/DDPM with linear or cosine betas, discrete (N steps) or continuous time; eps-, v- or
    x0-prediction ("Denoising Diffusion Probabilistic Models", 2020; "Improved DDPM", 2021).
    Discrete time also takes Stable Diffusion's "scaled_linear" betas (linear in sqrt(beta);
    "High-Resolution Image Synthesis with Latent Diffusion Models", 2022) and explicit
    beta_start / beta_end, so a diffusers scheduler's table is one VPProcess."""

    kind: ClassVar[str] = "vp"
    prediction: str = "eps"
    schedule: str = "linear"
    discrete: bool = True
    num_timesteps: int = 1000
    weighting: str = "uniform"
    snr_gamma: float = 5.0
    # first and last beta of a discrete linear / scaled_linear table; 0 = the schedule's
    # default (linear: (1e-4, 0.02) * 1000 / N; scaled_linear: Stable Diffusion's)
    beta_start: float = 0.0
    beta_end: float = 0.0

    def __post_init__(self) -> None:
        _choice("VP prediction", self.prediction, list(VP_WRAPPERS))
        _choice("VP beta schedule", self.schedule, VP_SCHEDULES)
        if self.num_timesteps < 2:
            raise ConfigError(f"num_timesteps must be >= 2, got {self.num_timesteps!r}")
        if not self.discrete and self.schedule == "scaled_linear":
            raise ConfigError("schedule 'scaled_linear' is a discrete-time table; valid with "
                              "discrete = false: linear, cosine")
        if (self.beta_start, self.beta_end) != (0.0, 0.0):
            if not self.discrete or self.schedule == "cosine":
                raise ConfigError("beta_start / beta_end set a discrete linear or scaled_linear "
                                  f"table; got them with schedule={self.schedule!r}, "
                                  f"discrete={self.discrete}")
            if not 0 < self.beta_start <= self.beta_end < 1:
                raise ConfigError(f"need 0 < beta_start <= beta_end < 1, got "
                                  f"{self.beta_start!r}, {self.beta_end!r}")
        self._check_weighting()

    def beta_range(self) -> tuple[float, float]:
        """(first, last) beta of the discrete linear or scaled_linear table."""
        if self.beta_start:
            return self.beta_start, self.beta_end
        if self.schedule == "linear":
            return LINEAR_BETA[0] / self.num_timesteps, LINEAR_BETA[1] / self.num_timesteps
        return SCALED_LINEAR_BETA

    def _betas(self) -> Tensor:
        """(N,) float64 betas of the discrete linear or scaled_linear table."""
        b0, b1 = self.beta_range()
        if self.schedule == "linear":
            return torch.linspace(b0, b1, self.num_timesteps, dtype=torch.float64)
        return torch.linspace(b0**0.5, b1**0.5, self.num_timesteps, dtype=torch.float64) ** 2

    def _abar_continuous(self, t: Tensor) -> Tensor:
        """abar(t) for t in [0, 1] (score-SDE VP linear; iDDPM cosine), clamped above 0."""
        if self.schedule == "linear":
            b0, b1 = LINEAR_BETA
            return torch.exp(-(b0 * t + 0.5 * (b1 - b0) * t**2))
        f = torch.cos((t + COSINE_S) / (1 + COSINE_S) * math.pi / 2) ** 2
        # abar(1) = 0 (zero terminal SNR); the floor keeps sigma(1) finite (about 1e6)
        return (f / math.cos(COSINE_S / (1 + COSINE_S) * math.pi / 2) ** 2).clamp(min=1e-12)

    def train_sigmas(self) -> Tensor:
        """(N,) increasing float64 sigmas at the training timesteps."""
        N = self.num_timesteps
        if self.discrete and self.schedule != "cosine":
            betas = self._betas()
        elif self.discrete:  # iDDPM: betas from the cosine abar, clipped at 0.999
            a = self._abar_continuous(torch.arange(N + 1, dtype=torch.float64) / N)
            betas = (1 - a[1:] / a[:-1]).clamp(max=0.999)
        else:
            a = self._abar_continuous(torch.arange(1, N + 1, dtype=torch.float64) / N)
            return ((1 - a) / a).sqrt()
        abar = torch.cumprod(1 - betas, 0)
        return ((1 - abar) / abar).sqrt()

    @cached_property
    def _log_table(self) -> Tensor:
        """(N,) log of `train_sigmas()`, built once (cached_property skips the frozen setattr)."""
        return self.train_sigmas().log()

    def sigma_to_t(self, sigma: Tensor) -> Tensor:
        """Network timestep: fractional training index (discrete) or 1000 * t (continuous)."""
        if self.discrete:
            log_table = self._log_table.to(sigma.device)
            return _interp(sigma.double().clamp(min=1e-12).log(), log_table,
                           torch.arange(len(log_table), dtype=torch.float64,
                                        device=sigma.device)).to(sigma.dtype)
        return 1000 * self._t_continuous(sigma)

    def _t_continuous(self, sigma: Tensor) -> Tensor:
        log_abar = -torch.log1p(sigma.double() ** 2)  # abar = 1 / (1 + sigma^2)
        if self.schedule == "linear":
            b0, b1 = LINEAR_BETA
            t = (-b0 + (b0**2 - 2 * (b1 - b0) * log_abar).sqrt()) / (b1 - b0)
        else:
            c0 = math.cos(COSINE_S / (1 + COSINE_S) * math.pi / 2)
            phi = torch.acos((0.5 * log_abar).exp() * c0)
            t = phi * 2 * (1 + COSINE_S) / math.pi - COSINE_S
        return t.clamp(0, 1).to(sigma.dtype)

    def sigma_from_t(self, t: Tensor) -> Tensor:
        """Inverse of `sigma_to_t`."""
        if self.discrete:
            log_table = self._log_table.to(t.device)
            idx = torch.arange(len(log_table), dtype=torch.float64, device=t.device)
            return _interp(t.double(), idx, log_table).exp().to(t.dtype)
        abar = self._abar_continuous(t.double() / 1000)
        return ((1 - abar) / abar).sqrt().to(t.dtype)

    def sample_sigma(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Training density: uniform timesteps (integer indices when discrete)."""
        if self.discrete:
            idx = torch.randint(0, self.num_timesteps, (n,), generator=generator)
            return self.train_sigmas()[idx].float()
        t = torch.rand(n, generator=generator, dtype=torch.float64) * (1 - 1e-3) + 1e-3
        abar = self._abar_continuous(t)
        return ((1 - abar) / abar).sqrt().float()

    def sigma_at(self, u: Tensor) -> Tensor:
        """The training density's noise level at quantile u in [0, 1)."""
        if self.discrete:
            idx = (u * self.num_timesteps).long().clamp(0, self.num_timesteps - 1)
            return self.train_sigmas()[idx].float()
        abar = self._abar_continuous(u.double() * (1 - 1e-3) + 1e-3)
        return ((1 - abar) / abar).sqrt().float()

    def net_input(self, x0: Tensor, noise: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor]:
        """x_in = sqrt(abar) x0 + sqrt(1 - abar) noise, with the timestep t (B,)."""
        s = append_dims(sigma.to(x0.dtype), x0.ndim)
        return (x0 + s * noise) * (s**2 + 1).rsqrt(), self.sigma_to_t(sigma)

    def target(self, x0: Tensor, noise: Tensor, sigma: Tensor) -> Tensor:
        """eps -> noise; v -> sqrt(abar) noise - sqrt(1 - abar) x0; x0 -> x0."""
        if self.prediction == "eps":
            return noise
        if self.prediction == "x0":
            return x0
        s = append_dims(sigma.to(x0.dtype), x0.ndim)
        return (noise - s * x0) * (s**2 + 1).rsqrt()

    def denoiser(self, net: nn.Module) -> ScaledDenoiser:
        return VP_WRAPPERS[self.prediction](net, self.sigma_to_t)

    def default_schedule(self, n: int) -> Tensor:
        return get_sigmas_vp_uniform(n, self.train_sigmas(), spacing="trailing")


def _interp(x: Tensor, xp: Tensor, fp: Tensor) -> Tensor:
    """Piecewise-linear interpolation of (xp, fp) at x, xp increasing; clamps at the ends."""
    x = x.clamp(xp[0], xp[-1])
    i = torch.searchsorted(xp, x.contiguous()).clamp(1, len(xp) - 1)
    w = (x - xp[i - 1]) / (xp[i] - xp[i - 1])
    return fp[i - 1] + w * (fp[i] - fp[i - 1])


@dataclass(frozen=True)
class FlowProcess(_Process):
    """Rectified flow x_t = (1 - t) x0 + t noise, velocity target noise - x0, logit-normal t with
    SD3's shift ("Scaling Rectified Flow Transformers for High-Resolution Image Synthesis",
    2024)."""

    kind: ClassVar[str] = "flow"
    logit_mean: float = 0.0
    logit_std: float = 1.0
    shift: float = 1.0
    weighting: str = "uniform"
    snr_gamma: float = 5.0

    def __post_init__(self) -> None:
        if self.logit_std <= 0 or self.shift <= 0:
            raise ConfigError(f"logit_std and shift must be > 0, got {self.logit_std!r}, "
                              f"{self.shift!r}")
        self._check_weighting()

    def sigma_to_t(self, sigma: Tensor) -> Tensor:
        return 1000 * sigma

    def sigma_from_t(self, t: Tensor) -> Tensor:
        return t / 1000

    def sample_sigma(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """t = shift(sigmoid(mean + std * z)), z ~ N(0, 1) (SD3's logit-normal density)."""
        z = torch.randn(n, generator=generator)
        return flow_shift(torch.sigmoid(self.logit_mean + self.logit_std * z), self.shift)

    def sigma_at(self, u: Tensor) -> Tensor:
        """The training density's noise level at quantile u in (0, 1)."""
        z = torch.special.ndtri(u.double().clamp(1e-7, 1 - 1e-7)).float()
        return flow_shift(torch.sigmoid(self.logit_mean + self.logit_std * z), self.shift)

    def net_input(self, x0: Tensor, noise: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor]:
        t = append_dims(sigma.to(x0.dtype), x0.ndim)
        return (1 - t) * x0 + t * noise, self.sigma_to_t(sigma)

    def target(self, x0: Tensor, noise: Tensor, sigma: Tensor) -> Tensor:
        return noise - x0

    def denoiser(self, net: nn.Module) -> FlowDenoiser:
        return FlowDenoiser(net, self.sigma_to_t)

    def default_schedule(self, n: int) -> Tensor:
        return get_sigmas_flow(n, shift=self.shift)


@dataclass(frozen=True)
class EDMProcess(_Process):
    """EDM preconditioning with a log-normal sigma density and lambda(sigma) weighting
    ("Elucidating the Design Space of Diffusion-Based Generative Models", 2022)."""

    kind: ClassVar[str] = "edm"
    sigma_data: float = 0.5
    p_mean: float = -1.2
    p_std: float = 1.2
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    rho: float = 7.0
    weighting: str = "edm"
    snr_gamma: float = 5.0

    def __post_init__(self) -> None:
        if not 0 < self.sigma_min < self.sigma_max or self.sigma_data <= 0 or self.p_std <= 0:
            raise ConfigError("EDM needs 0 < sigma_min < sigma_max, sigma_data > 0, p_std > 0; "
                              f"got {self.sigma_min!r}, {self.sigma_max!r}, {self.sigma_data!r},"
                              f" {self.p_std!r}")
        self._check_weighting()

    def sigma_to_t(self, sigma: Tensor) -> Tensor:
        lo, hi = math.log(self.sigma_min), math.log(self.sigma_max)
        return 1000 * (sigma.clamp(min=1e-20).log() - lo) / (hi - lo)

    def sigma_from_t(self, t: Tensor) -> Tensor:
        lo, hi = math.log(self.sigma_min), math.log(self.sigma_max)
        return (lo + t / 1000 * (hi - lo)).exp()

    def sample_sigma(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """ln sigma ~ N(P_mean, P_std^2)."""
        return (self.p_mean + self.p_std * torch.randn(n, generator=generator)).exp()

    def sigma_at(self, u: Tensor) -> Tensor:
        """The training density's noise level at quantile u in (0, 1)."""
        z = torch.special.ndtri(u.double().clamp(1e-7, 1 - 1e-7)).float()
        return (self.p_mean + self.p_std * z).exp()

    def net_input(self, x0: Tensor, noise: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor]:
        s = append_dims(sigma.to(x0.dtype), x0.ndim)
        return (x0 + s * noise) * (s**2 + self.sigma_data**2).rsqrt(), self.sigma_to_t(sigma)

    def target(self, x0: Tensor, noise: Tensor, sigma: Tensor) -> Tensor:
        """F_target = (x0 - c_skip (x0 + sigma noise)) / c_out (EDM, Eq. 8)."""
        s, sd = append_dims(sigma.to(x0.dtype), x0.ndim), self.sigma_data
        c_skip, c_out = sd**2 / (s**2 + sd**2), s * sd * (s**2 + sd**2).rsqrt()
        return (x0 - c_skip * (x0 + s * noise)) / c_out

    def denoiser(self, net: nn.Module) -> EDMDenoiser:
        return EDMDenoiser(net, self.sigma_to_t, self.sigma_data)

    def default_schedule(self, n: int) -> Tensor:
        return get_sigmas_karras(n, self.sigma_min, self.sigma_max, self.rho)


for _cls in (VPProcess, FlowProcess, EDMProcess):
    PROCESSES.register(_cls.kind)(_cls)

Process = VPProcess | FlowProcess | EDMProcess


def process_from_config(data: dict[str, Any]) -> Process:
    """Build a process from `{"kind": name, **fields}` (as written by `to_config`)."""
    data = dict(data)
    if "kind" not in data:
        raise ConfigError(f"process config needs a 'kind'; valid: {', '.join(PROCESSES)}")
    return from_dict(PROCESSES.get(data.pop("kind")), data)
