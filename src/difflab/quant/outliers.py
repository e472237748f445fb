"""Outlier handling: SmoothQuant's activation-to-weight migration and SVDQuant's low-rank branch."""

from __future__ import annotations

import torch
from torch import Tensor


def smooth_scales(act_absmax: Tensor, weight: Tensor, alpha: float, eps: float = 1e-5) -> Tensor:
    """Per-input-channel s = max|X|^a / max|W|^(1-a) ("SmoothQuant", 2023), shape (I,).

    act_absmax (I,) over calibration inputs; weight (O, I, ...) with inputs on dim 1.
    """
    dims = [d for d in range(weight.dim()) if d != 1]
    w_absmax = weight.detach().abs().amax(dim=dims).float()  # (I,)
    s = act_absmax.float().clamp(min=eps).pow(alpha) / w_absmax.clamp(min=eps).pow(1 - alpha)
    # channels that never fire (or dead weights) keep s = 1 rather than a huge or tiny factor
    dead = (act_absmax <= eps) | (w_absmax <= eps)
    return torch.where(dead, torch.ones_like(s), s)


def apply_smoothing(weight: Tensor, s: Tensor) -> Tensor:
    """W * s along the input dim: W (O, I, ...) -> (O, I, ...), so (X / s) W^T = X W^T."""
    shape = [1, -1] + [1] * (weight.dim() - 2)
    return weight * s.to(weight.dtype).view(shape)


def lowrank_split(weight: Tensor, rank: int, dtype: torch.dtype = torch.float32
                  ) -> tuple[Tensor, Tensor, Tensor]:
    """(L1 (O, r), L2 (r, I), R = W - L1 L2) from the SVD of W (O, I) ("SVDQuant", 2024).

    L1 and L2 are rounded to `dtype` first, so the residual absorbs their rounding and
    L1 L2 + R equals W up to float32 arithmetic.
    """
    w = weight.detach().float()
    rank = min(rank, *w.shape)
    U, S, Vh = torch.linalg.svd(w.double(), full_matrices=False)  # float64: exact at full rank
    L1 = (U[:, :rank] * S[:rank]).to(dtype)  # (O, r): the singular values ride on L1
    L2 = Vh[:rank].to(dtype)  # (r, I)
    R = (w.double() - L1.double() @ L2.double()).float()
    return L1, L2, R
