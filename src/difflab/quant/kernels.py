"""Real int8 execution: W8A8 linear layers through `torch._int_mm` (int8 x int8 -> int32),
per-output-channel weight scales and per-token (dynamic) or calibrated (static) input scales.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from difflab.quant.formats import FORMATS, compute_qparams, quantize_values
from difflab.quant.modules import ActQuantizer
from difflab.quant.outliers import apply_smoothing

INT8 = FORMATS.get("int8")


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def int8_mm(a: Tensor, b: Tensor, pad: bool | None = None) -> Tensor:
    """a (M, K) int8 @ b (K, N) int8 -> (M, N) int32, exactly.

    torch._int_mm on CUDA needs M > 16 and K, N multiples of 8; with `pad` (the default on
    CUDA) the operands are zero-padded to that and the result sliced, which is exact because
    zero rows/columns add nothing. The CPU kernel takes any shape, so it is not padded there.
    """
    pad = a.is_cuda if pad is None else pad
    if not pad:
        return torch._int_mm(a, b)
    M, K = a.shape
    N = b.shape[1]
    Mp, Kp, Np = max(M, 17), _round_up(K, 8), _round_up(N, 8)
    if (Mp, Kp, Np) != (M, K, N):
        a = F.pad(a, (0, Kp - K, 0, Mp - M))
        b = F.pad(b, (0, Np - N, 0, Kp - K))
    return torch._int_mm(a, b)[:M, :N]


class Int8Linear(nn.Module):
    """Real W8A8 linear: y = (q_x q_W^T in int32) * s_x s_W + b ("LLM.int8()", 2022 /
    "SmoothQuant", 2023 style symmetric int8 with per-channel weight scales)."""

    execution = "real"

    def __init__(self, linear: nn.Linear, act: ActQuantizer, smooth: Tensor | None = None,
                 pad: bool | None = None) -> None:
        super().__init__()
        if act.fmt is not INT8 or not act.symmetric or act.split is not None:
            raise ValueError("Int8Linear needs a symmetric int8 activation quantizer, no split")
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight_dtype = linear.weight.dtype
        self.pad = pad
        w = linear.weight.detach().float()
        if smooth is not None:
            w = apply_smoothing(w, smooth)
        scale, zero = compute_qparams(w, INT8, "channel", symmetric=True)  # (O, 1)
        q = quantize_values(w, INT8, scale, zero, "channel")
        # stored (I, O) contiguous: _int_mm's right operand, read without a transpose copy
        self.register_buffer("weight_int8_t", q.to(torch.int8).t().contiguous())
        self.register_buffer("weight_scale", scale.view(-1))  # (O,)
        b = linear.bias
        self.register_buffer("bias", None if b is None else b.detach().float().clone())
        self.register_buffer("smooth", None if smooth is None else smooth.detach().float())
        self.act = act

    def forward(self, x: Tensor) -> Tensor:
        shape = x.shape
        x2 = x.reshape(-1, self.in_features).float()  # (M, I)
        if self.smooth is not None:
            x2 = x2 / self.smooth
        rows = x2 if self.act.granularity == "token" else x2.reshape(1, -1)
        sx, _ = self.act.qparams(rows, 0)  # (M, 1) per token, or (1, 1)
        xq = INT8.round(x2 / sx).to(torch.int8)  # (M, I)
        acc = int8_mm(xq, self.weight_int8_t, self.pad)  # (M, O) int32
        y = acc.float() * (sx * self.weight_scale)  # dequantize: s_x (M,1) * s_W (O,)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*shape[:-1], self.out_features).to(x.dtype)

    @property
    def weight(self) -> Tensor:
        """The dequantized (smoothed) weight (O, I), for code that reads `.weight.dtype`."""
        w = self.weight_int8_t.t().float() * self.weight_scale[:, None]
        return w.to(self.weight_dtype)

    def storage_bytes(self) -> int:
        return sum(b.numel() * b.element_size() for b in self.buffers())

    @property
    def weight_bits(self) -> int:
        return 8


def compile_for_inference(model: nn.Module, **kwargs) -> nn.Module:
    """torch.compile with inductor weight freezing (constant-folds the int8 weights and scales);
    call the result under torch.no_grad()."""
    import torch._inductor.config as inductor_config

    inductor_config.freezing = True
    return torch.compile(model, **kwargs)
