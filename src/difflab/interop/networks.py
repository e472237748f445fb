"""diffusers denoising models under difflab's network convention and hook contract.

`wrap(model)` returns an `nn.Module` called like a native difflab network,
`net(x, t, context=None, context_mask=None, pooled=None, y=None)` -> the raw prediction (eps, v
or flow velocity) with x's shape, so `process.denoiser(net)` makes it a denoiser for every
sampler and guidance wrapper (k-diffusion's `external.py` style of adapting other models). The
diffusers model stays whole at `net.model` (its state dict, `save_pretrained` and peft
adapters are untouched); learned-variance channels (PixArt, DiT) are dropped from the output.

Blocks, the way native models declare them (`difflab.models` docstring):
- PixArt and DiT: `net.blocks` is the diffusers `transformer_blocks` list itself; diffusers calls
  each as `h = block(h, **kwargs)`, which is already the DiT contract (hidden states in args[0],
  a tensor out), so the caches hook diffusers' own forward.
- SD3 and FLUX.1: `net.blocks[i]` adapts a joint block (called with keywords, returning
  (context, h); FLUX.1's double-stream blocks, then its single-stream ones) to the MMDiT
  contract `h, context = block(h, context, inputs)`; the forward around them is the diffusers
  one, restated over the model's own submodules.
- UNet2DConditionModel: `net.blocks = [down_0 .. down_{L-1}, mid, up_{L-1} .. up_0]` with
  `h, skips_i = down_i(h, inputs)`, `h = up_i(h, skips_i, inputs)` (`num_levels = L`), as the
  native UNet. diffusers keeps one flat list of skip tensors; level i's are the input of down_i
  (conv_in's output or the previous downsampler's) and its resnet outputs, which are exactly the
  len(resnets) + 1 tensors up block L-1-i pops.
Adapters hold their diffusers block without registering it a second time (the state dict keeps
diffusers' keys, once). A test pins each restated forward to diffusers' own output, bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from difflab.config import ConfigError
from difflab.registry import Registry

# diffusers class name -> wrapper class; `wrap` dispatches on it
WRAPPERS: Registry[type[nn.Module]] = Registry("diffusers model class")


def register_wrapper(class_name: str):
    """Register a wrapper for the diffusers model class named `class_name`."""
    return WRAPPERS.register(class_name)


def wrap(model: nn.Module, **options: Any) -> nn.Module:
    """The difflab network around a diffusers model (PixArt, DiT, SD3 or FLUX.1 transformer,
    UNet2DConditionModel); unknown classes raise naming the supported ones."""
    return WRAPPERS.get(type(model).__name__)(model, **options)


def _mask_bias(mask: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    """(B, T) bool, True = real token -> diffusers' additive bias (B, 1, T): 0 or -10000."""
    if mask is None:
        return None
    return ((1 - mask.to(dtype)) * -10000.0).unsqueeze(1)


