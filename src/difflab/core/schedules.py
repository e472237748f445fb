"""Noise schedules: `get_sigmas_<name>(n, ...)` -> (n + 1,) float64, decreasing, ending in 0.

Every schedule has n steps (n + 1 values, the last exactly 0), so samplers see the same shape
from all of them. Values are float64 on the CPU; samplers cast to x's dtype and device.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from difflab.config import ConfigError
from difflab.registry import Registry

SCHEDULES: Registry = Registry("schedule")
SPACINGS = ("leading", "trailing", "linspace")


def _check(n: int, sigma_min: float, sigma_max: float) -> None:
    if not isinstance(n, int) or n < 1:
        raise ConfigError(f"number of steps must be an int >= 1, got {n!r}")
    if not 0 < sigma_min < sigma_max:
        raise ConfigError(f"need 0 < sigma_min < sigma_max, got {sigma_min!r}, {sigma_max!r}")


def _append_zero(sigmas: Tensor) -> Tensor:
    return torch.cat([sigmas, sigmas.new_zeros(1)])


@SCHEDULES.register("karras")
def get_sigmas_karras(n: int, sigma_min: float = 0.002, sigma_max: float = 80.0,
                      rho: float = 7.0) -> Tensor:
    """Karras et al. rho-spaced sigmas ("Elucidating the Design Space...", 2022, Eq. 5)."""
    _check(n, sigma_min, sigma_max)
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    # n == 1 gives linspace [0]: a single step from sigma_max to 0
    return _append_zero((hi + ramp * (lo - hi)) ** rho)


@SCHEDULES.register("exponential")
def get_sigmas_exponential(n: int, sigma_min: float = 0.002, sigma_max: float = 80.0) -> Tensor:
    """Sigmas uniform in log sigma ("Score-Based Generative Modeling through SDEs", 2021, VE)."""
    _check(n, sigma_min, sigma_max)
    log = torch.linspace(math.log(sigma_max), math.log(sigma_min), n, dtype=torch.float64)
    return _append_zero(log.exp())


@SCHEDULES.register("polyexponential")
def get_sigmas_polyexponential(n: int, sigma_min: float = 0.002, sigma_max: float = 80.0,
                               rho: float = 1.0) -> Tensor:
    """Polynomial in log sigma (k-diffusion; rho = 1 is exponential; after Karras et al., 2022);
    rho above about 3 bunches the last sigmas closer than float64 can tell apart."""
    _check(n, sigma_min, sigma_max)
    ramp = torch.linspace(1, 0, n, dtype=torch.float64) ** rho
    log_lo, log_hi = math.log(sigma_min), math.log(sigma_max)
    return _append_zero((ramp * (log_hi - log_lo) + log_lo).exp())


def ddpm_sigmas(num_timesteps: int = 1000, beta_start: float = 1e-4,
                beta_end: float = 0.02) -> Tensor:
    """(N,) increasing VE-form sigmas of DDPM's linear betas ("DDPM", 2020)."""
    betas = torch.linspace(beta_start, beta_end, num_timesteps, dtype=torch.float64)
    abar = torch.cumprod(1 - betas, 0)
    return ((1 - abar) / abar).sqrt()


@SCHEDULES.register("vp_uniform")
def get_sigmas_vp_uniform(n: int, train_sigmas: Tensor | None = None,
                          spacing: str = "trailing") -> Tensor:
    """Uniformly spaced training timesteps as in DDIM ("Denoising Diffusion Implicit Models",
    2021); spacings per "Common Diffusion Noise Schedules and Sample Steps are Flawed", 2023."""
    table = ddpm_sigmas() if train_sigmas is None else train_sigmas.to(torch.float64)
    N = table.shape[0]
    if not isinstance(n, int) or not 1 <= n <= N:
        raise ConfigError(f"number of steps must be an int in [1, {N}], got {n!r}")
    if spacing == "leading":  # 0, k, 2k, ... (the last step starts at a low t)
        idx = torch.arange(n) * (N // n)
    elif spacing == "trailing":  # N-1, N-1-k, ... (the first step starts at the last t)
        idx = (N - 1 - torch.arange(n) * (N / n)).round().long().flip(0)
    elif spacing == "linspace":
        idx = torch.linspace(0, N - 1, n).round().long()
    else:
        raise ConfigError(f"unknown spacing {spacing!r}; valid: {', '.join(SPACINGS)}")
    return _append_zero(table[idx].flip(0))


def flow_shift(t: Tensor, shift: float) -> Tensor:
    """SD3's resolution shift t' = s t / (1 + (s - 1) t) ("Scaling Rectified Flow...", 2024)."""
    return t / (t + (1 - t) / shift)  # the same map, written to keep t = 1 exactly at 1


@SCHEDULES.register("flow")
def get_sigmas_flow(n: int, shift: float = 1.0) -> Tensor:
    """Uniform t from 1 to 0 with SD3's shift ("Scaling Rectified Flow Transformers", 2024)."""
    if not isinstance(n, int) or n < 1:
        raise ConfigError(f"number of steps must be an int >= 1, got {n!r}")
    if not shift > 0:
        raise ConfigError(f"flow shift must be > 0, got {shift!r}")
    return flow_shift(torch.linspace(1, 0, n + 1, dtype=torch.float64), shift)


def get_sigmas(name: str, n: int, **kw: float) -> Tensor:
    """The schedule registered as `name` with n steps; unknown names list the valid ones."""
    return SCHEDULES.get(name)(n, **kw)
