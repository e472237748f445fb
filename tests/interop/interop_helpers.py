"""Tiny diffusers models with seeded conditioning, shared by the interop tests."""

from __future__ import annotations

import torch

from difflab.interop.networks import wrap
from difflab.interop.tiny import build_tiny

SKIP_REASON = "difflab.interop needs diffusers: pip install 'difflab[diffusers]'"
NAMES = ("pixart", "dit", "sd3", "unet")
TRANSFORMERS = ("pixart", "dit", "sd3")


def conditioning(name: str, batch: int = 2, seed: int = 1) -> tuple[dict, dict]:
    """(cond, uncond) keyword dicts for tiny model `name`: random text states (and a padding
    mask), pooled vectors or class labels; uncond is zero text / the null class."""
    g = torch.Generator().manual_seed(seed)
    cond: dict[str, torch.Tensor] = {}
    if name in ("pixart", "unet", "sd3"):
        cond["context"] = torch.randn(batch, 5, 24, generator=g)
    if name in ("pixart", "unet"):
        mask = torch.ones(batch, 5, dtype=torch.bool)
        mask[0, 3:] = False  # the first prompt is two tokens shorter
        cond["context_mask"] = mask
    if name == "sd3":
        cond["pooled"] = torch.randn(batch, 12, generator=g)
    if name == "dit":
        cond["y"] = torch.arange(batch) % 10
    uncond = {k: torch.ones_like(v) if v.dtype == torch.bool else
              torch.zeros_like(v) if v.is_floating_point() else torch.full_like(v, 10)
              for k, v in cond.items()}
    return cond, uncond


def tiny_net(name: str, seed: int = 0):
    """(diffusers model, wrapped network) of tiny model `name`."""
    model = build_tiny(name, seed=seed)
    return model, wrap(model)


def noise_like(net, batch: int = 2, seed: int = 1, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(batch, *net.input_shape, generator=torch.Generator().manual_seed(seed),
                       dtype=dtype)
