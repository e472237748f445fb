"""Pieces shared by every denoiser: embeddings, patches, attention, MLP, 2-D RoPE, norms, adaLN."""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

AttentionBackend = Literal["auto", "sdpa", "math"]
ATTENTION_BACKENDS = ("auto", "sdpa", "math")
NormKind = Literal["layernorm", "rmsnorm"]

# Measured on a 2-core CPU (benchmarks/model_speed.py, torch 2.13): for <= 256 tokens in bf16
# the backward of SDPA's CPU flash kernel is 1.3-7x slower than autograd through
# matmul-softmax (pixart-s training step 1.6x faster with it), while without autograd SDPA is
# as fast or faster (pixart-s forward 2-4%). From ~1k tokens SDPA wins both ways.
MATH_ATTENTION_MAX_TOKENS = 256


# ---------------------------------------------------------------------------------------------
# Timestep and position embeddings
# ---------------------------------------------------------------------------------------------
def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features of timesteps (B,) -> (B, dim) ("Attention Is All You Need", 2017)."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    )
    args = t.float()[:, None] * freqs[None]  # (B, half)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class TimestepEmbedder(nn.Module):
    """Sinusoidal features of t through a 2-layer SiLU MLP, as in DiT (Peebles & Xie, 2023)."""

    def __init__(self, dim: int, freq_dim: int = 256) -> None:
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        t = t.reshape(-1) if t.dim() else t.reshape(1)
        emb = timestep_embedding(t, self.freq_dim).to(self.mlp[0].weight.dtype)
        return self.mlp(emb)  # (B, dim)


class PooledEmbedder(nn.Sequential):
    """A pooled text vector (B, P) -> (B, D), added to the timestep embedding (SD3, PixArt)."""

    def __init__(self, pooled_dim: int, dim: int) -> None:
        super().__init__(nn.Linear(pooled_dim, dim), nn.SiLU(), nn.Linear(dim, dim))


def global_condition(t_embedder: nn.Module, pooled_embedder: nn.Module | None, t: torch.Tensor,
                     pooled: torch.Tensor | None, batch: int) -> torch.Tensor:
    """c (B, D): the embedding of t (a scalar or (B,)) plus, for models with a pooled
    embedder, the embedded pooled text vector."""
    c = t_embedder(t.expand(batch) if t.numel() == 1 else t)  # (B, D)
    if pooled_embedder is None:
        return c
    if pooled is None:
        dim = pooled_embedder[0].in_features
        raise ValueError(f"this model needs pooled (B, {dim}) text vectors")
    return c + pooled_embedder(pooled)


def add_positions(h: torch.Tensor, kind: str, table: torch.Tensor | None, grid: int,
                  gh: int, gw: int, order: str = "hw") -> torch.Tensor:
    """Tokens h (B, N, D) of a gh x gw patch grid plus their position embedding: fixed
    sin-cos at any grid, a learned `table` (1, grid*grid, D) at its own grid, none for "rope"."""
    if kind == "sincos":
        return h + sincos_pos_embed_2d(h.shape[-1], gh, gw, order).to(h)
    if kind == "learned":
        if (gh, gw) != (grid, grid):
            raise ValueError(f"learned positions fit a {grid}x{grid} token grid, got {gh}x{gw}")
        return h + table
    return h


SINCOS_ORDERS = ("hw", "wh")


