"""Bottleneck sampling: denoise high -> low -> high resolution, re-noising at each transition
("Training-free Diffusion Acceleration with Bottleneck Sampling", 2025).

A sampler-level transform, not a block hook: `sample_bottleneck(sampler, model, x, sigmas, config)`
runs any `sample_<name>` stage by stage. At a transition the last clean estimate is resized and
noised again to the next stage's first sigma; each stage's schedule is shifted by its `shift`
(SD3's resolution shift: the VE-form noise level sigma / alpha(sigma) is multiplied by it, so a
low-resolution stage with fewer tokens takes a smaller shift). The network must take several
resolutions: the DiT with `pos_embed` "sincos" or "rope" (every `dit-*` / `pixart-*` preset) and
the convolutional UNet do; a DiT with learned positions raises.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from difflab.config import ConfigError


@dataclass(frozen=True)
class BottleneckConfig:
    """Per stage: resolution scale, share of the steps, and schedule shift."""

    scales: tuple[float, ...] = (1.0, 0.5, 1.0)
    fractions: tuple[float, ...] = (0.2, 0.5, 0.3)
    shifts: tuple[float, ...] = (1.0, 0.5, 1.5)

    def __post_init__(self) -> None:
        k = len(self.scales)
        if k == 0 or len(self.fractions) != k or len(self.shifts) != k:
            raise ConfigError(f"scales, fractions and shifts need one entry per stage, got "
                              f"{len(self.scales)}, {len(self.fractions)}, {len(self.shifts)}")
        if self.scales[-1] != 1.0:
            raise ConfigError(f"the last stage must be at full resolution (scale 1.0), got "
                              f"{self.scales[-1]}")
        if min(self.scales) <= 0 or min(self.fractions) <= 0 or min(self.shifts) <= 0:
            raise ConfigError("scales, fractions and shifts must all be > 0")


def stage_steps(n: int, fractions: tuple[float, ...]) -> list[int]:
    """Split n steps by `fractions` (normalised), each stage at least one step."""
    if n < len(fractions):
        raise ConfigError(f"{n} steps cannot make {len(fractions)} stages; use more steps")
    total = sum(fractions)
    counts = [max(1, round(n * f / total)) for f in fractions]
    counts[-1] = n - sum(counts[:-1])  # the last stage absorbs rounding
    while counts[-1] < 1:  # rounding gave the early stages too much
        j = max(range(len(counts) - 1), key=lambda i: counts[i])
        counts[j] -= 1
        counts[-1] += 1
    return counts


def shift_sigmas(model: Any, sigmas: Tensor, shift: float) -> Tensor:
    """Multiply the VE-form level sigma / alpha(sigma) by `shift`; alpha = 1 - k sigma with k
    read from the denoiser (0: VE-form, 1: rectified flow), per `core/denoisers.py`."""
    if shift == 1.0:
        return sigmas
    pos = sigmas[(sigmas > 0) & (sigmas < 1)]
    probe = pos[:1] if pos.numel() else sigmas.new_tensor([0.5])
    k = float(((1 - model.alpha(probe)) / probe)[0])
    out = sigmas.clone()
    live = (sigmas > 0) & (1 - k * sigmas > 0)
    ve = sigmas[live] / (1 - k * sigmas[live]) * shift
    out[live] = ve / (1 + k * ve)
    return out


def _resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(x.shape[-2:]) == size:
        return x
    mode = "area" if size[0] < x.shape[-2] else "bilinear"
    return F.interpolate(x, size=size, mode=mode, **({} if mode == "area" else
                                                     {"align_corners": False}))


def sample_bottleneck(sampler: Callable[..., Tensor], model: Any, x: Tensor, sigmas: Tensor,
                      config: BottleneckConfig, *, extra_args: dict | None = None,
                      callback: Callable | None = None,
                      noise: Callable[[Tensor], Tensor] | None = None, **hparams: Any) -> Tensor:
    """Run `sampler` over stages of `config` (high -> low -> high): x (B, C, H, W) at sigmas[0]
    and full resolution in, the sample at full resolution out ("Bottleneck Sampling", 2025)."""
    noise = noise or torch.randn_like
    n = len(sigmas) - 1
    H, W = x.shape[-2:]
    counts, start, denoised = stage_steps(n, config.fractions), 0, None

    def keep_last(info: dict) -> None:
        nonlocal denoised
        denoised = info["denoised"]
        if callback is not None:
            callback(info)

    for k, (scale, count, shift) in enumerate(zip(config.scales, counts, config.shifts,
                                                  strict=True)):
        size = (max(1, round(H * scale)), max(1, round(W * scale)))
        stage = shift_sigmas(model, sigmas[start:start + count + 1], shift)
        if k > 0:  # re-noise the resized clean estimate to this stage's first level
            x0 = _resize(denoised, size)
            s0 = stage[0]
            x = model.alpha(s0) * x0 + s0 * noise(x0)
        elif tuple(x.shape[-2:]) != size:  # a low-resolution first stage: start from x's noise
            x = _resize(x, size) * (H * W / (size[0] * size[1])) ** 0.5
        x = sampler(model, x, stage, extra_args=extra_args, callback=keep_last, noise=noise,
                    **hparams)
        start += count
    return x
