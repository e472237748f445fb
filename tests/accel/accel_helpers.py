"""Tiny real models and a sampling helper shared by the accel tests."""

from __future__ import annotations

import torch
from torch import nn

from difflab.core.guidance import cfg
from difflab.core.processes import FlowProcess
from difflab.core.samplers import get_sampler, initial_noise
from difflab.models import build_model

SIZE = 16
STEPS = 8

TINY = {
    "pixart": ("pixart-tiny", {"input_size": SIZE, "hidden_size": 64, "depth": 4,
                               "context_dim": 32}),
    "pixart-rope": ("pixart-tiny", {"input_size": SIZE, "hidden_size": 64, "depth": 4,
                                    "context_dim": 32, "pos_embed": "rope"}),
    "mmdit": ("mmdit-tiny", {"input_size": SIZE, "hidden_size": 64, "depth": 3,
                             "context_dim": 32, "pooled_dim": 16}),
    "unet": ("unet-tiny", {"input_size": SIZE, "base_channels": 16, "channel_mult": (1, 2, 2),
                           "attention_levels": (1,), "norm_groups": 8, "context_dim": 32}),
}


def tiny_model(kind: str, seed: int = 0) -> nn.Module:
    """A tiny preset with weights perturbed by a seeded generator (a fresh model outputs 0)."""
    preset, overrides = TINY[kind]
    with torch.random.fork_rng():  # the init draws from the global generator
        torch.manual_seed(seed)
        net = build_model(preset, **overrides).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
    return net


def context_dim(net: nn.Module) -> int:
    return net.config.context_dim


def sample(net: nn.Module, *, scale: float = 3.0, sampler: str = "euler", steps: int = STEPS,
           interval: tuple[float, float] | None = None, seeds: tuple[int, ...] = (0, 1),
           ) -> torch.Tensor:
    """A flow-matching sample with CFG (batched cond + uncond: branch "all") from fixed seeds."""
    g = torch.Generator().manual_seed(123)
    ctx = torch.randn(len(seeds), 5, context_dim(net), generator=g)
    extra = {"context": ctx}
    if getattr(net.config, "pooled_dim", 0):
        extra["pooled"] = torch.randn(len(seeds), net.config.pooled_dim, generator=g)
    model = FlowProcess().denoiser(net)
    if scale != 1.0:
        uncond = {k: torch.zeros_like(v) for k, v in extra.items()}
        model = cfg(model, scale, uncond, interval=interval)
    x = initial_noise((net.config.in_channels, SIZE, SIZE), list(seeds))
    sigmas = torch.linspace(1, 0, steps + 1)
    with torch.no_grad():
        return get_sampler(sampler)(model, x, sigmas, extra_args=extra)


def count_calls(modules: list[nn.Module]) -> tuple[list[int], list]:
    """A live counter of forward calls of `modules` (inner modules, so a skipped block's
    replacement forward does not count), and the torch handles to remove."""
    counts = [0]
    handles = [m.register_forward_pre_hook(lambda *a: counts.__setitem__(0, counts[0] + 1))
               for m in modules]
    return counts, handles
