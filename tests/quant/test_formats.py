"""Number formats: exact rounding onto the enumerated grid, error bounds, codes and packing."""

from __future__ import annotations

import pytest
import torch

from difflab.quant.formats import (
    FORMATS,
    compute_qparams,
    dequantize_values,
    fake_quantize,
    pack_codes,
    quantize_values,
    unpack_codes,
)
from difflab.registry import UnknownNameError

FLOATS = ["fp8_e4m3", "fp8_e5m2", "fp4_e2m1"]
INTS = [f"int{b}" for b in range(2, 9)] + [f"uint{b}" for b in range(2, 9)]


def _nearest_even(v: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Reference: the nearest grid value, ties to the even code (even index among |values|)."""
    d = (grid[None, :] - v[:, None]).abs()
    best = d.min(dim=1, keepdim=True).values
    out = []
    for row, b in zip(d, best, strict=True):
        idx = torch.nonzero(row == b).flatten().tolist()
        if len(idx) > 1:
            mags = grid[idx].abs()
            pos = grid[grid >= 0]
            codes = [int(torch.nonzero(pos == m)[0]) for m in mags]
            idx = [i for i, c in zip(idx, codes, strict=True) if c % 2 == 0]
        out.append(grid[idx[0]])
    return torch.stack(out)


@pytest.mark.parametrize("name", FLOATS)
def test_float_rounding_matches_enumerated_grid(name):
    fmt = FORMATS.get(name)
    grid = fmt.grid
    g = torch.Generator().manual_seed(0)
    mids = (grid[1:] + grid[:-1]) / 2  # exact ties between neighbours
    v = torch.cat([torch.randn(2000, generator=g) * fmt.max_value / 4, mids, grid,
                   torch.randn(200, generator=g) * float(grid[grid > 0].min()) * 4])
    v = v.clamp(-fmt.max_value, fmt.max_value)
    assert torch.equal(fmt.round(v), _nearest_even(v, grid))


@pytest.mark.parametrize("name", FLOATS)
def test_float_saturates_and_grid_is_fixed(name):
    fmt = FORMATS.get(name)
    big = torch.tensor([fmt.max_value * 1.5, -fmt.max_value * 10, 1e30])
    assert torch.equal(fmt.round(big), torch.tensor([1.0, -1.0, 1.0]) * fmt.max_value)
    assert torch.equal(fmt.round(fmt.grid), fmt.grid)
    assert len(torch.unique(fmt.grid)) == len(fmt.grid)


@pytest.mark.parametrize("name,dtype", [("fp8_e4m3", torch.float8_e4m3fn),
                                        ("fp8_e5m2", torch.float8_e5m2)])
def test_fp8_matches_torch_casts(name, dtype):
    fmt = FORMATS.get(name)
    x = torch.randn(20000, generator=torch.Generator().manual_seed(1)) * fmt.max_value / 8
    assert torch.equal(fmt.round(x), x.to(dtype).float())


@pytest.mark.parametrize("name", FLOATS)
def test_float_relative_error_bound(name):
    fmt = FORMATS.get(name)
    x = torch.randn(5000, generator=torch.Generator().manual_seed(2)) * 3
    scale, zero = compute_qparams(x, fmt, "tensor")
    err = (fake_quantize(x, fmt, scale, zero, "tensor") - x).abs()
    tiny = 2.0 ** (fmt.emin - fmt.man_bits - 1) * scale  # half a subnormal step
    bound = torch.maximum(x.abs() * 2.0 ** -(fmt.man_bits + 1), tiny)
    assert bool((err <= bound * (1 + 1e-6)).all())


# a symmetric grid needs a signed format: unsigned ones are tested asymmetric only
INT_CASES = [(n, s) for n in INTS for s in (True, False) if n.startswith("int") or not s]


@pytest.mark.parametrize("name,symmetric", INT_CASES)
@pytest.mark.parametrize("granularity", ["tensor", "channel", "group"])
def test_int_error_within_half_scale(name, granularity, symmetric):
    fmt = FORMATS.get(name)
    w = torch.randn(6, 16, generator=torch.Generator().manual_seed(3)) + 0.3
    scale, zero = compute_qparams(w, fmt, granularity, 4, symmetric)
    err = fake_quantize(w, fmt, scale, zero, granularity, 4) - w
    from difflab.quant.formats import as_rows
    assert bool((as_rows(err, granularity, 4).abs() <= scale / 2 * (1 + 1e-5)).all())
    # values already on the grid are fixed points
    w_hat = fake_quantize(w, fmt, scale, zero, granularity, 4)
    assert torch.allclose(fake_quantize(w_hat, fmt, scale, zero, granularity, 4), w_hat,
                          rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", INTS + FLOATS)
def test_codes_round_trip_and_packing(name):
    fmt = FORMATS.get(name)
    w = torch.randn(5, 7, generator=torch.Generator().manual_seed(4))
    scale, zero = compute_qparams(w, fmt, "channel", symmetric=fmt.signed)
    q = quantize_values(w, fmt, scale, zero, "channel")
    codes = fmt.encode(q)
    assert int(codes.max()) < 2**fmt.bits
    assert torch.equal(fmt.decode(codes), q)
    packed = pack_codes(codes, fmt.bits)
    assert packed.numel() == (-(-codes.numel() // 2) if fmt.bits <= 4 else codes.numel())
    assert torch.equal(unpack_codes(packed, fmt.bits, tuple(codes.shape)), codes)
    w_hat = dequantize_values(fmt.decode(codes), scale, zero, "channel")
    assert torch.equal(w_hat, fake_quantize(w, fmt, scale, zero, "channel"))


def test_unknown_format_lists_valid_names():
    with pytest.raises(UnknownNameError, match="fp8_e4m3"):
        FORMATS.get("int9")