class DiffusersNet(nn.Module):
    """Shared parts: the wrapped model, its input shape, the prediction's channels."""

    def __init__(self, model: nn.Module, image_channels: int | None = None) -> None:
        super().__init__()
        self.model = model
        cfg = model.config
        self.image_channels = int(image_channels or cfg.in_channels)
        out = int(image_channels or cfg.out_channels or cfg.in_channels)
        if out not in (self.image_channels, 2 * self.image_channels):
            raise ConfigError(f"{type(model).__name__} has out_channels={out}; valid: "
                              f"{self.image_channels} or {2 * self.image_channels} (learned "
                              "variance, whose second half is dropped)")

    @property
    def sample_size(self) -> int:
        size = self.model.config.sample_size
        return int(size[0] if isinstance(size, (tuple, list)) else size)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the samples the model was configured for."""
        return (self.image_channels, self.sample_size, self.sample_size)

    def prediction(self, out: Tensor) -> Tensor:
        """The model output without learned-variance channels: (B, C, H, W)."""
        return out[:, : self.image_channels]


@register_wrapper("PixArtTransformer2DModel")
class PixArtNet(DiffusersNet):
    """PixArt-alpha/Sigma ("PixArt-alpha", 2023): text tokens through cross-attention, adaLN-single;
    `vae_scale_factor` turns latent size into the pixel resolution of its size conditions."""

    def __init__(self, model: nn.Module, vae_scale_factor: int = 8) -> None:
        super().__init__(model)
        self.vae_scale_factor = vae_scale_factor

    @property
    def blocks(self) -> nn.ModuleList:
        return self.model.transformer_blocks

    @property
    def text_dim(self) -> int:
        return int(self.model.config.caption_channels)

    def forward(self, x: Tensor, t: Tensor, context: Tensor | None = None,
                context_mask: Tensor | None = None, pooled: Tensor | None = None,
                y: Tensor | None = None) -> Tensor:
        if context is None:
            raise ValueError("PixArt is text-conditioned: pass context (B, T, "
                             f"{self.model.config.caption_channels})")
        added = {"resolution": None, "aspect_ratio": None}
        if self.model.use_additional_conditions:  # PixArt-alpha 1024: size and aspect ratio
            B, (H, W) = x.shape[0], x.shape[-2:]
            s = self.vae_scale_factor
            added = {"resolution": x.new_tensor([[H * s, W * s]]).expand(B, 2),
                     "aspect_ratio": x.new_tensor([[H / W]]).expand(B, 1)}
        out = self.model(x, encoder_hidden_states=context, timestep=t.expand(x.shape[0]),
                         added_cond_kwargs=added, encoder_attention_mask=context_mask,
                         return_dict=False)[0]
        return self.prediction(out)


@register_wrapper("DiTTransformer2DModel")
class DiTNet(DiffusersNet):
    """Class-conditional DiT ("Scalable Diffusion Models with Transformers", 2023); y = None is
    the null class (index num_classes), the unconditional branch of guidance."""

    @property
    def blocks(self) -> nn.ModuleList:
        return self.model.transformer_blocks

    @property
    def num_classes(self) -> int:
        return int(self.model.config.num_embeds_ada_norm)

    def forward(self, x: Tensor, t: Tensor, context: Tensor | None = None,
                context_mask: Tensor | None = None, pooled: Tensor | None = None,
                y: Tensor | None = None) -> Tensor:
        B = x.shape[0]
        if y is None:
            y = torch.full((B,), self.num_classes, dtype=torch.long, device=x.device)
        out = self.model(x, timestep=t.expand(B), class_labels=y, return_dict=False)[0]
        return self.prediction(out)


class _Adapter(nn.Module):
    """A view of one diffusers block under a difflab block signature. The block is kept out of
    `_modules`: it is registered in the diffusers model already."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.__dict__["block"] = block

    def extra_repr(self) -> str:
        return type(self.block).__name__


class SD3Inputs(NamedTuple):
    """What every joint block of one SD3 pass shares besides the two streams."""

    temb: Tensor  # (B, D) timestep + pooled text embedding


class FluxInputs(NamedTuple):
    """What every FLUX.1 block of one pass shares besides the two streams."""

    temb: Tensor  # (B, D) timestep (+ guidance) + pooled text embedding
    image_rotary_emb: tuple[Tensor, Tensor]  # RoPE (cos, sin) over [text, image] tokens


class _JointBlock(_Adapter):
    """`h, context = block(h, context, inputs)` over diffusers' (context, h) = block(...), with
    the inputs' fields as keywords."""

    def forward(self, h: Tensor, context: Tensor | None, inputs: NamedTuple):
        context, h = self.block(hidden_states=h, encoder_hidden_states=context,
                                **inputs._asdict())
        return h, context


