"""Diffusion transformers: DiT with adaLN-Zero ("Scalable Diffusion Models with Transformers",
2023) and PixArt-alpha's text-to-image form with cross-attention and adaLN-single ("PixArt-alpha",
2023); options: 2-D RoPE (Lumina-Next, 2024), QK-norm, PixArt-Sigma key/value compression (2024)
and micro-budget deferred patch masking ("Stretching Each Dollar", 2024).

Hidden states through a block: `h = block(h, inputs)`, h (B, N, D) tokens in raster order (or the
kept subset when masking), `inputs` a `BlockInputs` shared by all blocks of one forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal, NamedTuple

import torch
from torch import nn

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
    SINCOS_ORDERS,
    CrossAttention,
    Mlp,
    PatchEmbed,
    PooledEmbedder,
    Rope,
    SelfAttention,
    TimestepEmbedder,
    add_positions,
    check_image,
    compute_dtype,
    global_condition,
    grid_positions,
    key_padding_mask,
    missing_context,
    modulate,
    rope_2d,
    sincos_pos_embed_2d,
    unpatchify,
)


@dataclass(frozen=True)
class DiTConfig:
    """A DiT / PixArt transformer; `context_dim > 0` makes it text-to-image (cross-attention)."""

    arch: ClassVar[str] = "dit"
    input_size: int = 32  # H = W of x (pixels or latents)
    in_channels: int = 3
    patch_size: int = 4
    hidden_size: int = 256
    depth: int = 6
    num_heads: int = 4
    mlp_ratio: float = 4.0
    num_classes: int = 0  # > 0: class labels 0..num_classes-1, label num_classes = null (CFG)
    context_dim: int = 0  # > 0: cross-attention to (B, T, context_dim) text tokens
    pooled_dim: int = 0  # > 0: pooled (B, pooled_dim) text vector added to the t embedding
    modulation: Literal["adaln_zero", "adaln_single"] = "adaln_zero"
    pos_embed: Literal["sincos", "learned", "rope"] = "sincos"
    qk_norm: bool = False
    kv_compress: int = 1  # PixArt-Sigma: keys/values pooled by this stride over the token grid
    patch_mixer_depth: int = 0  # micro-budget: blocks over all tokens before masking
    attention: Literal["auto", "sdpa", "math"] = "auto"
    # "gelu_tanh", cross_norm = false and sincos_order = "wh" are PixArt-alpha's own choices (its
    # checkpoints and diffusers' PixArtTransformer2DModel): with them a PixArt-form DiT exports
    # to diffusers (`difflab.interop.convert`)
    mlp_act: Literal["gelu", "gelu_tanh"] = "gelu"
    cross_norm: bool = True  # LayerNorm before cross-attention
    sincos_order: Literal["hw", "wh"] = "hw"  # which half of the sin-cos channels is the row

    def __post_init__(self) -> None:
        check_minimums(self, {"in_channels": 1, "patch_size": 1, "hidden_size": 1, "depth": 1,
                              "num_heads": 1, "num_classes": 0, "context_dim": 0,
                              "pooled_dim": 0, "kv_compress": 1, "patch_mixer_depth": 0},
                       positive=("mlp_ratio",))
        check_choice("modulation", self.modulation, ("adaln_zero", "adaln_single"))
        check_choice("pos_embed", self.pos_embed, ("sincos", "learned", "rope"))
        check_choice("attention", self.attention, ATTENTION_BACKENDS)
        check_choice("mlp_act", self.mlp_act, MLP_ACTIVATIONS)
        check_choice("sincos_order", self.sincos_order, SINCOS_ORDERS)
        check_divisible("input_size", self.input_size, "patch_size", self.patch_size)
        check_divisible("hidden_size", self.hidden_size, "num_heads", self.num_heads)
        check_divisible("hidden_size", self.hidden_size, "4 (sin-cos halves)", 4)
        if self.pos_embed == "rope":
            check_divisible("head dim", self.hidden_size // self.num_heads, "4 (2-D RoPE)", 4)
        check_divisible("token grid", self.grid, "kv_compress", self.kv_compress)

    @property
    def grid(self) -> int:
        return self.input_size // self.patch_size

    @property
    def num_tokens(self) -> int:
        return self.grid**2


class BlockInputs(NamedTuple):
    """What every block of one forward pass shares besides the hidden states."""

    c: torch.Tensor  # (B, D) for adaLN-Zero, (B, 6, D) global modulation for adaLN-single
    context: torch.Tensor | None  # (B, T, D) projected text tokens
    context_mask: torch.Tensor | None  # (B, 1, 1, T) bool, True = attend
    rope: Rope | None
    grid: tuple[int, int] | None  # token grid (gh, gw); None when tokens are a masked subset


def keep_tokens(h: torch.Tensor, inputs: BlockInputs,
                idx: torch.Tensor) -> tuple[torch.Tensor, BlockInputs]:
    """The tokens at raster indices idx (B, n) of h (B, N, D) -> (B, n, D), and block inputs with
    each kept token's RoPE tables (B, 1, n, Dh) and grid None (the tokens are a subset now)."""
    h = h.gather(1, idx[..., None].expand(-1, -1, h.shape[-1]))
    rope = None
    if inputs.rope is not None:  # (1, 1, N, Dh) tables; keys use the queries' (kv_compress 1)
        rope = Rope(*(r[0, 0][idx].unsqueeze(1) for r in inputs.rope[:2] * 2))
    return h, inputs._replace(rope=rope, grid=None)


