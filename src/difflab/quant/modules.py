"""Simulated quantized layers: `QuantLinear` / `QuantConv2d` fake-quantize weights (once, stored
as codes + scales) and activations (every call), optionally with smoothing and a low-rank branch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from difflab.core.context import current_context
from difflab.quant.calibrate import split_channels, timestep_group
from difflab.quant.formats import (
    Format,
    as_rows,
    compute_qparams,
    dequantize_values,
    fake_quantize,
    quantize_values,
    scale_from_range,
)
from difflab.quant.outliers import apply_smoothing, lowrank_split

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class WeightSpec:
    """How one layer's weight is quantized (fmt None = kept in float)."""

    fmt: Format | None
    granularity: str = "channel"
    group_size: int = 0
    symmetric: bool = True


class ActQuantizer(nn.Module):
    """Fake-quantizes a layer input: dynamic (scales from each input) or static (calibrated, a
    row of scales per timestep group plus a last row for calls outside a sampler)."""

    def __init__(self, fmt: Format | None, granularity: str = "token", symmetric: bool = True,
                 dynamic: bool = True, channel_dim: int = -1, split: int | None = None,
                 groups: int = 1) -> None:
        super().__init__()
        self.fmt, self.granularity, self.symmetric = fmt, granularity, symmetric
        self.dynamic, self.channel_dim = dynamic, channel_dim
        self.split, self.groups = split, groups
        parts = 1 if split is None else 2
        if fmt is not None and not dynamic:
            self.register_buffer("scale", torch.ones(groups + 1, parts))
            self.register_buffer("zero", torch.zeros(groups + 1, parts))
            self.register_buffer("calibrated", torch.tensor(False))

    def set_ranges(self, lo: Tensor, hi: Tensor) -> None:
        """Static scales from calibrated ranges, each (groups + 1, parts)."""
        scale, zero = scale_from_range(lo, hi, self.fmt, self.symmetric)
        self.scale.copy_(scale)
        self.zero.copy_(zero)
        self.calibrated.fill_(True)

    def _row(self) -> int:
        ctx = current_context()
        if ctx is None or self.groups == 1:
            return self.groups  # the all-steps row
        return timestep_group(ctx.step, ctx.num_steps, self.groups)

    def qparams(self, rows: Tensor, part: int) -> tuple[Tensor, Tensor]:
        """(scale, zero) for `rows` (R, C) of one channel part: (R, 1) dynamic, (1, 1) static."""
        if self.dynamic:
            return compute_qparams(rows, self.fmt, self.granularity, 0, self.symmetric)
        if not bool(self.calibrated):
            raise RuntimeError("static activation scales are not calibrated: pass a "
                               "calibration run to quantize(), or load stored scales")
        r = self._row()
        return self.scale[r, part].view(1, 1), self.zero[r, part].view(1, 1)

    def forward(self, x: Tensor) -> Tensor:
        if self.fmt is None:
            return x
        x_cl = x.movedim(self.channel_dim, -1)  # channels last: a "token" is one position
        out = []
        for i, part in enumerate(split_channels(x_cl, -1, self.split)):
            rows = as_rows(part, self.granularity)
            scale, zero = self.qparams(rows, i)
            q = fake_quantize(rows, self.fmt, scale, zero, self.granularity)
            out.append(q.reshape(part.shape))
        y = out[0] if len(out) == 1 else torch.cat(out, dim=-1)
        return y.movedim(-1, self.channel_dim)

    def storage_bytes(self) -> int:
        return sum(b.numel() * b.element_size() for b in self.buffers())


