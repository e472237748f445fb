"""difflab denoisers for diffusers networks, with the noise levels of a diffusers scheduler.

Convention mapping (checked against diffusers' schedulers in tests/interop):
- VP models (SD-1.x UNet, PixArt): a diffusers scheduler holds `alphas_cumprod` (abar, (N,));
  difflab works in VE-form, sigma = sqrt((1 - abar) / abar) and x_ve = x_vp / sqrt(abar), and
  feeds the network x_ve / sqrt(1 + sigma^2) = x_vp, which is what diffusers feeds it. The
  timestep is the training index whose sigma this is: log-sigma interpolation in the table, exact
  at integer timesteps (diffusers' "leading" and "trailing" spacings; its default "linspace"
  spacing uses fractional timesteps with sigma interpolated linearly, which differs by a hair).
- Flow models (SD3): sigma = t and the network timestep is N * sigma (N = 1000), as in
  `FlowMatchEulerDiscreteScheduler`; x = (1 - t) x0 + t noise in both libraries.
- At sigma = 0 every wrapper returns x itself; both libraries end at sigma = 0, where VE and VP
  samples coincide, so final images compare directly.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from difflab.config import ConfigError
from difflab.core.denoisers import (
    EpsDenoiser,
    FlowDenoiser,
    ScaledDenoiser,
    VDenoiser,
    X0Denoiser,
)
from difflab.core.processes import _interp
from difflab.core.schedules import get_sigmas_vp_uniform

VP_PREDICTIONS = {"epsilon": EpsDenoiser, "v_prediction": VDenoiser, "sample": X0Denoiser}


def train_sigmas(scheduler: Any) -> Tensor:
    """(N,) increasing float64 VE-form sigmas of a VP diffusers scheduler's `alphas_cumprod`."""
    abar = getattr(scheduler, "alphas_cumprod", None)
    if abar is None:
        raise ConfigError(f"{type(scheduler).__name__} has no alphas_cumprod; a VP scheduler "
                          "(DDIM, Euler, DPM-Solver) is needed")
    abar = abar.double()
    return ((1 - abar) / abar).sqrt()


class TimestepTable:
    """sigma -> diffusers timestep (fractional training index) by log-sigma interpolation."""

    def __init__(self, sigmas: Tensor) -> None:
        self.log_sigmas = sigmas.double().log()  # (N,) increasing

    def __call__(self, sigma: Tensor) -> Tensor:
        log_table = self.log_sigmas.to(sigma.device)
        index = torch.arange(len(log_table), dtype=torch.float64, device=sigma.device)
        return _interp(sigma.double().clamp(min=1e-12).log(), log_table, index).to(sigma.dtype)


def is_flow(scheduler: Any) -> bool:
    """True for a flow-matching scheduler (no alphas_cumprod, a `shift`), e.g. SD3's."""
    return getattr(scheduler, "alphas_cumprod", None) is None and "shift" in scheduler.config


def diffusers_denoiser(net: nn.Module, scheduler: Any) -> ScaledDenoiser:
    """Wrap a network from `networks.py` as a difflab denoiser with `scheduler`'s process:
    VP with its prediction type ("DDPM", 2020; "Progressive Distillation...", 2022) or
    rectified flow ("Scaling Rectified Flow Transformers", 2024)."""
    n_train = int(scheduler.config.num_train_timesteps)
    if is_flow(scheduler):
        return FlowDenoiser(net, lambda sigma: n_train * sigma)
    prediction = scheduler.config.prediction_type
    if prediction not in VP_PREDICTIONS:
        raise ConfigError(f"prediction_type {prediction!r} is not supported; valid: "
                          f"{', '.join(VP_PREDICTIONS)}")
    return VP_PREDICTIONS[prediction](net, TimestepTable(train_sigmas(scheduler)))


def vp_sigmas(scheduler: Any, n: int, spacing: str = "trailing") -> Tensor:
    """(n + 1,) difflab sigmas at diffusers' `spacing` of a VP scheduler's training steps
    ("Common Diffusion Noise Schedules and Sample Steps are Flawed", 2023)."""
    return get_sigmas_vp_uniform(n, train_sigmas(scheduler), spacing=spacing)