class MaskedOutput(NamedTuple):
    """Output of `DiT.forward_masked`: dropped patches are zero in `out`."""

    out: torch.Tensor  # (B, C, H, W)
    keep: torch.Tensor  # (B, N) bool, True = token was kept
    keep_pixels: torch.Tensor  # (B, 1, H, W) bool, the same mask at pixel resolution


class DiTBlock(nn.Module):
    """Self-attention, optional cross-attention to text, MLP; adaLN-Zero or adaLN-single gates."""

    def __init__(self, cfg: DiTConfig) -> None:
        super().__init__()
        dim = cfg.hidden_size
        self.single = cfg.modulation == "adaln_single"
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = SelfAttention(dim, cfg.num_heads, cfg.qk_norm, cfg.kv_compress, cfg.attention)
        self.cross = None
        if cfg.context_dim:
            self.norm_cross = nn.LayerNorm(dim, eps=1e-6) if cfg.cross_norm else nn.Identity()
            self.cross = CrossAttention(dim, dim, cfg.num_heads, cfg.qk_norm, cfg.attention)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * cfg.mlp_ratio), act=cfg.mlp_act)
        if self.single:  # PixArt: a learned per-block table added to the global t0
            self.scale_shift_table = nn.Parameter(torch.zeros(6, dim))
        else:
            self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(self, h: torch.Tensor, inputs: BlockInputs) -> torch.Tensor:
        if self.single:
            mod = inputs.c + self.scale_shift_table  # (B, 6, D)
        else:
            mod = self.adaLN_modulation(inputs.c).unflatten(1, (6, -1))  # (B, 6, D)
        mod = mod.to(h.dtype)  # the small table follows the token stream (see `embed`)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod.unbind(1)
        a = self.attn(modulate(self.norm1(h), shift_msa, scale_msa), inputs.rope, inputs.grid)
        h = h + gate_msa.unsqueeze(1) * a
        if self.cross is not None:
            h = h + self.cross(self.norm_cross(h), inputs.context, inputs.context_mask)
        m = self.mlp(modulate(self.norm2(h), shift_mlp, scale_mlp))
        return h + gate_mlp.unsqueeze(1) * m


