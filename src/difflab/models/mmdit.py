"""SD3's multimodal diffusion transformer ("Scaling Rectified Flow Transformers for High-Resolution
Image Synthesis", 2024): image and text streams with separate weights, each modulated by adaLN
from t + pooled text, meeting in one attention over the concatenated [text, image] tokens.

Hidden states through a block: `h, context = block(h, context, inputs)`, h (B, N, D) image tokens,
context (B, T, D) text tokens; the last block may return context None (`drop_last_context`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal, NamedTuple

import torch
from torch import nn

from difflab.config import ConfigError
from difflab.models.base import (
    MODELS,
    add_presets,
    check_choice,
    check_divisible,
    check_minimums,
)
from difflab.models.layers import (
    ATTENTION_BACKENDS,
    MLP_ACTIVATIONS,
    Mlp,
    PatchEmbed,
    PooledEmbedder,
    TimestepEmbedder,
    add_positions,
    attend,
    check_image,
    global_condition,
    key_padding_mask,
    make_norm,
    merge_heads,
    missing_context,
    modulate,
    sincos_pos_embed_2d,
    split_heads,
    unpatchify,
)


@dataclass(frozen=True)
class MMDiTConfig:
    """An MMDiT conditioned on text tokens (B, T, context_dim) and a pooled (B, pooled_dim)."""

    arch: ClassVar[str] = "mmdit"
    input_size: int = 32
    in_channels: int = 3
    patch_size: int = 4
    hidden_size: int = 256
    depth: int = 6
    num_heads: int = 4
    mlp_ratio: float = 4.0
    context_dim: int = 384
    pooled_dim: int = 384  # 0: no pooled vector (t alone drives the modulation)
    pos_embed: Literal["sincos", "learned"] = "sincos"
    qk_norm: bool = True  # RMSNorm on q and k, which SD3 found stabilises training
    drop_last_context: bool = True  # the last block computes no text output (SD3)
    attention: Literal["auto", "sdpa", "math"] = "auto"
    mlp_act: Literal["gelu", "gelu_tanh"] = "gelu"  # SD3's checkpoints: "gelu_tanh"

    def __post_init__(self) -> None:
        check_minimums(self, {"in_channels": 1, "patch_size": 1, "hidden_size": 1, "depth": 1,
                              "num_heads": 1, "pooled_dim": 0}, positive=("mlp_ratio",))
        check_choice("pos_embed", self.pos_embed, ("sincos", "learned"))
        check_choice("attention", self.attention, ATTENTION_BACKENDS)
        check_choice("mlp_act", self.mlp_act, MLP_ACTIVATIONS)
        check_divisible("input_size", self.input_size, "patch_size", self.patch_size)
        check_divisible("hidden_size", self.hidden_size, "num_heads", self.num_heads)
        check_divisible("hidden_size", self.hidden_size, "4 (sin-cos halves)", 4)
        if self.context_dim <= 0:
            raise ConfigError(f"context_dim={self.context_dim} must be positive (MMDiT needs text)")

    @property
    def grid(self) -> int:
        return self.input_size // self.patch_size

    @property
    def num_tokens(self) -> int:
        return self.grid**2


class JointInputs(NamedTuple):
    """What every joint block shares besides the two streams' hidden states."""

    c: torch.Tensor  # (B, D) t + pooled-text embedding
    mask: torch.Tensor | None  # (B, 1, 1, T + N) bool over [text, image] keys