def sincos_pos_embed_2d(dim: int, grid_h: int, grid_w: int, order: str = "hw") -> torch.Tensor:
    """Fixed 2-D sin-cos position embedding (N, dim) (MAE, 2022): the first half of the channels
    encodes the row and the second the column ("hw"), or the reverse ("wh": MAE's code, and so
    the DiT, PixArt and SD3 checkpoints)."""
    if order not in SINCOS_ORDERS:
        raise ValueError(f"unknown sin-cos order {order!r}; valid: {SINCOS_ORDERS}")
    if dim % 4:
        raise ValueError(f"sincos position embedding needs dim divisible by 4, got {dim}")
    rows, cols = torch.meshgrid(
        torch.arange(grid_h, dtype=torch.float64), torch.arange(grid_w, dtype=torch.float64),
        indexing="ij",
    )
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4))

    def embed_1d(pos: torch.Tensor) -> torch.Tensor:
        out = pos.reshape(-1, 1) * omega[None]  # (N, dim/4)
        return torch.cat([torch.sin(out), torch.cos(out)], dim=1)

    halves = [embed_1d(rows), embed_1d(cols)]
    return torch.cat(halves if order == "hw" else halves[::-1], dim=1).float()  # (N, dim)


def grid_positions(grid_h: int, grid_w: int, stride: int = 1) -> torch.Tensor:
    """Token centres (N, 2) as (row, col) in units of the full grid; strided grids sit mid-cell."""
    offset = (stride - 1) / 2
    rows = torch.arange(0, grid_h, stride, dtype=torch.float32) + offset
    cols = torch.arange(0, grid_w, stride, dtype=torch.float32) + offset
    r, c = torch.meshgrid(rows, cols, indexing="ij")
    return torch.stack([r.reshape(-1), c.reshape(-1)], dim=1)


def rope_2d(positions: torch.Tensor, head_dim: int, theta: float = 10000.0):
    """2-D rotary tables (cos, sin), each (N, head_dim): half the channels rotate with the row,
    half with the column ("Lumina-Next", 2024; RoFormer, 2021)."""
    if head_dim % 4:
        raise ValueError(f"2-D RoPE needs head_dim divisible by 4, got {head_dim}")
    quarter = head_dim // 4
    freqs = theta ** (-torch.arange(quarter, dtype=torch.float32) / quarter)  # (Dh/4,)
    angles = positions.float()[:, :, None] * freqs.to(positions.device)  # (N, 2 axes, Dh/4)
    # layout (axis, half, Dh/4): both halves of an axis share that axis's angle
    angles = angles[:, :, None, :].expand(-1, 2, 2, quarter).reshape(len(positions), head_dim)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (B, H, N, Dh) by tables broadcastable to it, laid out as in `rope_2d`."""
    x1, x2 = x.unflatten(-1, (2, 2, -1)).unbind(-2)  # each (B, H, N, 2 axes, Dh/4)
    rotated = torch.stack((-x2, x1), dim=-2).flatten(-3)
    return x * cos.to(x.dtype) + rotated * sin.to(x.dtype)


# ---------------------------------------------------------------------------------------------
# Patches
# ---------------------------------------------------------------------------------------------
def compute_dtype(device: torch.device) -> torch.dtype:
    """The dtype a token stream should be in: autocast's dtype when autocast is on for `device`
    (every matmul then takes it without a cast copy per layer), else float32. A bf16 residual
    stream is what Megatron-LM does by default; measured on pixart-s it costs 0.9% relative
    output error vs fp32 (0.4% with an fp32 stream) and saves ~25% of the forward time."""
    if torch.amp.is_autocast_available(device.type) and torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return torch.float32


def check_image(x: torch.Tensor, channels: int, multiple: int) -> None:
    """Raise ValueError unless x is (B, channels, H, W) with H and W multiples of `multiple`."""
    if x.dim() != 4 or x.shape[1] != channels:
        raise ValueError(f"expected x of shape (B, {channels}, H, W), got {tuple(x.shape)}")
    if x.shape[2] % multiple or x.shape[3] % multiple:
        raise ValueError(f"H, W must be multiples of {multiple}, got {tuple(x.shape[2:])}")


def missing_context(context_dim: int) -> ValueError:
    """The error for a text-conditioned model called without text tokens."""
    return ValueError(f"this model is text-conditioned: pass context (B, T, {context_dim})")


class PatchEmbed(nn.Module):
    """(B, C, H, W) -> (B, N, D) tokens from non-overlapping p x p patches (ViT, 2021)."""

    def __init__(self, patch_size: int, in_channels: int, dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The conv as a reshape + one matmul: the conv's output transposed to (B, N, D) would be
        # a strided view, and every later add, norm and linear of the token stream would then
        # run strided or copy it back to contiguous memory.
        proj = self.proj
        if type(proj) is not nn.Conv2d or proj._forward_hooks or proj._forward_pre_hooks:
            # swapped (e.g. quantized) or hooked conv: run it as a module, then make contiguous
            return proj(x).flatten(2).transpose(1, 2).contiguous()
        B, C, H, W = x.shape
        p = self.patch_size
        patches = x.reshape(B, C, H // p, p, W // p, p).permute(0, 2, 4, 1, 3, 5)
        patches = patches.reshape(B, (H // p) * (W // p), C * p * p)  # (B, N, C*p*p), (c, p, q)
        return F.linear(patches, self.proj.weight.flatten(1), self.proj.bias)  # (B, N, D)


def unpatchify(x: torch.Tensor, patch_size: int, channels: int, grid_h: int, grid_w: int):
    """(B, N, p*p*C) tokens -> (B, C, grid_h*p, grid_w*p) image, inverse of PatchEmbed's order."""
    p = patch_size
    x = x.reshape(x.shape[0], grid_h, grid_w, p, p, channels)
    x = torch.einsum("nhwpqc->nchpwq", x)
    return x.reshape(x.shape[0], channels, grid_h * p, grid_w * p)


