"""The tiny UNet and inputs the control tests share (every weight random, so no branch is
trivially zero)."""

from __future__ import annotations

import torch

from difflab.accel.hooks import hook_names
from difflab.models.unet import UNet, UNetConfig

CTX = 8


def tiny_unet() -> UNet:
    torch.manual_seed(0)
    net = UNet(UNetConfig(input_size=8, base_channels=8, channel_mult=(1, 2), norm_groups=4,
                          num_heads=2, attention_levels=(1,), context_dim=CTX))
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.2)
    return net.eval()


def inputs(b: int = 2):
    g = torch.Generator().manual_seed(1)
    x, t = torch.randn(b, 3, 8, 8, generator=g), torch.rand(b, generator=g)
    ctx, mask = torch.randn(b, 5, CTX, generator=g), torch.ones(b, 5, dtype=torch.bool)
    mask[0, 3:] = False
    return x, t, {"context": ctx, "context_mask": mask}


def all_hooks(net) -> list:
    return [n for m in net.modules() for n in hook_names(m)]
