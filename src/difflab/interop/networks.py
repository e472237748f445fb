"""diffusers denoising networks called the way difflab calls its own: `net(x, t, context=...,
context_mask=..., pooled=...) -> raw output` (eps or velocity), t the diffusers timestep.

Conventions mapped here (the denoiser wrappers in `denoisers.py` add the scalings):
- `context` (B, T, D) goes to `encoder_hidden_states`; `context_mask` (B, T), True = attend,
  goes to `encoder_attention_mask` as 1 / 0 (diffusers turns it into an additive bias).
- PixArt with a learned variance (out_channels = 2 * in_channels) returns the first half, as
  diffusers' PixArt pipeline does; SD3 takes `pooled` as `pooled_projections`.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import torch
from torch import Tensor, nn

from difflab.config import ConfigError
from difflab.models.layers import check_image

INSTALL_HINT = "diffusers is not installed; install it with `pip install difflab[diffusers]`"


def require_diffusers() -> None:
    """Raise ConfigError with the install command when diffusers is absent."""
    if importlib.util.find_spec("diffusers") is None:
        raise ConfigError(INSTALL_HINT)


def _mask(context_mask: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    return None if context_mask is None else context_mask.to(dtype)


class _Stage(nn.Module):
    """One diffusers UNet stage called positionally, as difflab's UNet stages are:
    `h, skips = down(h, emb, context, mask)`, `h = mid(h, emb, context, mask)`,
    `h = up(h, skips, emb, context, mask)`. The stage is referenced, not registered, so the
    wrapper's state dict holds each weight once (under `model.`)."""

    def __init__(self, stage: nn.Module, kind: str) -> None:
        super().__init__()
        object.__setattr__(self, "stage", stage)
        self.kind = kind
        self.cross = bool(getattr(stage, "has_cross_attention", False))

    def forward(self, h: Tensor, *rest: Any) -> Any:
        skips, (emb, context, mask) = (rest[0], rest[1:]) if self.kind == "up" else (None, rest)
        kw: dict[str, Any] = {}
        if self.cross:
            kw = {"encoder_hidden_states": context, "encoder_attention_mask": mask}
        if self.kind == "down":
            h, res = self.stage(hidden_states=h, temb=emb, **kw)
            return h, list(res)
        if self.kind == "mid":
            return self.stage(h, emb, **kw)
        return self.stage(hidden_states=h, temb=emb, res_hidden_states_tuple=tuple(skips), **kw)


UNSUPPORTED_UNET = ("class_embed_type", "addition_embed_type", "encoder_hid_dim_type",
                    "time_cond_proj_dim")


class UNetNet(nn.Module):
    """A diffusers `UNet2DConditionModel` (SD-1.x/2.x form) as a difflab network (eps / v).

    Its forward is diffusers' forward for this form (no class, addition or hint embeddings,
    no ControlNet residuals), run stage by stage so that `blocks = [down_0 .. down_{L-1}, mid,
    up_{L-1} .. up_0]` carry hooks as a native UNet's do (DeepCache, encoder propagation).
    diffusers' skip list is flat: up stage k takes the last `len(resnets)` entries, i.e. the
    resnet outputs of its own level plus the downsampler output of the level above (conv_in's
    for level 0); the slices are fixed at build time, and a stage that returns no skips (a
    skipped deep stage) leaves None in its slots, read only by stages that are skipped too."""

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        bad = [k for k in UNSUPPORTED_UNET if unet.config.get(k) is not None]
        if bad or unet.config.get("center_input_sample") or unet.mid_block is None:
            raise ConfigError(f"UNet2DConditionModel with {', '.join(bad) or 'this config'} is "
                              "not supported; supported: the SD-1.x/2.x form (text "
                              "cross-attention only, with a mid block)")
        self.model = unet
        stages = [*(_Stage(b, "down") for b in unet.down_blocks), _Stage(unet.mid_block, "mid"),
                  *(_Stage(b, "up") for b in unet.up_blocks)]
        self.blocks = nn.ModuleList(stages)
        self.num_levels = len(unet.down_blocks)
        # skips per down stage (resnets + downsampler) and per up stage (its resnets)
        self.down_counts = [len(b.resnets) + len(b.downsamplers or []) for b in unet.down_blocks]
        self.up_counts = [len(b.resnets) for b in unet.up_blocks]

    def forward(self, x: Tensor, t: Tensor, context: Tensor | None = None,
                context_mask: Tensor | None = None, pooled: Tensor | None = None,
                y: Tensor | None = None) -> Tensor:
        unet, L = self.model, self.num_levels
        check_image(x, unet.config.in_channels, 2 ** unet.num_upsamplers)
        mask = None
        if context_mask is not None:  # (B, 1, T) additive bias, as diffusers builds it
            mask = ((1 - context_mask.to(x.dtype)) * -10000.0).unsqueeze(1)
        emb = unet.time_embedding(unet.get_time_embed(sample=x, timestep=t), None)
        if unet.time_embed_act is not None:
            emb = unet.time_embed_act(emb)
        h = unet.conv_in(x)
        flat: list[Tensor | None] = [h]
        for stage, count in zip(self.blocks[:L], self.down_counts, strict=True):
            h, skips = stage(h, emb, context, mask)
            flat += skips + [None] * (count - len(skips))
        h = self.blocks[L](h, emb, context, mask)
        for stage, count in zip(self.blocks[L + 1:], self.up_counts, strict=True):
            flat, skips = flat[:-count], flat[-count:]
            h = stage(h, skips, emb, context, mask)
        if unet.conv_norm_out is not None:
            h = unet.conv_act(unet.conv_norm_out(h))
        return unet.conv_out(h)


