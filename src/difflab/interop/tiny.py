"""Tiny, randomly initialised diffusers models built from configs with a seed, for tests and
docs (no hub access): 8x8 latents with 4 channels, one or two blocks, a few channels.

diffusers zero-initialises some output layers (a fresh model can output exactly 0), so every
weight is then perturbed by seeded Gaussian noise; the weights are random, not trained.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from difflab.interop.networks import DiTNet, PixArtNet, SD3Net, UNetNet, require_diffusers

SAMPLE_SIZE = 8
CHANNELS = 4
CONTEXT_DIM = 16
POOLED_DIM = 8
PERTURB_STD = 0.05


def _seeded(build: Any, seed: int) -> nn.Module:
    with torch.random.fork_rng():  # diffusers' init draws from the global generator
        torch.manual_seed(seed)
        model = build().eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * PERTURB_STD)
    return model


def tiny_unet(seed: int = 0, **config: Any) -> UNetNet:
    """An SD-1.x-shaped `UNet2DConditionModel`: two levels, cross-attention at the first;
    `config` overrides diffusers' config keys (e.g. block_out_channels)."""
    require_diffusers()
    from diffusers import UNet2DConditionModel

    return UNetNet(_seeded(lambda: UNet2DConditionModel(**{
        "sample_size": SAMPLE_SIZE, "in_channels": CHANNELS, "out_channels": CHANNELS,
        "block_out_channels": (8, 16), "layers_per_block": 1, "norm_num_groups": 4,
        "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
        "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"),
        "cross_attention_dim": CONTEXT_DIM, "attention_head_dim": 2, **config}), seed))


def tiny_pixart(seed: int = 0, **config: Any) -> PixArtNet:
    """A `PixArtTransformer2DModel`: patch 2, two blocks of width 16 (2 heads of 8);
    `config` overrides diffusers' config keys."""
    require_diffusers()
    from diffusers import PixArtTransformer2DModel

    return PixArtNet(_seeded(lambda: PixArtTransformer2DModel(**{
        "sample_size": SAMPLE_SIZE, "in_channels": CHANNELS, "out_channels": CHANNELS,
        "patch_size": 2, "num_layers": 2, "num_attention_heads": 2, "attention_head_dim": 8,
        "norm_num_groups": 4, "cross_attention_dim": 16, "caption_channels": CONTEXT_DIM,
        **config}), seed))


def tiny_sd3(seed: int = 0, **config: Any) -> SD3Net:
    """An `SD3Transformer2DModel`: patch 2, two joint blocks (the last drops the context);
    `config` overrides diffusers' config keys."""
    require_diffusers()
    from diffusers import SD3Transformer2DModel

    return SD3Net(_seeded(lambda: SD3Transformer2DModel(**{
        "sample_size": SAMPLE_SIZE, "in_channels": CHANNELS, "out_channels": CHANNELS,
        "patch_size": 2, "num_layers": 2, "num_attention_heads": 2, "attention_head_dim": 8,
        "joint_attention_dim": CONTEXT_DIM, "caption_projection_dim": 16,
        "pooled_projection_dim": POOLED_DIM, "pos_embed_max_size": SAMPLE_SIZE, **config}),
        seed))


def tiny_dit(seed: int = 0, **config: Any) -> DiTNet:
    """A class-conditional `DiTTransformer2DModel`: patch 2, two blocks of width 16, 10
    classes, learned variance (8 output channels) as in DiT-XL/2; `config` overrides."""
    require_diffusers()
    from diffusers import DiTTransformer2DModel

    return DiTNet(_seeded(lambda: DiTTransformer2DModel(**{
        "sample_size": SAMPLE_SIZE, "in_channels": CHANNELS, "out_channels": 2 * CHANNELS,
        "patch_size": 2, "num_layers": 2, "num_attention_heads": 2, "attention_head_dim": 8,
        "norm_num_groups": 4, "num_embeds_ada_norm": 10, **config}), seed))