# ---------------------------------------------------------------------------------------------
# Norms, MLP and adaLN
# ---------------------------------------------------------------------------------------------
class RMSNorm(nn.RMSNorm):
    """RMSNorm whose weight follows the input's dtype, so bf16 autocast keeps the fused kernel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight.to(x.dtype) if self.weight is not None else None
        return F.rms_norm(x, self.normalized_shape, weight, self.eps)


def make_norm(kind: NormKind, dim: int, affine: bool = True, eps: float = 1e-6) -> nn.Module:
    """LayerNorm ("Layer Normalization", 2016) or RMSNorm ("Root Mean Square Layer Norm", 2019)."""
    if kind == "layernorm":
        return nn.LayerNorm(dim, elementwise_affine=affine, eps=eps)
    if kind == "rmsnorm":
        return RMSNorm(dim, elementwise_affine=affine, eps=eps)
    raise ValueError(f"unknown norm {kind!r}; valid: layernorm, rmsnorm")


MLP_ACTIVATIONS = ("gelu", "gelu_tanh")


class Mlp(nn.Module):
    """Two linear layers with a GELU between them, as in ViT/DiT blocks ("GELUs", 2016);
    `act="gelu_tanh"` is the tanh approximation the PixArt and SD3 checkpoints were trained with."""

    def __init__(self, dim: int, hidden: int, out: int | None = None, act: str = "gelu") -> None:
        super().__init__()
        if act not in MLP_ACTIVATIONS:
            raise ValueError(f"unknown MLP activation {act!r}; valid: {MLP_ACTIVATIONS}")
        self.approximate = "tanh" if act == "gelu_tanh" else "none"
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, out or dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # exact (erf) GELU by default: on CPU it is ~4x faster than the tanh form in bf16, ~2x
        # in fp32
        return self.fc2(F.gelu(self.fc1(x), approximate=self.approximate))


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: x (B, N, D) * (1 + scale) + shift, with shift/scale (B, D) (DiT, 2023)."""
    return torch.addcmul(shift.unsqueeze(1), x, 1 + scale.unsqueeze(1))