class FinalLayer(nn.Module):
    """adaLN-modulated norm and a linear map to p*p*C values per token (zero-initialised)."""

    def __init__(self, dim: int, out_dim: int, single: bool) -> None:
        super().__init__()
        self.single = single
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(dim, out_dim)
        if single:
            self.scale_shift_table = nn.Parameter(torch.zeros(2, dim))
        else:
            self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))

    def forward(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        if self.single:
            shift, scale = (self.scale_shift_table + c.unsqueeze(1)).unbind(1)  # (B, D) each
        else:
            shift, scale = self.adaLN_modulation(c).chunk(2, dim=-1)
        shift, scale = shift.to(h.dtype), scale.to(h.dtype)
        return self.linear(modulate(self.norm(h), shift, scale))


@MODELS.register("dit")
class DiT(nn.Module):
    """DiT / PixArt denoiser: `model(x, t, context, context_mask, pooled, y) -> (B, C, H, W)`."""

    config_class = DiTConfig

    def __init__(self, config: DiTConfig) -> None:
        super().__init__()
        cfg, dim = config, config.hidden_size
        self.config = cfg
        self.x_embedder = PatchEmbed(cfg.patch_size, cfg.in_channels, dim)
        self.t_embedder = TimestepEmbedder(dim)
        self.y_embedder = nn.Embedding(cfg.num_classes + 1, dim) if cfg.num_classes else None
        self.pooled_embedder = PooledEmbedder(cfg.pooled_dim, dim) if cfg.pooled_dim else None
        # PixArt's caption projection: text states -> model width, shared by every block
        self.context_embedder = (Mlp(cfg.context_dim, dim, dim, act=cfg.mlp_act)
                                 if cfg.context_dim else None)
        self.single = cfg.modulation == "adaln_single"
        self.t_block = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim)) if self.single else None
        if cfg.pos_embed == "learned":
            self.pos_embed = nn.Parameter(torch.zeros(1, cfg.num_tokens, dim))
        self.mixer = nn.ModuleList(DiTBlock(cfg) for _ in range(cfg.patch_mixer_depth))
        self.blocks = nn.ModuleList(DiTBlock(cfg) for _ in range(cfg.depth))
        out_dim = cfg.patch_size**2 * cfg.in_channels
        self.final_layer = FinalLayer(dim, out_dim, self.single)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """DiT's init (xavier linears, zeroed adaLN and output) with PixArt's for adaLN-single."""
        cfg, dim = self.config, self.config.hidden_size

        def basic(m: nn.Module) -> None:
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

        self.apply(basic)
        w = self.x_embedder.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.x_embedder.proj.bias)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        if self.y_embedder is not None:
            nn.init.normal_(self.y_embedder.weight, std=0.02)
        if cfg.pos_embed == "learned":
            self.pos_embed.data.copy_(
                sincos_pos_embed_2d(dim, cfg.grid, cfg.grid, cfg.sincos_order)[None])
        if self.single:
            nn.init.normal_(self.t_block[1].weight, std=0.02)
        for block in [*self.mixer, *self.blocks]:
            if self.single:
                nn.init.normal_(block.scale_shift_table, std=dim**-0.5)
            else:
                nn.init.zeros_(block.adaLN_modulation[-1].weight)
                nn.init.zeros_(block.adaLN_modulation[-1].bias)
            if block.cross is not None:  # PixArt: text enters through a zeroed projection
                nn.init.zeros_(block.cross.proj.weight)
                nn.init.zeros_(block.cross.proj.bias)
            if block.attn.compress is not None:  # PixArt-Sigma: start as average pooling
                nn.init.constant_(block.attn.compress.weight, cfg.kv_compress**-2)
                nn.init.zeros_(block.attn.compress.bias)
        if self.single:
            nn.init.normal_(self.final_layer.scale_shift_table, std=dim**-0.5)
        else:
            nn.init.zeros_(self.final_layer.adaLN_modulation[-1].weight)
            nn.init.zeros_(self.final_layer.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)

    def _conditioning(self, t, context, context_mask, pooled, y, batch: int):
        """(c (B, D), projected context (B, T, D) or None, key mask (B, 1, 1, T) or None)."""
        cfg = self.config
        c = global_condition(self.t_embedder, self.pooled_embedder, t, pooled, batch)  # (B, D)
        if self.y_embedder is not None:
            labels = y if y is not None else torch.full((batch,), cfg.num_classes, device=c.device)
            c = c + self.y_embedder(labels)
        elif y is not None:
            raise ValueError("got class labels y but this model has num_classes=0")
        if self.context_embedder is None:
            return c, None, None
        if context is None:
            raise missing_context(cfg.context_dim)
        mask = key_padding_mask(context_mask) if context_mask is not None else None
        return c, self.context_embedder(context), mask

    def _rope(self, gh: int, gw: int, device: torch.device) -> Rope | None:
        if self.config.pos_embed != "rope":
            return None
        head_dim = self.config.hidden_size // self.config.num_heads
        cos_q, sin_q = rope_2d(grid_positions(gh, gw).to(device), head_dim)  # (N, Dh)
        cos_k, sin_k = rope_2d(grid_positions(gh, gw, self.config.kv_compress).to(device), head_dim)
        return Rope(cos_q, sin_q, cos_k, sin_k)

    def embed(self, x, t, context=None, context_mask=None, pooled=None, y=None):
        """Tokens (B, N, D) with positions, the shared `BlockInputs`, and c (B, D) for the head."""
        cfg = self.config
        check_image(x, cfg.in_channels, cfg.patch_size)
        _, _, H, W = x.shape
        gh, gw = H // cfg.patch_size, W // cfg.patch_size
        table = self.pos_embed if cfg.pos_embed == "learned" else None
        h = add_positions(self.x_embedder(x), cfg.pos_embed, table, cfg.grid, gh, gw,
                          cfg.sincos_order)  # (B, N, D)
        c, ctx, mask = self._conditioning(t, context, context_mask, pooled, y, x.shape[0])
        block_c = self.t_block(c).unflatten(1, (6, -1)) if self.single else c
        rope = self._rope(gh, gw, x.device)
        if rope is not None:  # (N, Dh) -> (1, 1, N, Dh), broadcast over batch and heads
            rope = Rope(*(r[None, None] for r in rope))
        dtype = compute_dtype(x.device)
        h, ctx = h.to(dtype), ctx.to(dtype) if ctx is not None else None
        return h, BlockInputs(block_c, ctx, mask, rope, (gh, gw)), c

    def forward(self, x, t, context=None, context_mask=None, pooled=None, y=None) -> torch.Tensor:
        h, inputs, c = self.embed(x, t, context, context_mask, pooled, y)
        for block in [*self.mixer, *self.blocks]:
            h = block(h, inputs)  # (B, N, D)
        h = self.final_layer(h, c)  # (B, N, p*p*C)
        gh, gw = inputs.grid
        return unpatchify(h, self.config.patch_size, self.config.in_channels, gh, gw)

    def forward_masked(
        self, x, t, context=None, context_mask=None, pooled=None, y=None, *,
        mask_ratio: float, generator: torch.Generator | None = None,
    ) -> MaskedOutput:
        """Deferred masking ("Stretching Each Dollar", 2024): the patch-mixer sees every token,
        the backbone only a random `1 - mask_ratio` of them; the loss belongs on `keep` only."""
        if not 0.0 <= mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
        h, inputs, c = self.embed(x, t, context, context_mask, pooled, y)
        for block in self.mixer:
            h = block(h, inputs)
        B, N, _ = h.shape
        n_keep = max(1, int(round(N * (1.0 - mask_ratio))))
        gen_device = generator.device if generator is not None else h.device
        noise = torch.rand(B, N, generator=generator, device=gen_device).to(h.device)
        idx = noise.argsort(dim=1)[:, :n_keep].sort(dim=1).values  # (B, n) kept, raster order
        if n_keep < N:  # (all kept: idx is the identity and the full grid stays usable)
            h, inputs = keep_tokens(h, inputs, idx)  # (B, n, D)
        for block in self.blocks:
            h = block(h, inputs)
        h = self.final_layer(h, c)  # (B, n, p*p*C)
        full = h.new_zeros(B, N, h.shape[-1]).scatter(1, idx[..., None].expand_as(h), h)
        keep = torch.zeros(B, N, dtype=torch.bool, device=h.device).scatter(1, idx, True)
        p, (gh, gw) = self.config.patch_size, (x.shape[2] // self.config.patch_size,
                                               x.shape[3] // self.config.patch_size)
        out = unpatchify(full, p, self.config.in_channels, gh, gw)
        keep_pixels = keep.view(B, 1, gh, 1, gw, 1).expand(B, 1, gh, p, gw, p)  # patch -> pixels
        return MaskedOutput(out, keep, keep_pixels.reshape(B, 1, gh * p, gw * p))

    @staticmethod
    def flops_per_image(cfg: DiTConfig, mask_ratio: float = 0.0, context_len: int = 32) -> int:
        """Analytic forward FLOPs per image (2 per multiply-add; matmuls, convs, attention)."""
        D, p, C, T = cfg.hidden_size, cfg.patch_size, cfg.in_channels, context_len
        N = cfg.num_tokens
        n = max(1, int(round(N * (1.0 - mask_ratio))))
        hidden = int(D * cfg.mlp_ratio)
        f = 2 * N * D * C * p * p + 2 * (256 * D + D * D)  # patch embed, t embedder
        f += 2 * (cfg.pooled_dim * D + D * D) if cfg.pooled_dim else 0
        f += 2 * T * (cfg.context_dim * D + D * D) if cfg.context_dim else 0
        f += 2 * D * 6 * D if cfg.modulation == "adaln_single" else 0

        def block(n_tokens: int) -> int:
            s = cfg.kv_compress
            m = n_tokens // s**2
            g = 0 if cfg.modulation == "adaln_single" else 2 * D * 6 * D
            g += 2 * n_tokens * D * 3 * D + 4 * n_tokens * m * D + 2 * n_tokens * D * D
            g += 2 * 2 * m * D * s * s if s > 1 else 0
            if cfg.context_dim:
                g += 4 * n_tokens * D * D + 4 * T * D * D + 4 * n_tokens * T * D
            return g + 4 * n_tokens * D * hidden

        f += cfg.patch_mixer_depth * block(N) + cfg.depth * block(n)
        f += 0 if cfg.modulation == "adaln_single" else 2 * D * 2 * D
        return f + 2 * n * D * p * p * C


add_presets({
    # class-conditional DiT (adaLN-Zero); sizes of DiT-S/B from the paper, on 32x32x4 latents
    "dit-tiny": DiTConfig(hidden_size=128, depth=4, num_heads=4, num_classes=10),
    "dit-s": DiTConfig(input_size=32, in_channels=4, patch_size=2, hidden_size=384, depth=12,
                       num_heads=6, num_classes=10),
    "dit-b": DiTConfig(input_size=32, in_channels=4, patch_size=2, hidden_size=768, depth=12,
                       num_heads=12, num_classes=10),
    # text-to-image PixArt form: 32x32 pixels, patch 4 -> 64 tokens, MiniLM (384-d) text
    "pixart-tiny": DiTConfig(hidden_size=128, depth=4, num_heads=4, context_dim=384,
                             modulation="adaln_single"),
    "pixart-s": DiTConfig(hidden_size=256, depth=6, num_heads=4, context_dim=384,
                          modulation="adaln_single"),
})