class PixArtNet(nn.Module):
    """A diffusers `PixArtTransformer2DModel` as a difflab network; its transformer blocks map
    h -> h with h passed first, so `blocks` are diffusers' own (the DiT block contract),
    referenced rather than registered again so the state dict holds each weight once."""

    def __init__(self, transformer: nn.Module) -> None:
        super().__init__()
        self.model = transformer
        object.__setattr__(self, "blocks", transformer.transformer_blocks)

    def forward(self, x: Tensor, t: Tensor, context: Tensor | None = None,
                context_mask: Tensor | None = None, pooled: Tensor | None = None,
                y: Tensor | None = None) -> Tensor:
        out = self.model(x, encoder_hidden_states=context, timestep=t,
                         encoder_attention_mask=_mask(context_mask, x.dtype),
                         added_cond_kwargs={"resolution": None, "aspect_ratio": None}).sample
        if out.shape[1] == 2 * x.shape[1]:  # learned variance: keep the eps half
            out = out[:, : x.shape[1]]
        return out


class DiTNet(nn.Module):
    """A diffusers `DiTTransformer2DModel` (class-conditional) as a difflab network: `y` (B,)
    class labels go to `class_labels`; blocks are diffusers' own, h first (the DiT contract)
    ("Scalable Diffusion Models with Transformers", 2023)."""

    def __init__(self, transformer: nn.Module) -> None:
        super().__init__()
        self.model = transformer
        object.__setattr__(self, "blocks", transformer.transformer_blocks)

    def forward(self, x: Tensor, t: Tensor, context: Tensor | None = None,
                context_mask: Tensor | None = None, pooled: Tensor | None = None,
                y: Tensor | None = None) -> Tensor:
        if y is None:
            raise ConfigError("DiTTransformer2DModel is class-conditional: pass y (B,) labels")
        out = self.model(x, timestep=t, class_labels=y).sample
        if out.shape[1] == 2 * x.shape[1]:  # learned variance: keep the eps half
            out = out[:, : x.shape[1]]
        return out


class _JointBlock(nn.Module):
    """A diffusers `JointTransformerBlock` called as a difflab MMDiT block:
    `h, context = block(h, context, temb)`, context None after the last (context_pre_only)
    block; diffusers' own call is by keyword and returns (context, h)."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        object.__setattr__(self, "block", block)  # referenced, not registered (see _Stage)

    def forward(self, h: Tensor, context: Tensor, temb: Tensor) -> tuple[Tensor, Tensor | None]:
        context, h = self.block(hidden_states=h, encoder_hidden_states=context, temb=temb)
        return h, context


class SD3Net(nn.Module):
    """A diffusers `SD3Transformer2DModel` as a difflab network (flow velocity output).

    Its forward is diffusers' forward (without ControlNet residuals, skip layers or IP-adapter),
    run block by block through `blocks` so that transformer caches hook them as on a native
    MMDiT ("Scaling Rectified Flow Transformers", 2024)."""

    def __init__(self, transformer: nn.Module) -> None:
        super().__init__()
        self.model = transformer
        self.blocks = nn.ModuleList(_JointBlock(b) for b in transformer.transformer_blocks)

    def forward(self, x: Tensor, t: Tensor, context: Tensor | None = None,
                context_mask: Tensor | None = None, pooled: Tensor | None = None,
                y: Tensor | None = None) -> Tensor:
        if context_mask is not None and not bool(context_mask.all()):
            raise ConfigError("SD3Transformer2DModel has no text attention mask; pass full "
                              "context or context_mask=None")
        if context is None or pooled is None:
            raise ConfigError("SD3Transformer2DModel needs context (B, T, D) and pooled (B, P)")
        tr, p = self.model, self.model.config.patch_size
        check_image(x, tr.config.in_channels, p)
        H, W = x.shape[-2] // p, x.shape[-1] // p
        h = tr.pos_embed(x)  # (B, H * W, D)
        temb = tr.time_text_embed(t, pooled)
        ctx = tr.context_embedder(context)
        for block in self.blocks:
            h, ctx = block(h, ctx, temb)
        h = tr.proj_out(tr.norm_out(h, temb))  # (B, H * W, p * p * C)
        h = h.reshape(h.shape[0], H, W, p, p, tr.out_channels)
        return torch.einsum("nhwpqc->nchpwq", h).reshape(h.shape[0], tr.out_channels, H * p, W * p)