# ---------------------------------------------------------------------------------------------
# Attention
# ---------------------------------------------------------------------------------------------
def choose_attention_backend(
    device: torch.device, dtype: torch.dtype, q_len: int, kv_len: int, needs_grad: bool = False
) -> str:
    """Pick plain matmul-softmax for short reduced-precision CPU sequences that autograd will
    differentiate (SDPA's CPU backward is slow there), SDPA otherwise."""
    short = max(q_len, kv_len) <= MATH_ATTENTION_MAX_TOKENS
    if needs_grad and device.type == "cpu" and dtype in (torch.bfloat16, torch.float16) and short:
        return "math"
    return "sdpa"


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Softmax attention ("Attention Is All You Need", 2017): q (B, H, N, Dh), k/v (B, H, M, Dh),
    mask bool broadcastable to (B, H, N, M) with True = attend -> (B, H, N, Dh)."""
    if backend == "auto":
        needs_grad = torch.is_grad_enabled() and any(z.requires_grad for z in (q, k, v))
        backend = choose_attention_backend(q.device, q.dtype, q.shape[-2], k.shape[-2],
                                           needs_grad)
    if backend == "sdpa":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    if backend != "math":
        raise ValueError(f"unknown attention backend {backend!r}; valid: {ATTENTION_BACKENDS}")
    return _math_attention(q, k, v, mask)


def _math_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """Matmul-softmax-matmul with the 1/sqrt(Dh) scale and the padding mask fused into one
    `baddbmm` (no separate scale and masked_fill passes over the (B, H, N, M) scores)."""
    B, H, N, Dh = q.shape
    M = k.shape[-2]
    q3, k3 = q.reshape(B * H, N, Dh), k.reshape(B * H, M, Dh)
    v3 = v.reshape(B * H, M, v.shape[-1])
    if mask is None:  # beta=0: the input only has to broadcast, its values are ignored
        bias, beta = q3.new_zeros(1, 1, 1), 0.0
    else:  # additive bias (B*H, N or 1, M): 0 where attended, -inf where masked
        mask = mask.reshape((1,) * (4 - mask.dim()) + tuple(mask.shape)).expand(B, H, -1, -1)
        bias = torch.zeros(mask.shape, dtype=q.dtype, device=q.device)
        bias = bias.masked_fill_(~mask, float("-inf")).reshape(B * H, *mask.shape[-2:])
        beta = 1.0
    scores = torch.baddbmm(bias, q3, k3.transpose(1, 2), beta=beta, alpha=Dh**-0.5)  # (BH, N, M)
    out = torch.bmm(scores.softmax(dim=-1).to(v3.dtype), v3)  # (B*H, N, Dv)
    return out.view(B, H, N, v3.shape[-1])


def key_padding_mask(mask: torch.Tensor) -> torch.Tensor:
    """(B, M) bool (True = real) -> (B, 1, 1, M); rows with no real key attend to all keys
    instead of producing NaN (an all-padding caption is then a plain average)."""
    mask = mask.bool()
    empty = ~mask.any(dim=1, keepdim=True)  # (B, 1)
    return (mask | empty)[:, None, None, :]


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(B, N, D) -> (B, H, N, D/H)."""
    return x.unflatten(-1, (num_heads, -1)).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, H, N, Dh) -> (B, N, H*Dh)."""
    return x.transpose(1, 2).flatten(2)


class Rope(NamedTuple):
    """Rotary tables for queries and keys, each broadcastable to (B, H, N or M, Dh)."""

    cos_q: torch.Tensor
    sin_q: torch.Tensor
    cos_k: torch.Tensor
    sin_k: torch.Tensor


class SelfAttention(nn.Module):
    """Multi-head self-attention, fused QKV, optional QK-norm ("Scaling Vision Transformers to
    22B", 2023), 2-D RoPE, and PixArt-Sigma key/value token compression ("PixArt-Sigma", 2024)."""

    def __init__(
        self, dim: int, num_heads: int, qk_norm: bool = False, kv_compress: int = 1,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        self.num_heads, self.backend = num_heads, backend
        self.qkv = nn.Linear(dim, 3 * dim)
        self.q_norm = make_norm("rmsnorm", dim // num_heads) if qk_norm else nn.Identity()
        self.k_norm = make_norm("rmsnorm", dim // num_heads) if qk_norm else nn.Identity()
        # depthwise strided conv over the token grid: M = N / kv_compress^2 keys and values
        self.kv_compress = kv_compress
        self.compress = (
            nn.Conv2d(dim, dim, kv_compress, stride=kv_compress, groups=dim)
            if kv_compress > 1 else None
        )
        self.proj = nn.Linear(dim, dim)

    def _compress(self, x: torch.Tensor, grid: tuple[int, int] | None) -> torch.Tensor:
        if grid is None:
            raise ValueError("kv_compress > 1 needs the full token grid (no token masking)")
        x = x.transpose(1, 2).unflatten(2, grid)  # (B, D, gh, gw)
        return self.compress(x).flatten(2).transpose(1, 2)  # (B, M, D)

    def forward(
        self, x: torch.Tensor, rope: Rope | None = None, grid: tuple[int, int] | None = None
    ) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)  # each (B, N, D)
        if self.compress is not None:
            k, v = self._compress(k, grid), self._compress(v, grid)
        q, k, v = (split_heads(z, self.num_heads) for z in (q, k, v))
        q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = apply_rope(q, rope.cos_q, rope.sin_q), apply_rope(k, rope.cos_k, rope.sin_k)
        return self.proj(merge_heads(attend(q, k, v, backend=self.backend)))


def attention_probs(q: torch.Tensor, k: torch.Tensor,
                    mask: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(q k^T / sqrt(Dh)) (B, H, N, M) in float32, with the mask of `attend` (True =
    attend): the probabilities that fused attention never materialises."""
    scores = q.float() @ k.float().transpose(-2, -1) * q.shape[-1] ** -0.5
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return scores.softmax(dim=-1)


class AttentionProbs(nn.Module):
    """A hook point that returns the attention probabilities (B, H, N, M) it is given.

    Attention probes (reading maps) and attention control (Prompt-to-Prompt writing them) hook
    this module. Only while it carries a hook does its attention layer materialise the
    probabilities and call it; otherwise attention runs fused, exactly as without it.
    """

    def forward(self, probs: torch.Tensor) -> torch.Tensor:
        return probs


def has_hooks(module: nn.Module) -> bool:
    """True when `module` carries a forward hook, a pre-hook or a replacement forward."""
    return bool(module._forward_hooks or module._forward_pre_hooks
                or "forward" in module.__dict__)


class CrossAttention(nn.Module):
    """Image tokens attend to text tokens (LDM, 2022; PixArt-alpha, 2023); fused K/V. Its
    `probs` is the hook point where the (B, H, N, T) text-attention maps can be read or set."""

    def __init__(
        self, dim: int, context_dim: int, num_heads: int, qk_norm: bool = False,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        self.num_heads, self.backend = num_heads, backend
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(context_dim, 2 * dim)
        self.q_norm = make_norm("rmsnorm", dim // num_heads) if qk_norm else nn.Identity()
        self.k_norm = make_norm("rmsnorm", dim // num_heads) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)
        self.probs = AttentionProbs()

    def forward(
        self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        q = self.q_norm(split_heads(self.q(x), self.num_heads))  # (B, H, N, Dh)
        k, v = self.kv(context).chunk(2, dim=-1)  # each (B, T, D)
        k, v = self.k_norm(split_heads(k, self.num_heads)), split_heads(v, self.num_heads)
        if has_hooks(self.probs):  # a probe or a controller: materialise the (B, H, N, T) maps
            out = self.probs(attention_probs(q, k, mask)).to(v.dtype) @ v
        else:
            out = attend(q, k, v, mask, backend=self.backend)
        return self.proj(merge_heads(out))


def set_attention_backend(model: nn.Module, backend: str) -> nn.Module:
    """Force every attention module in `model` onto one backend ("auto", "sdpa" or "math")."""
    if backend not in ATTENTION_BACKENDS:
        raise ValueError(f"unknown attention backend {backend!r}; valid: {ATTENTION_BACKENDS}")
    for module in model.modules():
        if hasattr(module, "backend"):
            module.backend = backend
    return model
