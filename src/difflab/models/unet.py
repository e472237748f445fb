"""The latent-diffusion UNet ("High-Resolution Image Synthesis with Latent Diffusion Models", 2022):
ResNet blocks with the time embedding added, spatial transformers (self- and cross-attention) at
chosen levels, down/up sampling and skip connections.

Stage structure (so caches such as DeepCache, 2023, can run only the shallow path):
`model.blocks = [down_0, ..., down_{L-1}, mid, up_{L-1}, ..., up_0]` with
`h, skips_i = down_i(h, inputs)`, `h = mid(h, inputs)`, `h = up_i(h, skips_i, inputs)`:
each up stage consumes exactly the skips of the down stage at its own level, deepest first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from difflab.config import ConfigError
from difflab.limits import check_int
from difflab.models.base import (
    MODELS,
    add_presets,
    check_choice,
    check_divisible,
    check_minimums,
)
from difflab.models.layers import (
    ATTENTION_BACKENDS,
    CrossAttention,
    Mlp,
    SelfAttention,
    TimestepEmbedder,
    check_image,
    key_padding_mask,
    missing_context,
)


@dataclass(frozen=True)
class UNetConfig:
    """A UNet; level i has `base_channels * channel_mult[i]` channels at resolution size / 2^i."""

    arch: ClassVar[str] = "unet"
    input_size: int = 32
    in_channels: int = 3
    base_channels: int = 64
    channel_mult: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 1
    attention_levels: tuple[int, ...] = (1, 2)  # levels with a spatial transformer
    num_heads: int = 4
    transformer_depth: int = 1
    num_classes: int = 0  # > 0: labels 0..num_classes-1 plus a null label for CFG
    context_dim: int = 0  # > 0: cross-attention to (B, T, context_dim) text tokens
    pooled_dim: int = 0  # > 0: pooled (B, pooled_dim) text vector added to the t embedding
    norm_groups: int = 32
    attention: Literal["auto", "sdpa", "math"] = "auto"

    def __post_init__(self) -> None:
        check_minimums(self, {"in_channels": 1, "base_channels": 1, "num_heads": 1,
                              "transformer_depth": 1, "num_classes": 0, "context_dim": 0,
                              "pooled_dim": 0, "norm_groups": 1})
        for i, mult in enumerate(self.channel_mult):
            check_int(f"channel_mult[{i}]", mult, 1)
        check_choice("attention", self.attention, ATTENTION_BACKENDS)
        levels = len(self.channel_mult)
        if levels == 0 or self.num_res_blocks < 1:
            raise ConfigError("channel_mult needs at least one level and num_res_blocks >= 1")
        bad = [lvl for lvl in self.attention_levels if not 0 <= lvl < levels]
        if bad:
            raise ConfigError(f"attention_levels {bad} out of range; valid: 0..{levels - 1}")
        check_divisible("input_size", self.input_size, "2^(levels-1)", 2 ** (levels - 1))
        for ch in self.channels:
            check_divisible("level channels", ch, "norm_groups", self.norm_groups)
            check_divisible("level channels", ch, "num_heads", self.num_heads)

    @property
    def channels(self) -> list[int]:
        return [self.base_channels * m for m in self.channel_mult]

    @property
    def emb_dim(self) -> int:
        return 4 * self.base_channels


class UNetInputs(NamedTuple):
    """What every stage of one forward pass shares besides the feature maps."""

    emb: torch.Tensor  # (B, E) time (+ class, + pooled text) embedding
    context: torch.Tensor | None  # (B, T, context_dim)
    context_mask: torch.Tensor | None  # (B, 1, 1, T) bool, True = attend


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, the embedding added in between ("DDPM", 2020)."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, groups: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb_proj = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, out_ch))
        self.norm2 = nn.GroupNorm(groups, out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))  # (B, out, H, W)
        h = h + self.emb_proj(emb)[:, :, None, None]
        return self.skip(x) + self.conv2(F.silu(self.norm2(h)))


class TransformerBlock(nn.Module):
    """Pre-norm self-attention, optional cross-attention to text, MLP."""

    def __init__(self, ch: int, cfg: UNetConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(ch)
        self.attn = SelfAttention(ch, cfg.num_heads, backend=cfg.attention)
        self.cross = None
        if cfg.context_dim:
            self.norm2 = nn.LayerNorm(ch)
            self.cross = CrossAttention(ch, cfg.context_dim, cfg.num_heads, backend=cfg.attention)
        self.norm3 = nn.LayerNorm(ch)
        self.mlp = Mlp(ch, 4 * ch)

    def forward(self, h: torch.Tensor, inputs: UNetInputs) -> torch.Tensor:
        h = h + self.attn(self.norm1(h))
        if self.cross is not None:
            h = h + self.cross(self.norm2(h), inputs.context, inputs.context_mask)
        return h + self.mlp(self.norm3(h))


class SpatialTransformer(nn.Module):
    """Feature map -> tokens -> transformer blocks -> feature map, residual (LDM, 2022)."""

    def __init__(self, ch: int, cfg: UNetConfig) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(cfg.norm_groups, ch)
        self.proj_in = nn.Linear(ch, ch)
        self.blocks = nn.ModuleList(TransformerBlock(ch, cfg) for _ in range(cfg.transformer_depth))
        self.proj_out = nn.Linear(ch, ch)

    def forward(self, x: torch.Tensor, inputs: UNetInputs) -> torch.Tensor:
        B, C, H, W = x.shape
        h = self.proj_in(self.norm(x).flatten(2).transpose(1, 2))  # (B, H*W, C)
        for block in self.blocks:
            h = block(h, inputs)
        return x + self.proj_out(h).transpose(1, 2).reshape(B, C, H, W)


class Layer(nn.Module):
    """A ResBlock followed by a spatial transformer where the level has attention."""

    def __init__(self, in_ch: int, out_ch: int, attention: bool, cfg: UNetConfig) -> None:
        super().__init__()
        self.res = ResBlock(in_ch, out_ch, cfg.emb_dim, cfg.norm_groups)
        self.attn = SpatialTransformer(out_ch, cfg) if attention else None

    def forward(self, h: torch.Tensor, inputs: UNetInputs) -> torch.Tensor:
        h = self.res(h, inputs.emb)
        return self.attn(h, inputs) if self.attn is not None else h


class DownStage(nn.Module):
    """`num_res_blocks` layers at one resolution (each output is a skip), then a strided conv."""

    def __init__(self, in_ch: int, level: int, cfg: UNetConfig) -> None:
        super().__init__()
        ch, attention = cfg.channels[level], level in cfg.attention_levels
        self.layers = nn.ModuleList(
            Layer(in_ch if i == 0 else ch, ch, attention, cfg) for i in range(cfg.num_res_blocks)
        )
        last = level == len(cfg.channel_mult) - 1
        self.downsample = None if last else nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, h: torch.Tensor, inputs: UNetInputs):
        skips = []
        for layer in self.layers:
            h = layer(h, inputs)
            skips.append(h)  # (B, ch, r, r)
        if self.downsample is not None:
            h = self.downsample(h)  # (B, ch, r/2, r/2)
        return h, skips


class MidBlock(nn.Module):
    """ResBlock, spatial transformer, ResBlock at the lowest resolution."""

    def __init__(self, ch: int, cfg: UNetConfig) -> None:
        super().__init__()
        self.res1 = ResBlock(ch, ch, cfg.emb_dim, cfg.norm_groups)
        self.attn = SpatialTransformer(ch, cfg)
        self.res2 = ResBlock(ch, ch, cfg.emb_dim, cfg.norm_groups)

    def forward(self, h: torch.Tensor, inputs: UNetInputs) -> torch.Tensor:
        return self.res2(self.attn(self.res1(h, inputs.emb), inputs), inputs.emb)


class UpStage(nn.Module):
    """Upsample (mirroring its down stage's strided conv), then layers fed [h, skip] pairs."""

    def __init__(self, in_ch: int, level: int, cfg: UNetConfig) -> None:
        super().__init__()
        ch, attention = cfg.channels[level], level in cfg.attention_levels
        last = level == len(cfg.channel_mult) - 1
        self.upsample = None if last else nn.Conv2d(in_ch, in_ch, 3, padding=1)
        self.layers = nn.ModuleList(
            Layer((in_ch if i == 0 else ch) + ch, ch, attention, cfg)
            for i in range(cfg.num_res_blocks)
        )

    def forward(self, h: torch.Tensor, skips: list[torch.Tensor], inputs: UNetInputs):
        if self.upsample is not None:
            h = self.upsample(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        for layer, skip in zip(self.layers, reversed(skips), strict=True):
            h = layer(torch.cat([h, skip], dim=1), inputs)
        return h


@MODELS.register("unet")
class UNet(nn.Module):
    """LDM UNet denoiser: `model(x, t, context, context_mask, pooled, y) -> (B, C, H, W)`."""

    config_class = UNetConfig

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        cfg, chs, levels = config, config.channels, len(config.channel_mult)
        self.config, self.num_levels = cfg, levels
        self.t_embedder = TimestepEmbedder(cfg.emb_dim, freq_dim=cfg.base_channels)
        self.y_embedder = (
            nn.Embedding(cfg.num_classes + 1, cfg.emb_dim) if cfg.num_classes else None
        )
        self.pooled_embedder = (
            nn.Sequential(nn.Linear(cfg.pooled_dim, cfg.emb_dim), nn.SiLU(),
                          nn.Linear(cfg.emb_dim, cfg.emb_dim))
            if cfg.pooled_dim else None
        )
        self.conv_in = nn.Conv2d(cfg.in_channels, chs[0], 3, padding=1)
        down = [DownStage(chs[max(i - 1, 0)], i, cfg) for i in range(levels)]
        up = [UpStage(chs[min(i + 1, levels - 1)], i, cfg) for i in reversed(range(levels))]
        # one ModuleList holds every stage, so hooks find them at model.blocks[i]
        self.blocks = nn.ModuleList([*down, MidBlock(chs[-1], cfg), *up])
        self.norm_out = nn.GroupNorm(cfg.norm_groups, chs[0])
        self.conv_out = nn.Conv2d(chs[0], cfg.in_channels, 3, padding=1)
        self.initialize_weights()

    @property
    def down_stages(self) -> list[DownStage]:
        return list(self.blocks[: self.num_levels])

    @property
    def mid_block(self) -> MidBlock:
        return self.blocks[self.num_levels]

    @property
    def up_stages(self) -> list[UpStage]:
        """Deepest first: `up_stages[j]` consumes the skips of `down_stages[L - 1 - j]`."""
        return list(self.blocks[self.num_levels + 1:])

    def initialize_weights(self) -> None:
        """Zero the last conv of each ResBlock, each transformer's output and the model output,
        so every residual branch and the prediction start at zero (LDM's `zero_module`)."""
        zeroed = [self.conv_out]
        for m in self.modules():
            if isinstance(m, ResBlock):
                zeroed.append(m.conv2)
            elif isinstance(m, SpatialTransformer):
                zeroed.append(m.proj_out)
        for layer in zeroed:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def embed(self, x, t, context=None, context_mask=None, pooled=None, y=None) -> UNetInputs:
        """The shared `UNetInputs` of one forward pass."""
        cfg, B = self.config, x.shape[0]
        emb = self.t_embedder(t.expand(B) if t.numel() == 1 else t)  # (B, E)
        if self.y_embedder is not None:
            labels = y if y is not None else torch.full((B,), cfg.num_classes, device=x.device)
            emb = emb + self.y_embedder(labels)
        elif y is not None:
            raise ValueError("got class labels y but this model has num_classes=0")
        if self.pooled_embedder is not None:
            if pooled is None:
                raise ValueError(f"this model needs pooled (B, {cfg.pooled_dim}) text vectors")
            emb = emb + self.pooled_embedder(pooled)
        if cfg.context_dim and context is None:
            raise missing_context(cfg.context_dim)
        mask = key_padding_mask(context_mask) if context_mask is not None else None
        return UNetInputs(emb, context if cfg.context_dim else None, mask)

    def forward(self, x, t, context=None, context_mask=None, pooled=None, y=None) -> torch.Tensor:
        cfg = self.config
        check_image(x, cfg.in_channels, 2 ** (self.num_levels - 1))
        inputs = self.embed(x, t, context, context_mask, pooled, y)
        h, all_skips = self.conv_in(x), []
        for stage in self.down_stages:
            h, skips = stage(h, inputs)
            all_skips.append(skips)
        h = self.mid_block(h, inputs)
        for stage, skips in zip(self.up_stages, reversed(all_skips), strict=True):
            h = stage(h, skips, inputs)
        return self.conv_out(F.silu(self.norm_out(h)))

    @staticmethod
    def flops_per_image(cfg: UNetConfig, context_len: int = 32) -> int:
        """Analytic forward FLOPs per image (2 per multiply-add; convs, matmuls, attention)."""
        E, T, chs = cfg.emb_dim, context_len, cfg.channels

        def conv(res: int, cin: int, cout: int, k: int = 3) -> int:
            return 2 * res * res * cout * cin * k * k

        def res_block(res: int, cin: int, cout: int) -> int:
            skip = conv(res, cin, cout, 1) if cin != cout else 0
            return conv(res, cin, cout) + 2 * E * cout + conv(res, cout, cout) + skip

        def transformer(res: int, ch: int) -> int:
            L = res * res
            f = 4 * L * ch * ch  # proj_in, proj_out
            per = 2 * L * 3 * ch * ch + 4 * L * L * ch + 2 * L * ch * ch + 16 * L * ch * ch
            if cfg.context_dim:
                per += 4 * L * ch * ch + 4 * T * cfg.context_dim * ch + 4 * L * T * ch
            return f + cfg.transformer_depth * per

        def layer(res: int, cin: int, cout: int, level: int) -> int:
            attn = transformer(res, cout) if level in cfg.attention_levels else 0
            return res_block(res, cin, cout) + attn

        levels = len(chs)
        f = 2 * (cfg.base_channels * E + E * E) + conv(cfg.input_size, cfg.in_channels, chs[0])
        f += 2 * (cfg.pooled_dim * E + E * E) if cfg.pooled_dim else 0
        for i in range(levels):
            res, cin = cfg.input_size // 2**i, chs[max(i - 1, 0)]
            for j in range(cfg.num_res_blocks):
                f += layer(res, cin if j == 0 else chs[i], chs[i], i)
            f += conv(res // 2, chs[i], chs[i]) if i < levels - 1 else 0
        low = cfg.input_size // 2 ** (levels - 1)
        f += 2 * res_block(low, chs[-1], chs[-1]) + transformer(low, chs[-1])
        for i in reversed(range(levels)):
            res, cin = cfg.input_size // 2**i, chs[min(i + 1, levels - 1)]
            f += conv(res, cin, cin) if i < levels - 1 else 0
            for j in range(cfg.num_res_blocks):
                f += layer(res, (cin if j == 0 else chs[i]) + chs[i], chs[i], i)
        return f + conv(cfg.input_size, chs[0], cfg.in_channels)


add_presets({
    "unet-tiny": UNetConfig(base_channels=32, channel_mult=(1, 2), attention_levels=(1,),
                            context_dim=384),
    "unet-s": UNetConfig(base_channels=64, channel_mult=(1, 2, 2), num_res_blocks=2,
                         attention_levels=(1, 2), context_dim=384),
})
