"""Wrappers that turn a network into the one denoiser contract `denoised = model(x, sigma, **cond)`.

Style of k-diffusion's `external.py` ("Elucidating the Design Space of Diffusion-Based
Generative Models", 2022): each parameterisation is a choice of scalings
`denoised = c_skip * x + c_out * net(c_in * x, t(sigma), **cond)`.

Geometry decision (recorded here, read by the samplers): every denoiser describes its noisy
samples as `x = alpha(sigma) * x0 + sigma * noise` and exposes `alpha(sigma)`.
- VE-form (VP with eps / v / x0 prediction, EDM): alpha = 1, sigma = sqrt((1 - abar) / abar);
  the VP network's input scaling c_in = 1 / sqrt(1 + sigma^2) lives inside the wrapper.
- Rectified flow: sigma = t and alpha = 1 - t, so x = (1 - t) x0 + t noise.
Euler / Heun / LMS integrate d = (x - denoised) / sigma, which is the exact probability-flow ODE
for both (alpha is affine in sigma with alpha(0) = 1). Solvers that need the signal scale
(DPM-Solver++, DDIM, ancestral and SDE noise) call `model.alpha(sigma)`; no sampler branches on
a prediction type or class name.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

import torch
from torch import Tensor, nn

TimestepFn = Callable[[Tensor], Tensor]


def append_dims(v: Tensor, ndim: int) -> Tensor:
    """(B,) -> (B, 1, ..., 1) with `ndim` dims, to broadcast per-sample scalars over x."""
    return v.reshape(v.shape + (1,) * (ndim - v.ndim))


class Denoiser(nn.Module):
    """A network wrapped so that forward(x, sigma, **cond) returns the denoised estimate of x0."""

    def alpha(self, sigma: Tensor) -> Tensor:
        """Signal scale alpha(sigma) in x = alpha * x0 + sigma * noise (VE-form: 1)."""
        return torch.ones_like(sigma)


class ScaledDenoiser(Denoiser, ABC):
    """denoised = c_skip * x + c_out * net(c_in * x, t(sigma)); subclasses give the scalings."""

    def __init__(self, net: nn.Module, sigma_to_t: TimestepFn) -> None:
        super().__init__()
        self.net = net
        self.sigma_to_t = sigma_to_t

    @abstractmethod
    def scalings(self, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(c_skip, c_out, c_in), each (B,)."""

    def forward(self, x: Tensor, sigma: Tensor, **cond: Tensor) -> Tensor:
        sigma = sigma.to(x.dtype).expand(x.shape[0])  # (B,)
        c_skip, c_out, c_in = (append_dims(c, x.ndim) for c in self.scalings(sigma))
        return c_skip * x + c_out * self.net(x * c_in, self.sigma_to_t(sigma), **cond)


class EpsDenoiser(ScaledDenoiser):
    """VP eps-prediction in VE-form ("Denoising Diffusion Probabilistic Models", 2020)."""

    def scalings(self, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return torch.ones_like(sigma), -sigma, (sigma**2 + 1).rsqrt()


class VDenoiser(ScaledDenoiser):
    """VP v-prediction, v = alpha_t eps - sigma_t x0 ("Progressive Distillation...", 2022)."""

    def scalings(self, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        c_in = (sigma**2 + 1).rsqrt()
        return c_in**2, -sigma * c_in, c_in


class X0Denoiser(ScaledDenoiser):
    """VP x0-prediction: the network outputs the clean sample ("DDPM", 2020, Eq. 15 variant)."""

    def scalings(self, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return torch.zeros_like(sigma), torch.ones_like(sigma), (sigma**2 + 1).rsqrt()


class EDMDenoiser(ScaledDenoiser):
    """EDM preconditioning with sigma_data ("Elucidating the Design Space...", 2022, Table 1)."""

    def __init__(self, net: nn.Module, sigma_to_t: TimestepFn, sigma_data: float = 0.5) -> None:
        super().__init__(net, sigma_to_t)
        self.sigma_data = sigma_data

    def scalings(self, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        sd2 = self.sigma_data**2
        norm = (sigma**2 + sd2).rsqrt()
        return sd2 * norm**2, sigma * self.sigma_data * norm, norm


class FlowDenoiser(ScaledDenoiser):
    """Rectified-flow velocity v = noise - x0, denoised = x - t v ("Scaling Rectified Flow
    Transformers", 2024)."""

    def scalings(self, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return torch.ones_like(sigma), -sigma, torch.ones_like(sigma)

    def alpha(self, sigma: Tensor) -> Tensor:
        return 1 - sigma
