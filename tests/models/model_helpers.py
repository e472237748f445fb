"""Tiny configurations and shared checks for the model tests."""

from __future__ import annotations

import torch
from torch import nn

from difflab.models import DiTConfig, MMDiTConfig, UNetConfig

TEXT_DIM, TEXT_LEN = 16, 5

TINY = {
    "dit": DiTConfig(input_size=8, patch_size=2, hidden_size=32, depth=2, num_heads=2,
                     num_classes=3),
    "pixart": DiTConfig(input_size=8, patch_size=2, hidden_size=32, depth=2, num_heads=2,
                        context_dim=TEXT_DIM, pooled_dim=TEXT_DIM, modulation="adaln_single"),
    "mmdit": MMDiTConfig(input_size=8, patch_size=2, hidden_size=32, depth=2, num_heads=2,
                         context_dim=TEXT_DIM, pooled_dim=TEXT_DIM),
    "unet": UNetConfig(input_size=8, base_channels=8, channel_mult=(1, 2), attention_levels=(1,),
                       num_heads=2, norm_groups=4, context_dim=TEXT_DIM, pooled_dim=TEXT_DIM,
                       num_classes=3),
}


def make_inputs(cfg, batch: int = 2, size: int | None = None, seed: int = 0,
                padded: bool = True) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """(x, t, cond kwargs) matching `cfg`; the last caption of the batch is partly padding."""
    g = torch.Generator().manual_seed(seed)
    size = size or cfg.input_size
    x = torch.randn(batch, cfg.in_channels, size, size, generator=g)
    t = torch.rand(batch, generator=g) * 1000
    kw: dict = {}
    if getattr(cfg, "context_dim", 0):
        dim = cfg.context_dim
        kw["context"] = torch.randn(batch, TEXT_LEN, dim, generator=g)
        mask = torch.ones(batch, TEXT_LEN, dtype=torch.bool)
        if padded:
            mask[-1, 2:] = False
        kw["context_mask"] = mask
    if getattr(cfg, "pooled_dim", 0):
        kw["pooled"] = torch.randn(batch, cfg.pooled_dim, generator=g)
    if getattr(cfg, "num_classes", 0):
        kw["y"] = torch.arange(batch) % (cfg.num_classes + 1)
    return x, t, kw


def perturb(model: nn.Module, seed: int = 0, std: float = 0.05) -> nn.Module:
    """Add noise to every parameter so zero-initialised layers stop hiding the rest."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * std)
    return model