class Stream(nn.Module):
    """One modality's weights in a joint block: adaLN, QKV, output projection and MLP."""

    def __init__(self, cfg: MMDiTConfig, pre_only: bool = False) -> None:
        super().__init__()
        dim, self.num_heads, self.pre_only = cfg.hidden_size, cfg.num_heads, pre_only
        # pre_only streams only give keys/values, so they need shift and scale alone
        n_mod = 2 if pre_only else 6
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, n_mod * dim))
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(dim, (2 if pre_only else 3) * dim)  # pre_only: no queries
        head_dim = dim // cfg.num_heads
        self.q_norm = make_norm("rmsnorm", head_dim) if cfg.qk_norm and not pre_only else None
        self.k_norm = make_norm("rmsnorm", head_dim) if cfg.qk_norm else nn.Identity()
        if not pre_only:
            self.proj = nn.Linear(dim, dim)
            self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
            self.mlp = Mlp(dim, int(dim * cfg.mlp_ratio), act=cfg.mlp_act)

    def pre(self, h: torch.Tensor, c: torch.Tensor):
        """(q, k, v) each (B, H, L, Dh) from the modulated stream (q None when pre_only),
        and the modulation (B, 2 or 6, D)."""
        mod = self.adaLN_modulation(c).unflatten(1, (-1, h.shape[-1]))
        qkv = self.qkv(modulate(self.norm1(h), mod[:, 0], mod[:, 1]))  # (B, L, 2D or 3D)
        q, k, v = (None, *qkv.chunk(2, dim=-1)) if self.pre_only else qkv.chunk(3, dim=-1)
        k, v = self.k_norm(split_heads(k, self.num_heads)), split_heads(v, self.num_heads)
        if q is not None:
            q = split_heads(q, self.num_heads)
            q = self.q_norm(q) if self.q_norm is not None else q
        return (q, k, v), mod

    def post(self, h: torch.Tensor, a: torch.Tensor, mod: torch.Tensor) -> torch.Tensor:
        """Gated residual updates from the attention output a (B, L, D) and the MLP."""
        _, _, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod.unbind(1)
        h = h + gate_msa.unsqueeze(1) * self.proj(a)
        return h + gate_mlp.unsqueeze(1) * self.mlp(modulate(self.norm2(h), shift_mlp, scale_mlp))


class JointBlock(nn.Module):
    """An MMDiT block: separate image/text streams, one attention over both (SD3, 2024)."""

    def __init__(self, cfg: MMDiTConfig, context_pre_only: bool = False) -> None:
        super().__init__()
        self.backend = cfg.attention
        self.x_stream = Stream(cfg)
        self.context_stream = Stream(cfg, pre_only=context_pre_only)

    def forward(self, h: torch.Tensor, context: torch.Tensor, inputs: JointInputs):
        T = context.shape[1]
        (qx, kx, vx), mod_x = self.x_stream.pre(h, inputs.c)  # (B, H, N, Dh) each
        (qc, kc, vc), mod_c = self.context_stream.pre(context, inputs.c)  # (B, H, T, Dh) each
        k, v = torch.cat([kc, kx], dim=2), torch.cat([vc, vx], dim=2)  # (B, H, T + N, Dh)
        if self.context_stream.pre_only:  # text gives keys/values only: image queries alone
            a = merge_heads(attend(qx, k, v, inputs.mask, backend=self.backend))  # (B, N, D)
            return self.x_stream.post(h, a, mod_x), None
        q = torch.cat([qc, qx], dim=2)
        a = merge_heads(attend(q, k, v, inputs.mask, backend=self.backend))  # (B, T + N, D)
        context = self.context_stream.post(context, a[:, :T], mod_c)
        return self.x_stream.post(h, a[:, T:], mod_x), context


