"""Tiny diffusers models with seeded conditioning, shared by the interop tests."""

from __future__ import annotations

import torch

from difflab.interop.tiny import tiny_network

SKIP_REASON = "difflab.interop needs diffusers: pip install 'difflab[diffusers]'"
NAMES = ("pixart", "dit", "sd3", "flux", "unet")
TRANSFORMERS = ("pixart", "dit", "sd3", "flux")
FLUX_TOKENS = 16  # the tiny FLUX.1's 8x8 latents in 2x2 patches


def conditioning(name: str, batch: int = 2, seed: int = 1) -> tuple[dict, dict]:
    """(cond, uncond) keyword dicts for tiny model `name`: random text states (and a padding
    mask), pooled vectors or class labels; uncond is zero text / the null class."""
    g = torch.Generator().manual_seed(seed)
    cond: dict[str, torch.Tensor] = {}
    if name in ("pixart", "unet", "sd3", "flux"):
        cond["context"] = torch.randn(batch, 5, 24, generator=g)
    if name in ("pixart", "unet"):
        mask = torch.ones(batch, 5, dtype=torch.bool)
        mask[0, 3:] = False  # the first prompt is two tokens shorter
        cond["context_mask"] = mask
    if name in ("sd3", "flux"):
        cond["pooled"] = torch.randn(batch, 12, generator=g)
    if name == "dit":
        cond["y"] = torch.arange(batch) % 10
    uncond = {k: torch.ones_like(v) if v.dtype == torch.bool else
              torch.zeros_like(v) if v.is_floating_point() else torch.full_like(v, 10)
              for k, v in cond.items()}
    return cond, uncond


def tiny_net(name: str, seed: int = 0):
    """(diffusers model, wrapped network) of tiny model `name`."""
    net = tiny_network(name, seed=seed)
    return net.model, net


def noise_like(net, batch: int = 2, seed: int = 1, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(batch, *net.input_shape, generator=torch.Generator().manual_seed(seed),
                       dtype=dtype)


def tiny_process(name: str):
    """The difflab process of tiny model `name`'s scheduler (FLUX.1's shift at its size)."""
    from difflab.interop.schedulers import process_from_scheduler
    from difflab.interop.tiny import tiny_scheduler_config

    return process_from_scheduler(tiny_scheduler_config(name), image_seq_len=FLUX_TOKENS)
