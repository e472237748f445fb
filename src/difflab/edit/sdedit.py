"""SDEdit: noise an image part of the way and denoise it under a new prompt
("SDEdit: Guided Image Synthesis and Editing with Stochastic Differential Equations", 2022)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from difflab.core.samplers import BatchNoise, get_sampler, initial_noise
from difflab.limits import check_float


def sdedit(pipe, images: Tensor, prompts: Sequence[str], seeds: Sequence[int], config,
           strength: float) -> Tensor:
    """Edited images (B, C, H, W): start at step round((1 - strength) * steps) of the schedule,
    x = alpha(sigma) x0 + sigma noise, and run the sampler from there; strength 0 is the input."""
    check_float("strength", strength, 0.0, 1.0)
    model, cond = pipe.denoiser(prompts, config)
    sigmas = pipe.sigmas(config).to(pipe.device, torch.float32)
    start = round((1 - strength) * (len(sigmas) - 1))
    sigmas = sigmas[start:]  # (steps - start + 1,), ends in 0
    x0 = images.to(pipe.device, torch.float32)
    sigma = sigmas[0] * x0.new_ones(len(x0))
    alpha = model.alpha(sigma).reshape(-1, 1, 1, 1)
    x = alpha * x0 + sigmas[0] * initial_noise(pipe.image_shape, seeds, device=pipe.device)
    noise = BatchNoise([s + 1_000_003 for s in seeds])
    with torch.no_grad():
        return get_sampler(config.sampler)(model, x, sigmas, extra_args=cond, noise=noise,
                                           **config.sampler_options).float()
