"""Tiny real modules for the quantization tests: an MLP/conv stack and a transformer block."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TinyBlock(nn.Module):
    """Pre-norm self-attention + MLP over (B, N, D) tokens."""

    def __init__(self, dim: int = 32, heads: int = 2) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.fc1, self.fc2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        B, N, D = h.shape
        q, k, v = self.qkv(self.norm1(h)).reshape(B, N, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, N, D)
        h = h + self.proj(a)
        return h + self.fc2(F.gelu(self.fc1(self.norm2(h))))


class TinyNet(nn.Module):
    """Conv stem (B, 3, 8, 8) -> tokens -> transformer blocks -> linear head."""

    def __init__(self, dim: int = 32, depth: int = 2) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, dim, 3, padding=1)
        self.down = nn.Conv2d(dim, dim, 2, stride=2)
        self.blocks = nn.ModuleList(TinyBlock(dim) for _ in range(depth))
        self.head = nn.Linear(dim, 3 * 4)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | None = None) -> torch.Tensor:
        h = self.down(F.silu(self.stem(x))).flatten(2).transpose(1, 2)  # (B, 16, D)
        for block in self.blocks:
            h = block(h)
        B = x.shape[0]
        out = self.head(h).transpose(1, 2).reshape(B, 3, 2, 2, 4, 4)  # unpatchify 2x2 tokens
        return out.permute(0, 1, 4, 2, 5, 3).reshape(B, 3, 8, 8)


def tiny_net(seed: int = 0) -> TinyNet:
    torch.manual_seed(seed)
    return TinyNet().eval()


def inputs(seed: int = 1, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, 8, 8, generator=torch.Generator().manual_seed(seed))
