"""Native networks <-> diffusers models, where the two architectures are the same function.

Which match (a weight-for-weight map, outputs equal to float32 rounding):
- PixArt-form DiT (`modulation="adaln_single"`, text cross-attention) <-> diffusers'
  `PixArtTransformer2DModel`, given PixArt-alpha's own choices: `mlp_act="gelu_tanh"`,
  `cross_norm=False`, `sincos_order="wh"`, sin-cos positions, `mlp_ratio=4`, and none of class
  labels, a pooled vector, QK-norm, key/value compression or a patch mixer. Learned-variance
  output channels of a diffusers checkpoint are dropped on import (samplers never read them).
- MMDiT <-> diffusers' `SD3Transformer2DModel`, given `mlp_act="gelu_tanh"`, `mlp_ratio=4`, a
  pooled vector and `drop_last_context`; the position table (sin-cos or learned) travels in
  SD3's stored `pos_embed` buffer, so an SD3 checkpoint imports with a learned table unless its
  table is exactly difflab's sin-cos.
Which do not, and why:
- class-conditional DiT (adaLN-Zero) vs `DiTTransformer2DModel`: diffusers embeds t with a
  frequency shift of 1 (`downscale_freq_shift=1`; difflab 0) and a tanh GELU, and keeps a copy
  of the t and label embedders in every block; no native config reproduces that.
- UNet vs `UNet2DConditionModel`: different stages (diffusers' skips include conv_in's and each
  downsampler's output, its up blocks hold one more resnet and upsample last, its attention
  blocks have their own norms and projections); there is no weight map between them.
Positions and text masks agree at the configured size: diffusers recomputes PixArt's sin-cos
table (rescaled) and crops SD3's at other sizes, and SD3 ignores text masks.

A map is a list of `Link`s: a native tensor equals the diffusers tensors it names,
concatenated along dim 0 (a fused QKV is three diffusers projections), with the two halves
swapped where diffusers orders (scale, shift) and difflab (shift, scale). Both directions read
the same list, so native -> diffusers -> native gives back every native tensor bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import Tensor, nn

from difflab.config import ConfigError
from difflab.registry import Registry


@dataclass(frozen=True)
class Link:
    """native tensor (a module's weight/bias, or a parameter) = cat(diffusers tensors, dim 0)."""

    native: str
    diffusers: tuple[str, ...]
    swap: bool = False  # the two halves in the other order (diffusers' scale, shift)


@dataclass(frozen=True)
class Converter:
    """How one native architecture and one diffusers class correspond."""

    arch: str  # native architecture ("dit", "mmdit")
    diffusers_class: str
    check: Callable[[Any], None]  # raises ConfigError naming each mismatch
    diffusers_config: Callable[[Any], dict[str, Any]]
    native_config: Callable[[nn.Module], Any]  # from a diffusers model (refuses mismatches)
    links: Callable[[Any], list[Link]]
    unused: Callable[[Any], set[str]]  # diffusers tensors with no native counterpart
    positions: Callable[[nn.Module, nn.Module], None]  # copy native positions into diffusers
    tensors: Callable[[nn.Module], dict[str, Tensor]]  # a diffusers model's tensors to import


CONVERTERS: Registry[Converter] = Registry("exportable architecture")
BY_DIFFUSERS: dict[str, str] = {}  # diffusers class name -> native arch


def register_converter(conv: Converter) -> Converter:
    CONVERTERS.register(conv.arch)(conv)
    BY_DIFFUSERS[conv.diffusers_class] = conv.arch
    return conv


def _mismatches(cfg: Any, wanted: dict[str, Any], what: str) -> None:
    bad = [f"{k}={getattr(cfg, k)!r} (needs {v!r})" for k, v in wanted.items()
           if getattr(cfg, k) != v]
    if bad:
        raise ConfigError(f"this {type(cfg).__name__} is not {what}: " + ", ".join(bad))


def _linear(native: str, *diffusers: str, swap: bool = False) -> list[Link]:
    return [Link(f"{native}.{p}", tuple(f"{d}.{p}" for d in diffusers), swap)
            for p in ("weight", "bias")]


def _mlp(native: str, diffusers: str) -> list[Link]:
    return _linear(f"{native}.fc1", f"{diffusers}.net.0.proj") + \
        _linear(f"{native}.fc2", f"{diffusers}.net.2")


def _t_embedder(diffusers: str) -> list[Link]:
    return _linear("t_embedder.mlp.0", f"{diffusers}.linear_1") + \
        _linear("t_embedder.mlp.2", f"{diffusers}.linear_2")


# --- PixArt ------------------------------------------------------------------------------------

PIXART_FORM = {"modulation": "adaln_single", "pos_embed": "sincos", "sincos_order": "wh",
               "mlp_act": "gelu_tanh", "cross_norm": False, "mlp_ratio": 4.0, "qk_norm": False,
               "kv_compress": 1, "patch_mixer_depth": 0, "num_classes": 0, "pooled_dim": 0}


def _pixart_check(cfg: Any) -> None:
    _mismatches(cfg, PIXART_FORM, "diffusers' PixArt")
    if cfg.context_dim <= 0:
        raise ConfigError("diffusers' PixArt is text-conditioned; this DiT has context_dim=0")


def _pixart_diffusers_config(cfg: Any) -> dict[str, Any]:
    return {"sample_size": cfg.input_size, "patch_size": cfg.patch_size,
            "in_channels": cfg.in_channels, "out_channels": cfg.in_channels,
            "num_layers": cfg.depth, "num_attention_heads": cfg.num_heads,
            "attention_head_dim": cfg.hidden_size // cfg.num_heads,
            "cross_attention_dim": cfg.hidden_size, "caption_channels": cfg.context_dim,
            "norm_type": "ada_norm_single", "norm_elementwise_affine": False, "norm_eps": 1e-6,
            "activation_fn": "gelu-approximate", "attention_bias": True,
            "use_additional_conditions": False, "interpolation_scale": 1}


def _pixart_native_config(model: nn.Module) -> Any:
    from difflab.models.dit import DiTConfig

    c, name = model.config, type(model).__name__
    wanted = {"norm_type": "ada_norm_single", "activation_fn": "gelu-approximate",
              "norm_elementwise_affine": False, "norm_eps": 1e-6, "attention_bias": True,
              "attention_type": "default"}
    bad = [f"{k}={c.get(k)!r} (needs {v!r})" for k, v in wanted.items() if c.get(k) != v]
    if model.use_additional_conditions:
        bad.append("use_additional_conditions=True (PixArt-alpha 1024's size conditions)")
    dim = c.num_attention_heads * c.attention_head_dim
    if c.cross_attention_dim != dim or not c.caption_channels:
        bad.append(f"cross_attention_dim={c.cross_attention_dim} / caption_channels="
                   f"{c.caption_channels} (needs {dim} / a text width)")
    if bad:
        raise ConfigError(f"{name} has no native counterpart: " + ", ".join(bad))
    positions = _native_positions(model.pos_embed.pos_embed[0], dim, c.sample_size //
                                  c.patch_size, ("wh",))
    return DiTConfig(input_size=c.sample_size, in_channels=c.in_channels,
                     patch_size=c.patch_size, hidden_size=dim, depth=c.num_layers,
                     num_heads=c.num_attention_heads, mlp_ratio=4.0,
                     context_dim=c.caption_channels, modulation="adaln_single",
                     mlp_act="gelu_tanh", cross_norm=False, **positions)


def _pixart_links(cfg: Any) -> list[Link]:
    links = _linear("x_embedder.proj", "pos_embed.proj") + \
        _t_embedder("adaln_single.emb.timestep_embedder") + \
        _linear("t_block.1", "adaln_single.linear") + \
        _linear("context_embedder.fc1", "caption_projection.linear_1") + \
        _linear("context_embedder.fc2", "caption_projection.linear_2")
    if cfg.pos_embed == "learned":  # import only: diffusers' table, rescaled for its size
        links += [Link("pos_embed", ("pos_embed.pos_embed",))]
    for i in range(cfg.depth):
        n, d = f"blocks.{i}", f"transformer_blocks.{i}"
        links += [Link(f"{n}.scale_shift_table", (f"{d}.scale_shift_table",))]
        links += _linear(f"{n}.attn.qkv", *(f"{d}.attn1.to_{x}" for x in "qkv"))
        links += _linear(f"{n}.attn.proj", f"{d}.attn1.to_out.0")
        links += _linear(f"{n}.cross.q", f"{d}.attn2.to_q")
        links += _linear(f"{n}.cross.kv", f"{d}.attn2.to_k", f"{d}.attn2.to_v")
        links += _linear(f"{n}.cross.proj", f"{d}.attn2.to_out.0")
        links += _mlp(f"{n}.mlp", f"{d}.ff")
    return links + [Link("final_layer.scale_shift_table", ("scale_shift_table",))] + \
        _linear("final_layer.linear", "proj_out")


def _pixart_unused(cfg: Any) -> set[str]:
    """diffusers' position table where it is difflab's sin-cos (rebuilt, not stored)."""
    return {"pos_embed.pos_embed"} if cfg.pos_embed == "sincos" else set()


def _pixart_positions(net: nn.Module, model: nn.Module) -> None:
    """Nothing to copy: diffusers recomputes PixArt's sin-cos table, in the "wh" order."""


def _pixart_tensors(model: nn.Module) -> dict[str, Tensor]:
    """The state dict, variance channels dropped, plus the (unstored) position table."""
    return {**_drop_variance(model), "pos_embed.pos_embed": model.pos_embed.pos_embed}


register_converter(Converter("dit", "PixArtTransformer2DModel", _pixart_check,
                             _pixart_diffusers_config, _pixart_native_config, _pixart_links,
                             _pixart_unused, _pixart_positions, _pixart_tensors))


# --- SD3 ---------------------------------------------------------------------------------------

SD3_FORM = {"mlp_act": "gelu_tanh", "mlp_ratio": 4.0, "drop_last_context": True}


def _sd3_check(cfg: Any) -> None:
    _mismatches(cfg, SD3_FORM, "diffusers' SD3 transformer")
    if cfg.pooled_dim <= 0:
        raise ConfigError("diffusers' SD3 transformer needs a pooled text vector; this MMDiT "
                          "has pooled_dim=0")


def _sd3_diffusers_config(cfg: Any) -> dict[str, Any]:
    return {"sample_size": cfg.input_size, "patch_size": cfg.patch_size,
            "in_channels": cfg.in_channels, "out_channels": cfg.in_channels,
            "num_layers": cfg.depth, "num_attention_heads": cfg.num_heads,
            "attention_head_dim": cfg.hidden_size // cfg.num_heads,
            "joint_attention_dim": cfg.context_dim, "caption_projection_dim": cfg.hidden_size,
            "pooled_projection_dim": cfg.pooled_dim, "pos_embed_max_size": cfg.grid,
            "qk_norm": "rms_norm" if cfg.qk_norm else None}


def _sd3_native_config(model: nn.Module) -> Any:
    from difflab.models.mmdit import MMDiTConfig

    c, name = model.config, type(model).__name__
    dim = c.num_attention_heads * c.attention_head_dim
    bad = []
    if c.caption_projection_dim != dim:
        bad.append(f"caption_projection_dim={c.caption_projection_dim} (needs {dim})")
    if tuple(c.dual_attention_layers or ()):
        bad.append(f"dual_attention_layers={tuple(c.dual_attention_layers)} (SD3.5; needs ())")
    if c.qk_norm not in (None, "rms_norm"):
        bad.append(f"qk_norm={c.qk_norm!r} (needs None or 'rms_norm')")
    if (c.out_channels or c.in_channels) != c.in_channels:
        bad.append(f"out_channels={c.out_channels} (needs in_channels={c.in_channels})")
    if bad:
        raise ConfigError(f"{name} has no native counterpart: " + ", ".join(bad))
    grid = c.sample_size // c.patch_size
    table = model.pos_embed.cropped_pos_embed(c.sample_size, c.sample_size)[0]  # (N, D)
    positions = _native_positions(table, dim, grid, ("hw",))
    return MMDiTConfig(input_size=c.sample_size, in_channels=c.in_channels,
                       patch_size=c.patch_size, hidden_size=dim, depth=c.num_layers,
                       num_heads=c.num_attention_heads, mlp_ratio=4.0,
                       context_dim=c.joint_attention_dim, pooled_dim=c.pooled_projection_dim,
                       pos_embed=positions["pos_embed"], qk_norm=c.qk_norm == "rms_norm",
                       drop_last_context=True, mlp_act="gelu_tanh")


def _stream_links(n: str, d: str, context: bool, pre_only: bool, qk_norm: bool) -> list[Link]:
    """One MMDiT stream (image, or text with diffusers' add_*/_context names)."""
    q, k, v = ("add_q_proj", "add_k_proj", "add_v_proj") if context else ("to_q", "to_k", "to_v")
    norm1, ff = ("norm1_context", "ff_context") if context else ("norm1", "ff")
    links = _linear(f"{n}.adaLN_modulation.1", f"{d}.{norm1}.linear", swap=pre_only)
    projections = (k, v) if pre_only else (q, k, v)
    links += _linear(f"{n}.qkv", *(f"{d}.attn.{p}" for p in projections))
    if qk_norm:
        nq, nk = ("norm_added_q", "norm_added_k") if context else ("norm_q", "norm_k")
        links += [Link(f"{n}.k_norm.weight", (f"{d}.attn.{nk}.weight",))]
        if not pre_only:
            links += [Link(f"{n}.q_norm.weight", (f"{d}.attn.{nq}.weight",))]
    if not pre_only:
        links += _linear(f"{n}.proj", f"{d}.attn.{'to_add_out' if context else 'to_out.0'}")
        links += _mlp(f"{n}.mlp", f"{d}.{ff}")
    return links


def _sd3_links(cfg: Any) -> list[Link]:
    links = _linear("x_embedder.proj", "pos_embed.proj") + \
        _t_embedder("time_text_embed.timestep_embedder") + \
        _linear("pooled_embedder.0", "time_text_embed.text_embedder.linear_1") + \
        _linear("pooled_embedder.2", "time_text_embed.text_embedder.linear_2") + \
        _linear("context_embedder", "context_embedder")
    if cfg.pos_embed == "learned":
        links += [Link("pos_embed", ("pos_embed.pos_embed",))]
    for i in range(cfg.depth):
        n, d, last = f"blocks.{i}", f"transformer_blocks.{i}", i == cfg.depth - 1
        links += _stream_links(f"{n}.x_stream", d, False, False, cfg.qk_norm)
        links += _stream_links(f"{n}.context_stream", d, True, last, cfg.qk_norm)
    return links + _linear("adaLN_out.1", "norm_out.linear", swap=True) + \
        _linear("proj_out", "proj_out")


def _sd3_unused(cfg: Any) -> set[str]:
    """The last block's text queries: diffusers computes them, its output discards them."""
    d = f"transformer_blocks.{cfg.depth - 1}.attn"
    unused = {f"{d}.add_q_proj.weight", f"{d}.add_q_proj.bias"}
    if cfg.qk_norm:
        unused.add(f"{d}.norm_added_q.weight")
    if cfg.pos_embed == "sincos":
        unused.add("pos_embed.pos_embed")  # written from difflab's table by `positions`
    return unused


def _sd3_positions(net: nn.Module, model: nn.Module) -> None:
    """Write the native position table into SD3's stored (persistent) buffer."""
    from difflab.models.layers import sincos_pos_embed_2d

    cfg = net.config
    if cfg.pos_embed == "sincos":
        table = sincos_pos_embed_2d(cfg.hidden_size, cfg.grid, cfg.grid)
        model.pos_embed.pos_embed.copy_(table[None])


def _sd3_tensors(model: nn.Module) -> dict[str, Tensor]:
    """The state dict with the position table cropped to the configured size, as SD3's
    forward crops it."""
    size = model.config.sample_size
    return {**_drop_variance(model),
            "pos_embed.pos_embed": model.pos_embed.cropped_pos_embed(size, size)}


register_converter(Converter("mmdit", "SD3Transformer2DModel", _sd3_check,
                             _sd3_diffusers_config, _sd3_native_config, _sd3_links,
                             _sd3_unused, _sd3_positions, _sd3_tensors))


# --- shared ------------------------------------------------------------------------------------


def _native_positions(table: Tensor, dim: int, grid: int, orders: tuple[str, ...]
                      ) -> dict[str, Any]:
    """{"pos_embed": "sincos", "sincos_order": o} when `table` (N, D) is difflab's sin-cos in
    order o, else {"pos_embed": "learned"} (the table itself is then a native parameter)."""
    from difflab.models.layers import sincos_pos_embed_2d

    for order in orders:
        if torch.equal(table.float(), sincos_pos_embed_2d(dim, grid, grid, order)):
            return {"pos_embed": "sincos", "sincos_order": order}
    return {"pos_embed": "learned"}


def _gather(links: list[Link], tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """Native tensors from diffusers ones."""
    out = {}
    for link in links:
        t = torch.cat([tensors[d] for d in link.diffusers])
        out[link.native] = torch.cat(t.chunk(2)[::-1]) if link.swap else t
    return out


def _scatter(links: list[Link], tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """diffusers tensors from native ones."""
    out = {}
    for link in links:
        t = tensors[link.native]
        t = torch.cat(t.chunk(2)[::-1]) if link.swap else t
        out.update(zip(link.diffusers, t.chunk(len(link.diffusers)), strict=True))
    return out


def _check_keys(what: str, have: set[str], mapped: set[str]) -> None:
    """The tensors a model has (less those the map leaves out) are exactly those it maps."""
    if have != mapped:
        missing, extra = sorted(have - mapped), sorted(mapped - have)
        raise ConfigError(f"{what}: the weight map does not cover this model (unmapped "
                          f"{missing[:4]}, absent {extra[:4]}); this diffusers version's "
                          "layout differs from the one difflab maps")


def to_diffusers(net: nn.Module) -> nn.Module:
    """The diffusers model computing what native `net` computes (see the module docstring for
    which architectures have one), with the same weights, in eval mode."""
    from difflab.interop import require_diffusers

    diffusers = require_diffusers()
    cfg = net.config
    conv = CONVERTERS.get(cfg.arch)
    conv.check(cfg)
    with torch.random.fork_rng(devices=[]):  # every tensor is overwritten below
        model = getattr(diffusers, conv.diffusers_class)(**conv.diffusers_config(cfg))
    links, unused = conv.links(cfg), conv.unused(cfg)
    own = net.state_dict()
    _check_keys(f"native {cfg.arch}", set(own), {link.native for link in links})
    target = model.state_dict()
    mapped = _scatter(links, own)
    _check_keys(conv.diffusers_class, set(target) - unused, set(mapped))
    with torch.no_grad():
        for key, value in target.items():
            value.copy_(mapped[key] if key in mapped else torch.zeros_like(value))
        conv.positions(net, model)
    return model.eval()


def from_diffusers(model: nn.Module) -> nn.Module:
    """The native network computing what diffusers `model` computes (PixArt -> PixArt-form DiT,
    SD3 -> MMDiT), with the same weights, in eval mode."""
    from difflab.models import build_model

    name = type(model).__name__
    if name not in BY_DIFFUSERS:
        raise ConfigError(f"{name} has no native counterpart; importable: "
                          f"{', '.join(sorted(BY_DIFFUSERS))}")
    conv = CONVERTERS.get(BY_DIFFUSERS[name])
    cfg = conv.native_config(model)
    with torch.random.fork_rng(devices=[]):
        net = build_model(cfg)
    tensors = conv.tensors(model)
    links = conv.links(cfg)
    _check_keys(name, set(tensors) - conv.unused(cfg),
                {d for link in links for d in link.diffusers})
    own = net.state_dict()
    mapped = _gather(links, tensors)
    _check_keys(f"native {cfg.arch}", set(own), set(mapped))
    with torch.no_grad():
        for key, value in own.items():
            value.copy_(mapped[key])
    return net.eval()


def _drop_variance(model: nn.Module) -> dict[str, Tensor]:
    """The state dict with a learned-variance output (out_channels = 2 C) cut to its first C
    channels, which are all a sampler reads; proj_out rows are (p, q, channel)-ordered."""
    tensors = dict(model.state_dict())
    C, out = model.config.in_channels, model.config.out_channels or model.config.in_channels
    if out == C:
        return tensors
    if out != 2 * C:
        raise ConfigError(f"{type(model).__name__} has out_channels={out}; importable: "
                          f"{C} or {2 * C} (learned variance)")
    for key in ("proj_out.weight", "proj_out.bias"):
        t = tensors[key]
        tensors[key] = t.unflatten(0, (-1, out))[:, :C].flatten(0, 1).contiguous()
    return tensors


def native_fields(config: Any) -> dict[str, Any]:
    """A native config as the `overrides` dict of a ModelSection (every field)."""
    return {f.name: getattr(config, f.name) for f in fields(config)}