@MODELS.register("mmdit")
class MMDiT(nn.Module):
    """MMDiT denoiser: `model(x, t, context, context_mask, pooled) -> (B, C, H, W)`."""

    config_class = MMDiTConfig

    def __init__(self, config: MMDiTConfig) -> None:
        super().__init__()
        cfg, dim = config, config.hidden_size
        self.config = cfg
        self.x_embedder = PatchEmbed(cfg.patch_size, cfg.in_channels, dim)
        self.t_embedder = TimestepEmbedder(dim)
        self.pooled_embedder = PooledEmbedder(cfg.pooled_dim, dim) if cfg.pooled_dim else None
        self.context_embedder = nn.Linear(cfg.context_dim, dim)
        if cfg.pos_embed == "learned":
            self.pos_embed = nn.Parameter(torch.zeros(1, cfg.num_tokens, dim))
        self.blocks = nn.ModuleList(
            JointBlock(cfg, context_pre_only=cfg.drop_last_context and i == cfg.depth - 1)
            for i in range(cfg.depth)
        )
        self.norm_out = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.adaLN_out = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))
        self.proj_out = nn.Linear(dim, cfg.patch_size**2 * cfg.in_channels)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """Xavier linears; zeroed adaLN and output so each block starts as the identity."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        w = self.x_embedder.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.x_embedder.proj.bias)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        if self.config.pos_embed == "learned":
            grid, dim = self.config.grid, self.config.hidden_size
            self.pos_embed.data.copy_(sincos_pos_embed_2d(dim, grid, grid)[None])
        for block in self.blocks:
            for stream in (block.x_stream, block.context_stream):
                nn.init.zeros_(stream.adaLN_modulation[-1].weight)
                nn.init.zeros_(stream.adaLN_modulation[-1].bias)
        for layer in (self.adaLN_out[-1], self.proj_out):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x, t, context=None, context_mask=None, pooled=None, y=None) -> torch.Tensor:
        cfg = self.config
        check_image(x, cfg.in_channels, cfg.patch_size)
        if context is None:
            raise missing_context(cfg.context_dim)
        if y is not None:
            raise ValueError("MMDiT is text-conditioned and takes no class labels y")
        B, _, H, W = x.shape
        gh, gw = H // cfg.patch_size, W // cfg.patch_size
        table = self.pos_embed if cfg.pos_embed == "learned" else None
        h = add_positions(self.x_embedder(x), cfg.pos_embed, table, cfg.grid, gh, gw)  # (B, N, D)
        c = global_condition(self.t_embedder, self.pooled_embedder, t, pooled, B)  # (B, D)
        ctx = self.context_embedder(context)  # (B, T, D)
        mask = None
        if context_mask is not None:  # image keys are always real
            image_keys = torch.ones(B, h.shape[1], dtype=torch.bool, device=h.device)
            mask = key_padding_mask(torch.cat([context_mask.bool(), image_keys], dim=1))
        inputs = JointInputs(c, mask)
        for block in self.blocks:
            h, ctx = block(h, ctx, inputs)
        shift, scale = self.adaLN_out(c).chunk(2, dim=-1)
        h = self.proj_out(modulate(self.norm_out(h), shift, scale))  # (B, N, p*p*C)
        return unpatchify(h, cfg.patch_size, cfg.in_channels, gh, gw)

    @staticmethod
    def flops_per_image(cfg: MMDiTConfig, context_len: int = 32) -> int:
        """Analytic forward FLOPs per image (2 per multiply-add; matmuls, convs, attention)."""
        D, p, C, T = cfg.hidden_size, cfg.patch_size, cfg.in_channels, context_len
        N = cfg.num_tokens
        hidden = int(D * cfg.mlp_ratio)
        f = 2 * N * D * C * p * p + 2 * (256 * D + D * D) + 2 * T * cfg.context_dim * D
        f += 2 * (cfg.pooled_dim * D + D * D) if cfg.pooled_dim else 0

        def stream(L: int, pre_only: bool) -> int:
            if pre_only:
                return 2 * D * 2 * D + 2 * L * D * 2 * D
            return 2 * D * 6 * D + 2 * L * D * 3 * D + 2 * L * D * D + 4 * L * D * hidden

        for i in range(cfg.depth):
            pre_only = cfg.drop_last_context and i == cfg.depth - 1
            queries = N if pre_only else N + T
            f += stream(N, False) + stream(T, pre_only) + 4 * queries * (N + T) * D
        return f + 2 * D * 2 * D + 2 * N * D * p * p * C


add_presets({
    "mmdit-tiny": MMDiTConfig(hidden_size=128, depth=4, num_heads=4),
    "mmdit-s": MMDiTConfig(hidden_size=256, depth=6, num_heads=4),
})