class _QuantLayer(nn.Module):
    """Shared weight handling: smoothing, low-rank split, codes + scales, cached dequantized W."""

    execution = "simulated"

    def _init_weight(self, weight: Tensor, bias: Tensor | None, spec: WeightSpec,
                     smooth: Tensor | None, rank: int, lowrank_dtype: str) -> None:
        self.spec = spec
        self.register_buffer("bias", None if bias is None else bias.detach().clone())
        self.register_buffer("smooth", None if smooth is None else smooth.detach().float())
        w = weight.detach()
        if smooth is not None:
            w = apply_smoothing(w.float(), smooth)
        L1 = L2 = None
        if rank > 0:
            L1, L2, w = lowrank_split(w, rank, DTYPES[lowrank_dtype])
        self.register_buffer("L1", L1)  # (O, r) 16-bit branch (SVDQuant)
        self.register_buffer("L2", L2)  # (r, I)
        self.weight_dtype = weight.dtype
        if spec.fmt is None:
            self.register_buffer("weight_float", w.clone().to(weight.dtype))
            self.register_buffer("weight_hat", self.weight_float, persistent=False)
            return
        scale, zero = compute_qparams(w.float(), spec.fmt, spec.granularity, spec.group_size,
                                      spec.symmetric)
        q = quantize_values(w.float(), spec.fmt, scale, zero, spec.granularity, spec.group_size)
        self.register_buffer("codes", spec.fmt.encode(q))  # uint8 index into the format grid
        self.register_buffer("weight_scale", scale)  # (R, 1) in the as_rows view
        self.register_buffer("weight_zero", zero)
        self.register_buffer("weight_hat", torch.empty(0), persistent=False)
        self.refresh()

    def refresh(self) -> None:
        """Recompute the cached dequantized weight from the stored codes and scales."""
        if self.spec.fmt is None:
            self.weight_hat = self.weight_float
            return
        q = self.spec.fmt.decode(self.codes)
        w = dequantize_values(q, self.weight_scale, self.weight_zero, self.spec.granularity,
                              self.spec.group_size)
        self.weight_hat = w.to(self.weight_dtype)

    @torch.no_grad()
    def join_lowrank(self, down: Tensor, up: Tensor) -> tuple[Tensor | None, Tensor | None]:
        """Add the weight change up @ down (a LoRA; conv layers: down a conv, up 1x1) to the
        16-bit low-rank branch, in the smoothed input space, as SVDQuant runs a LoRA on a
        quantized base ("SVDQuant", 2024): L1 <- [L1, up], L2 <- [L2; down diag(s)]. Returns
        the previous (L1, L2), which `set_lowrank` restores exactly."""
        before = (self.L1, self.L2)
        if self.smooth is not None:
            shape = [1, -1] + [1] * (down.dim() - 2)
            down = down.float() * self.smooth.view(shape)
        dtype = self.L2.dtype if self.L2 is not None else torch.float32
        down, up = down.to(dtype), up.to(dtype)
        if self.L1 is not None:
            down, up = torch.cat([self.L2, down], 0), torch.cat([self.L1, up], 1)
        self.set_lowrank(up, down)
        return before

    def set_lowrank(self, L1: Tensor | None, L2: Tensor | None) -> None:
        self.L1, self.L2 = L1, L2

    @property
    def weight(self) -> Tensor:
        """The effective (dequantized, smoothed) weight, for code that reads `.weight.dtype`."""
        return self.weight_hat

    def _smooth_input(self, x: Tensor, channel_dim: int) -> Tensor:
        if self.smooth is None:
            return x
        shape = [1] * x.dim()
        shape[channel_dim] = -1
        return x / self.smooth.to(x.dtype).view(shape)

    def storage_bytes(self) -> int:
        """Bytes on disk: codes at their bit width (packed), everything else as stored."""
        total = 0
        for name, b in self.named_buffers(recurse=False):
            if name == "weight_hat":
                continue
            if name == "codes":
                total += math.ceil(b.numel() * self.spec.fmt.bits / 8)
            else:
                total += b.numel() * b.element_size()
        return total + sum(m.storage_bytes() for m in self.children())

    @property
    def weight_bits(self) -> int:
        return 8 * torch.empty(0, dtype=self.weight_dtype).element_size() \
            if self.spec.fmt is None else self.spec.fmt.bits


class QuantLinear(_QuantLayer):
    """y = Q(x/s) Q(W s - L1 L2)^T + (x/s) (L1 L2)^T + b ("SVDQuant", 2024; plain without s, L)."""

    def __init__(self, linear: nn.Linear, spec: WeightSpec, act: ActQuantizer,
                 smooth: Tensor | None = None, rank: int = 0,
                 lowrank_dtype: str = "bfloat16") -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self._init_weight(linear.weight, linear.bias, spec, smooth, rank, lowrank_dtype)
        self.act = act

    def forward(self, x: Tensor) -> Tensor:
        x = self._smooth_input(x, -1)  # (..., I)
        y = F.linear(self.act(x), self.weight_hat, self.bias)  # (..., O)
        if self.L1 is not None:
            low = F.linear(F.linear(x.to(self.L2.dtype), self.L2), self.L1)  # (..., r) -> (..., O)
            y = y + low.to(y.dtype)
        return y


class QuantConv2d(_QuantLayer):
    """Conv2d with fake-quantized weight and input (per-output-channel weight scales)."""

    def __init__(self, conv: nn.Conv2d, spec: WeightSpec, act: ActQuantizer,
                 smooth: Tensor | None = None) -> None:
        super().__init__()
        if conv.padding_mode != "zeros":
            raise ValueError(f"padding_mode={conv.padding_mode!r} is not supported; valid: zeros")
        self.stride, self.padding = conv.stride, conv.padding
        self.dilation, self.groups = conv.dilation, conv.groups
        self._init_weight(conv.weight, conv.bias, spec, smooth, 0, "float32")
        self.act = act

    def forward(self, x: Tensor) -> Tensor:
        x = self._smooth_input(x, 1)  # (B, C, H, W)
        y = F.conv2d(self.act(x), self.weight_hat, self.bias, self.stride, self.padding,
                     self.dilation, self.groups)
        if self.L1 is not None:  # a joined LoRA: kxk conv to r channels, then 1x1 (join_lowrank)
            low = F.conv2d(x.to(self.L2.dtype), self.L2, None, self.stride, self.padding,
                           self.dilation)
            y = y + F.conv2d(low, self.L1).to(y.dtype)
        return y
