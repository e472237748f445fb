"""Number formats (int2-8, fp8 e4m3/e5m2, fp4 e2m1), scales and exact fake quantization.

A format rounds an already-scaled value `v = x / scale (+ zero)` onto its value grid; the
helpers here pick scales per tensor, per output channel, per group or per token, and map
values to storage codes (the index of the value in the format's sorted grid, < 2**bits).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor

from difflab.config import ConfigError
from difflab.registry import Registry

GRANULARITIES = ("tensor", "channel", "group", "token")


@dataclass(frozen=True)
class IntFormat:
    """Uniform integer grid {qmin..qmax} ("Quantization and Training of Neural Networks for
    Efficient Integer-Arithmetic-Only Inference", 2018)."""

    bits: int
    signed: bool = True

    kind = "int"

    @property
    def name(self) -> str:
        return f"{'int' if self.signed else 'uint'}{self.bits}"

    @property
    def qmin(self) -> int:
        return -(2 ** (self.bits - 1)) if self.signed else 0

    @property
    def qmax(self) -> int:
        return 2 ** (self.bits - 1) - 1 if self.signed else 2**self.bits - 1

    @property
    def max_value(self) -> float:
        return float(self.qmax)

    def round(self, v: Tensor) -> Tensor:
        """Round half to even onto the integers, saturating at [qmin, qmax]."""
        return torch.round(v).clamp(self.qmin, self.qmax)

    @cached_property
    def grid(self) -> Tensor:
        """Every representable value, ascending (float32)."""
        return torch.arange(self.qmin, self.qmax + 1, dtype=torch.float32)

    def encode(self, q: Tensor) -> Tensor:
        """Grid values -> uint8 codes (index in the grid)."""
        return (q - self.qmin).to(torch.uint8)

    def decode(self, codes: Tensor) -> Tensor:
        """uint8 codes -> grid values (float32)."""
        return codes.to(torch.float32) + self.qmin


@dataclass(frozen=True)
class FloatFormat:
    """Minifloat with subnormals and saturation ("FP8 Formats for Deep Learning", 2022)."""

    name: str
    exp_bits: int
    man_bits: int
    bias: int
    max_value: float

    kind = "float"
    signed = True

    @property
    def bits(self) -> int:
        return 1 + self.exp_bits + self.man_bits

    @property
    def emin(self) -> int:
        """Exponent of the smallest normal number; subnormals share its spacing."""
        return 1 - self.bias

    def round(self, v: Tensor) -> Tensor:
        """Round to nearest, ties to even mantissa, onto the grid; |v| > max saturates."""
        a = v.abs()
        _, e = torch.frexp(a)  # a = m * 2**e with m in [0.5, 1): floor(log2 a) = e - 1
        e = (e - 1).clamp(min=self.emin)  # below emin the spacing is fixed (subnormals)
        step = torch.exp2((e - self.man_bits).to(v.dtype))
        q = torch.round(a / step) * step  # a / step is exact: step is a power of two
        return torch.copysign(q.clamp(max=self.max_value), v)

    @cached_property
    def grid(self) -> Tensor:
        """Every finite representable value, ascending (float32, one zero)."""
        m = torch.arange(2**self.man_bits, dtype=torch.float64)
        emax = 2**self.exp_bits - 1 - self.bias
        vals = [m * 2.0 ** (self.emin - self.man_bits)]  # subnormals and zero
        for e in range(self.emin, emax + 1):
            vals.append((1 + m / 2**self.man_bits) * 2.0**e)
        pos = torch.cat(vals)
        pos = pos[pos <= self.max_value]
        return torch.cat([-pos[1:].flip(0), pos]).to(torch.float32)

    def encode(self, q: Tensor) -> Tensor:
        """Grid values -> uint8 codes (index in the sorted grid)."""
        return torch.searchsorted(self.grid.to(q.device), q.float().contiguous()).to(torch.uint8)

    def decode(self, codes: Tensor) -> Tensor:
        """uint8 codes -> grid values (float32)."""
        return self.grid.to(codes.device)[codes.long()]


Format = IntFormat | FloatFormat

FORMATS: Registry[Format] = Registry("number format")
for _b in range(2, 9):
    FORMATS.register(f"int{_b}")(IntFormat(_b, signed=True))
    FORMATS.register(f"uint{_b}")(IntFormat(_b, signed=False))
# e4m3 "fn": no infinities, 1111.111 is NaN so the largest finite value is 1.75 * 2**8
FORMATS.register("fp8_e4m3")(FloatFormat("fp8_e4m3", 4, 3, 7, 448.0))
# e5m2 keeps IEEE infinities: the top exponent is reserved, max 1.75 * 2**15
FORMATS.register("fp8_e5m2")(FloatFormat("fp8_e5m2", 5, 2, 15, 57344.0))
# e2m1 (OCP MX fp4): values 0, 0.5, 1, 1.5, 2, 3, 4, 6
FORMATS.register("fp4_e2m1")(FloatFormat("fp4_e2m1", 2, 1, 1, 6.0))


def get_format(name: str | None) -> Format | None:
    """The format called `name`; None or "none" means no quantization."""
    return None if name in (None, "none") else FORMATS.get(name)


def as_rows(x: Tensor, granularity: str, group_size: int = 0) -> Tensor:
    """View `x` as (R, n): one scale per row.

    tensor: (1, numel); channel: (out_channels, rest) for a weight; token: (tokens, last dim)
    for an activation; group: rows of `group_size` consecutive inputs of one output channel.
    """
    if granularity == "tensor":
        return x.reshape(1, -1)
    if granularity == "channel":
        return x.reshape(x.shape[0], -1)
    if granularity == "token":
        return x.reshape(-1, x.shape[-1])
    if granularity == "group":
        row = x[0].numel() if x.dim() > 1 else x.numel()
        if group_size <= 0 or row % group_size:
            raise ConfigError(
                f"group_size={group_size} must be a positive divisor of the {row} inputs per "
                f"output channel (shape {tuple(x.shape)})"
            )
        return x.reshape(-1, group_size)
    raise ConfigError(f"granularity={granularity!r} is not valid; valid: {list(GRANULARITIES)}")


def scale_from_range(lo: Tensor, hi: Tensor, fmt: Format, symmetric: bool
                     ) -> tuple[Tensor, Tensor]:
    """(scale, zero) mapping [lo, hi] onto the format; zero is 0 when symmetric."""
    if symmetric:
        amax = torch.maximum(lo.abs(), hi.abs())
        scale = amax / fmt.max_value
        zero = torch.zeros_like(scale)
    else:
        if fmt.kind != "int":
            raise ConfigError(f"asymmetric quantization needs an integer format, got {fmt.name}")
        lo, hi = lo.clamp(max=0), hi.clamp(min=0)  # keep 0 exactly representable
        scale = (hi - lo) / (fmt.qmax - fmt.qmin)
        zero = torch.round(fmt.qmin - lo / torch.where(scale > 0, scale, 1.0))
        zero = zero.clamp(fmt.qmin, fmt.qmax)
    # an all-zero row gets scale 1 so that dividing by it is harmless
    return torch.where(scale > 0, scale, torch.ones_like(scale)), zero


def compute_qparams(x: Tensor, fmt: Format, granularity: str, group_size: int = 0,
                    symmetric: bool = True) -> tuple[Tensor, Tensor]:
    """Min-max (scale, zero) for `x`, each (R, 1) in the `as_rows` view."""
    rows = as_rows(x.detach(), granularity, group_size)
    lo, hi = rows.amin(dim=1, keepdim=True), rows.amax(dim=1, keepdim=True)
    return scale_from_range(lo, hi, fmt, symmetric)


def quantize_values(x: Tensor, fmt: Format, scale: Tensor, zero: Tensor, granularity: str,
                    group_size: int = 0) -> Tensor:
    """Grid values q (shaped like x) with x ~= (q - zero) * scale."""
    rows = as_rows(x, granularity, group_size).float()
    return fmt.round(rows / scale + zero).reshape(x.shape)


def dequantize_values(q: Tensor, scale: Tensor, zero: Tensor, granularity: str,
                      group_size: int = 0) -> Tensor:
    """(q - zero) * scale, shaped like q."""
    rows = as_rows(q, granularity, group_size)
    return ((rows - zero) * scale).reshape(q.shape)


def fake_quantize(x: Tensor, fmt: Format, scale: Tensor, zero: Tensor, granularity: str,
                  group_size: int = 0) -> Tensor:
    """Quantize then dequantize: x rounded onto the scaled grid, in x's dtype."""
    rows = as_rows(x, granularity, group_size).float()  # round in fp32 even for bf16 inputs
    q = fmt.round(rows / scale + zero)
    return ((q - zero) * scale).reshape(x.shape).to(x.dtype)


def fake_quantize_minmax(x: Tensor, fmt: Format, granularity: str, group_size: int = 0,
                         symmetric: bool = True) -> Tensor:
    """Fake quantization with min-max scales computed from x itself (dynamic)."""
    scale, zero = compute_qparams(x, fmt, granularity, group_size, symmetric)
    return fake_quantize(x, fmt, scale, zero, granularity, group_size)


def pack_codes(codes: Tensor, bits: int) -> Tensor:
    """Flatten uint8 codes; formats of <= 4 bits store two codes per byte (low nibble first)."""
    flat = codes.reshape(-1).to(torch.uint8)
    if bits > 4:
        return flat
    if flat.numel() % 2:
        flat = torch.cat([flat, flat.new_zeros(1)])
    return flat[0::2] | (flat[1::2] << 4)


def unpack_codes(packed: Tensor, bits: int, shape: tuple[int, ...]) -> Tensor:
    """Inverse of `pack_codes`: uint8 codes of `shape`."""
    n = 1
    for s in shape:
        n *= s
    if bits > 4:
        return packed.reshape(shape)
    flat = torch.stack([packed & 0xF, packed >> 4], dim=1).reshape(-1)
    return flat[:n].reshape(shape)