@register_wrapper("SD3Transformer2DModel")
class SD3Net(DiffusersNet):
    """SD3's MMDiT ("Scaling Rectified Flow Transformers...", 2024). SD3 takes no text mask
    (its pipeline feeds padded T5 states unmasked), so `context_mask` is not used."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        self.blocks = nn.ModuleList(_JointBlock(b) for b in model.transformer_blocks)

    @property
    def text_dim(self) -> int:
        return int(self.model.config.joint_attention_dim)

    @property
    def pooled_dim(self) -> int:
        return int(self.model.config.pooled_projection_dim)

    def forward(self, x: Tensor, t: Tensor, context: Tensor | None = None,
                context_mask: Tensor | None = None, pooled: Tensor | None = None,
                y: Tensor | None = None) -> Tensor:
        m, cfg = self.model, self.model.config
        if context is None or pooled is None:
            raise ValueError(f"SD3 needs context (B, T, {cfg.joint_attention_dim}) and pooled "
                             f"(B, {cfg.pooled_projection_dim}) text states")
        B, _, H, W = x.shape
        h = m.pos_embed(x).contiguous()  # (B, N, D), positions added
        inputs = SD3Inputs(m.time_text_embed(t.expand(B), pooled))
        ctx = m.context_embedder(context)  # (B, T, D)
        for block in self.blocks:
            h, ctx = block(h, ctx, inputs)
        h = m.proj_out(m.norm_out(h, inputs.temb))  # (B, N, p*p*C)
        p, C = cfg.patch_size, m.out_channels
        h = h.reshape(B, H // p, W // p, p, p, C)
        out = torch.einsum("nhwpqc->nchpwq", h).reshape(B, C, H, W)
        return self.prediction(out)


@register_wrapper("FluxTransformer2DModel")
class FluxNet(DiffusersNet):
    """FLUX.1's rectified-flow transformer (Black Forest Labs, 2024; double-stream MMDiT blocks,
    then single-stream blocks, 3-axis RoPE): latents (B, C, H, W) are packed into 2x2-patch
    tokens and back, as FLUX.1's pipeline does; `guidance` is the distilled guidance scale that
    FLUX.1-dev embeds (None for a model without guidance embeddings); `sample_size` is the
    latent size the model is used at (128: 1024 px). FLUX.1 takes no text mask."""

    def __init__(self, model: nn.Module, guidance: float | None = 3.5,
                 sample_size: int = 128) -> None:
        super().__init__(model, image_channels=int(model.config.in_channels) // 4)
        self.guidance = guidance if model.config.guidance_embeds else None
        self.latent_size = sample_size
        self.blocks = nn.ModuleList(_JointBlock(b) for b in [*model.transformer_blocks,
                                                              *model.single_transformer_blocks])

    @property
    def sample_size(self) -> int:
        return self.latent_size

    @property
    def text_dim(self) -> int:
        return int(self.model.config.joint_attention_dim)

    @property
    def pooled_dim(self) -> int:
        return int(self.model.config.pooled_projection_dim)

    def forward(self, x: Tensor, t: Tensor, context: Tensor | None = None,
                context_mask: Tensor | None = None, pooled: Tensor | None = None,
                y: Tensor | None = None) -> Tensor:
        m, cfg = self.model, self.model.config
        if context is None or pooled is None:
            raise ValueError(f"FLUX.1 needs context (B, T, {cfg.joint_attention_dim}) and "
                             f"pooled (B, {cfg.pooled_projection_dim}) text states")
        B, C, H, W = x.shape
        if H % 2 or W % 2:
            raise ValueError(f"H, W must be even (2x2 patches), got {(H, W)}")
        packed = x.view(B, C, H // 2, 2, W // 2, 2).permute(0, 2, 4, 1, 3, 5)
        h = m.x_embedder(packed.reshape(B, H * W // 4, C * 4))  # (B, N, D)
        # the pipeline hands the model t in [0, 1], which the model scales by 1000
        timestep = (t.expand(B) / 1000).to(h.dtype) * 1000
        if self.guidance is None:
            temb = m.time_text_embed(timestep, pooled)
        else:
            guidance = x.new_full((B,), self.guidance).to(h.dtype) * 1000
            temb = m.time_text_embed(timestep, guidance, pooled)
        ctx = m.context_embedder(context)  # (B, T, D)
        ids = torch.zeros(H // 2, W // 2, 3, device=x.device, dtype=x.dtype)
        ids[..., 1] += torch.arange(H // 2, device=x.device)[:, None]  # row
        ids[..., 2] += torch.arange(W // 2, device=x.device)[None, :]  # column
        text_ids = torch.zeros(ctx.shape[1], 3, device=x.device, dtype=x.dtype)
        inputs = FluxInputs(temb, m.pos_embed(torch.cat([text_ids, ids.reshape(-1, 3)])))
        for block in self.blocks:
            h, ctx = block(h, ctx, inputs)
        out = m.proj_out(m.norm_out(h, temb))  # (B, N, 4 C)
        out = out.view(B, H // 2, W // 2, C, 2, 2).permute(0, 3, 1, 4, 2, 5)
        return out.reshape(B, C, H, W)


class UNetInputs(NamedTuple):
    """What every UNet stage of one pass shares besides the feature maps."""

    emb: Tensor  # (B, E) time (+ class, + added) embedding
    context: Tensor | None  # (B, T, D) text states
    mask: Tensor | None  # (B, 1, T) additive attention bias


def _cross_kwargs(block: nn.Module, inputs: UNetInputs) -> dict[str, Any]:
    if not getattr(block, "has_cross_attention", False):
        return {}
    return {"encoder_hidden_states": inputs.context, "encoder_attention_mask": inputs.mask}


class _DownStage(_Adapter):
    """`h, skips = down_i(h, inputs)`: skips = [input, resnet outputs] (what up_i consumes)."""

    def forward(self, h: Tensor, inputs: UNetInputs):
        out, res = self.block(hidden_states=h, temb=inputs.emb,
                              **_cross_kwargs(self.block, inputs))
        return out, [h, *res[: len(self.block.resnets)]]


class _MidStage(_Adapter):
    def forward(self, h: Tensor, inputs: UNetInputs) -> Tensor:
        return self.block(h, inputs.emb, **_cross_kwargs(self.block, inputs))


class _UpStage(_Adapter):
    """`h = up_i(h, skips_i, inputs)`; diffusers pops the skips from the end."""

    def forward(self, h: Tensor, skips: Sequence[Tensor], inputs: UNetInputs) -> Tensor:
        return self.block(hidden_states=h, temb=inputs.emb, res_hidden_states_tuple=tuple(skips),
                          upsample_size=None, **_cross_kwargs(self.block, inputs))


def _check_unet(model: nn.Module) -> None:
    cfg, name = model.config, type(model).__name__
    if model.mid_block is None:
        raise ConfigError(f"{name} has mid_block_type=None; the stage list needs a mid block")
    if cfg.addition_embed_type not in (None, "text_time"):
        raise ConfigError(f"{name}: addition_embed_type={cfg.addition_embed_type!r} is not "
                          "wrapped; valid: None, 'text_time' (SDXL)")
    if cfg.encoder_hid_dim_type not in (None, "text_proj"):
        raise ConfigError(f"{name}: encoder_hid_dim_type={cfg.encoder_hid_dim_type!r} is not "
                          "wrapped; valid: None, 'text_proj'")
    downs, ups = model.down_blocks, model.up_blocks
    L = len(downs)
    bad = [i for i in range(L) if len(ups[L - 1 - i].resnets) != len(downs[i].resnets) + 1]
    if len(ups) != L or bad:
        raise ConfigError(f"{name}: up block of level {bad} does not consume its down block's "
                          "skips (len(resnets) + 1); only the standard layout is wrapped")


@register_wrapper("UNet2DConditionModel")
class UNetNet(DiffusersNet):
    """SD-1.x/2.x/XL's UNet ("High-Resolution Image Synthesis with Latent Diffusion Models",
    2022); SDXL's added conditions take `pooled` and the fixed `time_ids` (original size, crop
    top-left, target size) given here."""

    def __init__(self, model: nn.Module, time_ids: Sequence[float] | None = None) -> None:
        super().__init__(model)
        _check_unet(model)
        if model.config.addition_embed_type == "text_time" and time_ids is None:
            raise ConfigError("an SDXL-style UNet needs time_ids (6 numbers: original size, "
                              "crop top-left, target size), e.g. (1024, 1024, 0, 0, 1024, 1024)")
        self.time_ids = None if time_ids is None else torch.tensor([list(time_ids)],
                                                                   dtype=torch.float32)
        self.num_levels = len(model.down_blocks)
        L = self.num_levels
        self.blocks = nn.ModuleList([*(_DownStage(b) for b in model.down_blocks),
                                     _MidStage(model.mid_block),
                                     *(_UpStage(model.up_blocks[L - 1 - i])
                                       for i in reversed(range(L)))])

    @property
    def text_dim(self) -> int:
        return int(self.model.config.cross_attention_dim)

    def _embedding(self, x: Tensor, t: Tensor, context: Tensor | None, pooled: Tensor | None,
                   y: Tensor | None) -> Tensor:
        """diffusers' time, class and added embeddings, (B, E)."""
        m = self.model
        emb = m.time_embedding(m.get_time_embed(sample=x, timestep=t), None)
        class_emb = m.get_class_embed(sample=x, class_labels=y)
        if class_emb is not None:
            emb = torch.cat([emb, class_emb], -1) if m.config.class_embeddings_concat \
                else emb + class_emb
        if m.config.addition_embed_type == "text_time":
            if pooled is None:
                raise ValueError("this SDXL-style UNet needs pooled text embeddings")
            time_ids = self.time_ids.to(x.device, x.dtype).expand(x.shape[0], -1)
            emb = emb + m.get_aug_embed(emb=emb, encoder_hidden_states=context,
                                        added_cond_kwargs={"text_embeds": pooled,
                                                           "time_ids": time_ids})
        return m.time_embed_act(emb) if m.time_embed_act is not None else emb

    def forward(self, x: Tensor, t: Tensor, context: Tensor | None = None,
                context_mask: Tensor | None = None, pooled: Tensor | None = None,
                y: Tensor | None = None) -> Tensor:
        m, L = self.model, self.num_levels
        multiple = 2 ** m.num_upsamplers
        if x.shape[-2] % multiple or x.shape[-1] % multiple:
            raise ValueError(f"H, W must be multiples of {multiple}, got {tuple(x.shape[-2:])}")
        if m.config.center_input_sample:
            x = 2 * x - 1.0
        emb = self._embedding(x, t, context, pooled, y)
        context = m.process_encoder_hidden_states(encoder_hidden_states=context,
                                                  added_cond_kwargs={})
        inputs = UNetInputs(emb, context, _mask_bias(context_mask, x.dtype))
        h, all_skips = m.conv_in(x), []
        for stage in self.blocks[:L]:
            h, skips = stage(h, inputs)
            all_skips.append(skips)
        h = self.blocks[L](h, inputs)
        for stage, skips in zip(self.blocks[L + 1:], reversed(all_skips), strict=True):
            h = stage(h, skips, inputs)
        if m.conv_norm_out is not None:
            h = m.conv_act(m.conv_norm_out(h))
        return self.prediction(m.conv_out(h))
