"""ReNO: optimise each prompt's initial noise against a differentiable reward.

"ReNO: Enhancing One-step Text-to-Image Models through Reward-based Noise Optimization" (Eyring
et al., 2024); "Golden Noise for Diffusion Models" (Zhou et al., 2024) learns the same kind of
noise edit. The initial noise z of (prompt, seed) is the plain sample's; each iteration samples
from z with gradients through every step (each checkpointed), scores the image with the reward
net and takes a gradient-ascent step on reward - reg * (-log chi_d(|z|)), the norm prior of the
paper that keeps z where Gaussian noise lives; the step's gradient is clipped per prompt, and z
is projected back into the shell |z| in [mode - shell * s, mode + shell * s] (s = 1/sqrt(2),
the chi distribution's standard deviation), so no iterate leaves the bound. Every iterate is a
candidate (iterate 0 is the plain sample) and, as in search, the highest `reward` is kept.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from difflab.align.draft import check_sampling, sample_last_k
from difflab.config import ConfigError
from difflab.core.samplers import BatchNoise, get_sampler, initial_noise
from difflab.data.world import PromptSpec
from difflab.limits import check_float, check_int

if TYPE_CHECKING:  # search imports this module to register it
    from difflab.align.search import Reward, SearchResult

CHI_STD = 1 / math.sqrt(2)  # the chi distribution's standard deviation, for large d


@dataclass(frozen=True)
class RenoConfig:
    """ReNO: gradient steps on the noise, step size, norm prior weight and shell half-width."""

    iters: int = 4
    lr: float = 5.0  # the paper's SGD step on the noise, with gradient norm clipped to `clip`
    clip: float = 0.1
    momentum: float = 0.9
    reg: float = 0.01  # weight of -log chi_d(|z|)
    shell: float = 3.0  # |z| stays within shell chi standard deviations of the mode

    def __post_init__(self) -> None:
        check_int("reno iters", self.iters, 0, 10_000)
        check_float("reno lr", self.lr, 0.0, 1e4)
        check_float("reno clip", self.clip, 1e-6, 1e6)
        check_float("reno momentum", self.momentum, 0.0, 0.999)
        check_float("reno reg", self.reg, 0.0, 1e6)
        check_float("reno shell", self.shell, 0.0, 1e3)

    @property
    def n(self) -> int:
        return 1  # one image per prompt in flight (search batches prompts by it)


def norm_prior(z: Tensor) -> Tensor:
    """(B,) -log chi_d(|z|) up to a constant: the negative log-density of the noise's norm
    under the Gaussian prior (ReNO, Eyring et al., 2024, Eq. 5)."""
    d = z[0].numel()
    r = z.flatten(1).norm(dim=1)
    return 0.5 * r**2 - (d - 1) * torch.log(r)


def shell_bounds(d: int, shell: float) -> tuple[float, float]:
    """(low, high) of the norm shell: the chi_d mode sqrt(d - 1) -/+ shell standard deviations."""
    mode = math.sqrt(d - 1)
    return max(mode - shell * CHI_STD, 1e-6), mode + shell * CHI_STD


def project_to_shell(z: Tensor, shell: float) -> Tensor:
    """Each sample of z rescaled (direction kept) so that its norm lies in `shell_bounds`."""
    low, high = shell_bounds(z[0].numel(), shell)
    r = z.flatten(1).norm(dim=1).clamp(min=1e-12)
    scale = r.clamp(low, high) / r
    return z * scale.view(-1, *[1] * (z.ndim - 1))


def _sample(pipe: Any, model: Any, cond: dict, z: Tensor, sigmas: Tensor, seeds: Sequence[int],
            config: Any, grad: bool) -> Tensor:
    """Images from initial noise z with the plain sample's sampler noise (gradients on z)."""
    from difflab.align.search import _autocast

    noise = BatchNoise([s + 1_000_003 for s in seeds])  # as Pipeline.sample draws it
    n = len(sigmas) - 1
    with _autocast(pipe, config), torch.set_grad_enabled(grad):
        x = sample_last_k(model, z * sigmas[0], sigmas, n if grad else 0,
                          get_sampler(config.sampler), cond, noise, config.sampler_options)
    return x.float()


def search_reno(pipe: Any, prompts: Sequence[str], specs: Sequence[PromptSpec],
                seeds: Sequence[int], config: Any, opts: RenoConfig, reward: Reward,
                net: Any = None) -> list[SearchResult]:
    """ReNO (Eyring et al., 2024): `opts.iters` reward-net gradient steps on each prompt's
    initial noise; the highest-`reward` iterate is kept."""
    from difflab.align.search import _pick

    if net is None:
        raise ConfigError("reno climbs a differentiable reward: give a reward net "
                          "(--reward-net DIR)")
    check_sampling(config)
    model, cond = pipe.denoiser(list(prompts), config)
    sigmas = pipe.sigmas(config).to(pipe.device)
    net.requires_grad_(False)
    z = initial_noise(pipe.image_shape, seeds, device=pipe.device).requires_grad_(True)
    opt = torch.optim.SGD([z], lr=opts.lr, momentum=opts.momentum)
    iterates, net_trace = [], []
    for _ in range(opts.iters):
        x = _sample(pipe, model, cond, z, sigmas, seeds, config, grad=True)
        r = net.reward(x.clamp(-1, 1), specs)
        loss = (-r + opts.reg * norm_prior(z)).sum()  # prompts are independent: sum
        opt.zero_grad(set_to_none=True)
        loss.backward()
        with torch.no_grad():
            g = z.grad.flatten(1).norm(dim=1).clamp(min=1e-12)
            z.grad *= (opts.clip / g).clamp(max=1.0).view(-1, 1, 1, 1)  # per-prompt clip
        opt.step()
        with torch.no_grad():
            z.copy_(project_to_shell(z, opts.shell))
        iterates.append(x.detach())
        net_trace.append(r.detach())
    with torch.no_grad():
        x = _sample(pipe, model, cond, z.detach(), sigmas, seeds, config, grad=False)
        iterates.append(x)
        net_trace.append(net.reward(x.clamp(-1, 1), specs))
    k = len(iterates)
    # prompt p's iterate j at row p * k + j, as _pick expects
    xs = torch.stack(iterates, 1).flatten(0, 1)
    final = np.concatenate([np.asarray(reward(xs[p * k:(p + 1) * k], spec), np.float64)
                            for p, spec in enumerate(specs)])
    trace = torch.stack(net_trace, 1).tolist()  # (P, k): the reward net's score per iterate
    nfe = (2 * opts.iters + 1) * config.nfe  # forward passes, checkpoint recompute included
    return _pick(xs, final, k, nfe=nfe, reward_calls=k, trace=trace,
                 backward=opts.iters * config.nfe)
