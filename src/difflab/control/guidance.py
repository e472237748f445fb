"""Training-free control: energies on cross-attention maps whose gradient moves the latent.

Both methods read the maps through the attention probe (`control.probe`), evaluate an energy on
the conditional branch with autograd on, and step the latent x_t against its gradient before
the sampler's own step at that noise level (`sample_euler_latent_guided`). The step is taken in
units of the gradient's root mean square per image, so one `scale` fits every noise level.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from difflab.config import ConfigError
from difflab.core.context import StepContext, step_context
from difflab.limits import check_float, check_int
from difflab.registry import Registry

ENERGIES: Registry = Registry("latent guidance")
Energy = Callable[[Tensor, "Targets"], Tensor]
# (scale, iterations) per method when none is given, chosen on the dev split
# (benchmarks/results/control/layout-dev-box-sweep*.json: box IoU 0.41 at 0.1 x 2 against
# 0.31 at 0.15 x 1; binding-dev-attend-excite.json: no scale helped binding).
DEFAULTS: dict[str, tuple[float, int]] = {"box": (0.1, 2), "attend-excite": (0.15, 1)}


@dataclass(frozen=True)
class GuidanceConfig:
    """Which energy, how hard (latent step in gradient-RMS units), over which fraction of the
    sampling steps (from the start), with how many updates per step."""

    method: str = "box"
    scale: float = 0.5
    fraction: float = 0.5
    iterations: int = 1

    def __post_init__(self) -> None:
        ENERGIES.get(self.method)  # raises with the valid names
        check_float("guidance scale", self.scale, 0.0, 100.0)
        check_float("guidance fraction", self.fraction, 0.0, 1.0)
        check_int("guidance iterations", self.iterations, 1, 20)


@dataclass(frozen=True)
class Targets:
    """Per image b and object k: the token selection (B, K, T) (weights summing to 1 over the
    phrase's tokens), the requested box mask (B, K, r, r) and which (b, k) exist (B, K)."""

    tokens: Tensor
    boxes: Tensor
    valid: Tensor
    keep: Tensor  # (B, T) text tokens that count as words (not [CLS], [SEP] or padding)


def _per_object(maps: Tensor, tokens: Tensor) -> Tensor:
    """(B, T, r, r) token maps -> (B, K, r, r) maps of each object's phrase tokens."""
    return torch.einsum("bkt,btxy->bkxy", tokens, maps)


@ENERGIES.register("box")
def box_energy(maps: Tensor, t: Targets) -> Tensor:
    """"Training-Free Layout Control with Cross-Attention Guidance" (Chen et al., 2023),
    backward guidance: sum over objects of (1 - attention mass inside its box / total)^2."""
    a = _per_object(maps, t.tokens)  # (B, K, r, r)
    inside = (a * t.boxes).flatten(2).sum(-1) / a.flatten(2).sum(-1).clamp_min(1e-8)
    return ((1.0 - inside) ** 2 * t.valid).sum()


def _smooth(a: Tensor) -> Tensor:
    """3x3 Gaussian (sigma 0.5) smoothing of (B, K, r, r) maps, as Attend-and-Excite does."""
    g = torch.tensor([0.1065, 0.7870, 0.1065], dtype=a.dtype, device=a.device)
    kernel = (g[:, None] * g[None, :]).expand(a.shape[1], 1, 3, 3)
    return F.conv2d(F.pad(a, (1, 1, 1, 1), mode="replicate"), kernel, groups=a.shape[1])


@ENERGIES.register("attend-excite")
def attend_excite_energy(maps: Tensor, t: Targets) -> Tensor:
    """"Attend-and-Excite: Attention-Based Semantic Guidance for Text-to-Image Diffusion Models"
    (Chefer et al., 2023): max over subject tokens of 1 - (its smoothed map's maximum), with the
    maps renormalised over the prompt's words (the [CLS] token's share removed)."""
    words = maps * t.keep[:, :, None, None]
    words = words / words.sum(1, keepdim=True).clamp_min(1e-8)
    a = _smooth(_per_object(words, t.tokens))  # (B, K, r, r)
    loss = (1.0 - a.flatten(2).amax(-1)) * t.valid  # (B, K)
    return loss.amax(-1).sum()


def sample_euler_latent_guided(model, x: Tensor, sigmas: Tensor, *, energy: Callable,
                               scale: float, guided_steps: int, iterations: int = 1,
                               extra_args: dict | None = None, callback=None) -> Tensor:
    """Euler ("Elucidating the Design Space...", 2022, Alg. 1 without churn) with `iterations`
    latent updates x <- x - scale * grad E / rms(grad E) before each of the first
    `guided_steps` steps (Chen et al., 2023; Chefer et al., 2023)."""
    extra_args, n = extra_args or {}, len(sigmas) - 1
    for i in range(n):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        for _ in range(iterations if i < guided_steps else 0):
            with torch.enable_grad(), step_context(StepContext(i, n, float(sigma), "cond")):
                xg = x.detach().requires_grad_(True)
                (grad,) = torch.autograd.grad(energy(xg, sigma), xg)
            rms = grad.pow(2).flatten(1).mean(1).sqrt().clamp_min(1e-12)  # (B,)
            x = x - scale * grad / rms[:, None, None, None]
        with step_context(StepContext(i, n, float(sigma), "cond")):
            denoised = model(x, sigma * x.new_ones(x.shape[0]), **extra_args)
        if callback is not None:
            callback({"i": i, "x": x, "sigma": sigma, "sigma_next": sigma_next,
                      "denoised": denoised})
        x = x + (x - denoised) / sigma * (sigma_next - sigma)
    return x


def check_method(method: str) -> str:
    """Return `method` if it is a registered energy, else raise naming the valid ones."""
    if method not in ENERGIES.names():
        raise ConfigError(f"unknown latent guidance {method!r}; valid: "
                          f"{', '.join(ENERGIES.names())}")
    return method
