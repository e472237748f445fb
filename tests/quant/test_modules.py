"""Quantized modules: no-op identity, exact removal, smoothing, low-rank branch, real int8."""

from __future__ import annotations

import copy

import pytest
import torch
from quant_helpers import inputs, tiny_net
from torch import nn

from difflab.config import ConfigError
from difflab.quant import (
    FORMATS,
    ActQuantizer,
    QuantConfig,
    QuantLinear,
    int8_mm,
    lowrank_split,
    quantize,
)
from difflab.quant.modules import QuantConv2d, WeightSpec


@torch.no_grad()
def test_noop_formats_equal_original_bit_for_bit():
    net, x = tiny_net(), inputs()
    ref = net(x)
    handle = quantize(net, QuantConfig(weight_format="none", act_format="none"))
    assert len(handle.layers) == 2 + 2 * 4 + 1  # stem, down, 4 linears per block, head
    assert torch.equal(net(x), ref)


@torch.no_grad()
@pytest.mark.parametrize("recipe", ["w8a8", "w4a4", "fp4", "w8a8_real", "w4a4_svd"])
def test_remove_restores_bit_identical_outputs(recipe):
    net, x = tiny_net(), inputs()
    ref = net(x)
    originals = dict(net.named_modules())
    handle = quantize(net, recipe, calibrate=lambda m: m(x))
    assert not torch.equal(net(x), ref)
    handle.remove()
    assert torch.equal(net(x), ref)
    assert all(originals[n] is m for n, m in net.named_modules())


@torch.no_grad()
def test_error_shrinks_with_bits():
    net, x = tiny_net(), inputs()
    ref = net(x)
    errs = []
    for fmt in ("int3", "int5", "int8"):
        h = quantize(net, QuantConfig(weight_format=fmt, act_format=fmt))
        errs.append(float((net(x) - ref).square().mean()))
        h.remove()
    assert errs[0] > errs[1] > errs[2]


@torch.no_grad()
@pytest.mark.parametrize("shape", [(3, 60, 36), (40, 64, 24), (17, 8, 8)])
@pytest.mark.parametrize("pad", [False, True])
def test_int8_mm_is_exact(shape, pad):
    M, K, N = shape
    g = torch.Generator().manual_seed(0)
    a = torch.randint(-128, 128, (M, K), generator=g, dtype=torch.int8)
    b = torch.randint(-128, 128, (K, N), generator=g, dtype=torch.int8)
    assert torch.equal(int8_mm(a, b, pad=pad), (a.long() @ b.long()).int())


@torch.no_grad()
@pytest.mark.parametrize("dynamic", [True, False])
def test_real_int8_matches_simulated_w8a8(dynamic):
    net, x = tiny_net(), inputs()
    sim_net, real_net = copy.deepcopy(net), copy.deepcopy(net)
    gran = "token" if dynamic else "tensor"
    cfg = QuantConfig(act_granularity=gran, act_dynamic=dynamic, include=("blocks.*",))
    h_sim = quantize(sim_net, cfg, calibrate=lambda m: m(x))
    h_real = quantize(real_net, cfg.replace(execution="real"), calibrate=lambda m: m(x))
    assert (h_sim.execution, h_real.execution) == ("simulated", "real")
    y_sim, y_real = sim_net(x), real_net(x)
    # same integers, same scales: only float summation order differs
    assert torch.allclose(y_real, y_sim, rtol=1e-4, atol=1e-5 * float(y_sim.abs().max()))
    for name, layer in h_real.layers.items():
        z = torch.randn(5, 7, layer.in_features)
        assert torch.allclose(layer(z), h_sim.layers[name](z), rtol=1e-4, atol=1e-5)


def test_real_execution_skips_convs_and_rejects_other_formats():
    net = tiny_net()
    handle = quantize(net, "w8a8_real")
    assert set(handle.skipped) == {"stem", "down"} and handle.execution == "real"
    with pytest.raises(ConfigError, match="weight_format"):
        QuantConfig(weight_format="int4", execution="real")


@torch.no_grad()
def test_smoothing_keeps_float_output():
    g = torch.Generator().manual_seed(0)
    lin, conv = nn.Linear(16, 8), nn.Conv2d(6, 4, 3, padding=1)
    for layer, x, in_ch in ((lin, torch.randn(4, 16, generator=g), 16),
                            (conv, torch.randn(2, 6, 5, 5, generator=g), 6)):
        s = torch.rand(in_ch, generator=g) * 4 + 0.25
        spec, act = WeightSpec(None), ActQuantizer(None, channel_dim=1 if in_ch == 6 else -1)
        q = QuantLinear(layer, spec, act, s) if in_ch == 16 else QuantConv2d(layer, spec, act, s)
        assert torch.allclose(q(x), layer(x), rtol=1e-5, atol=1e-6)


@torch.no_grad()
def test_full_rank_branch_reproduces_layer():
    g = torch.Generator().manual_seed(0)
    lin = nn.Linear(12, 20)
    L1, L2, R = lowrank_split(lin.weight, 12, torch.float32)
    assert float(R.abs().max()) < 1e-6 * float(lin.weight.abs().max())
    q = QuantLinear(lin, WeightSpec(FORMATS.get("int4")), ActQuantizer(None), rank=12,
                    lowrank_dtype="float32")
    x = torch.randn(6, 12, generator=g)
    assert torch.allclose(q(x), lin(x), rtol=1e-5, atol=1e-5)
    # a 16-bit branch of lower rank: L1 L2 + R is still W (the residual absorbs the rounding)
    L1, L2, R = lowrank_split(lin.weight, 4, torch.bfloat16)
    assert torch.allclose(L1.float() @ L2.float() + R, lin.weight, atol=1e-6)


@torch.no_grad()
def test_lowrank_branch_reduces_w4a4_error_with_outliers():
    net, x = tiny_net(), inputs()
    for name, p in net.named_parameters():
        if name.endswith("fc2.weight"):
            p[:, :3] *= 20  # a few outlier input channels, as in real DiT MLPs
    ref = net(x)
    errs = {}
    for recipe in ("w4a4", "w4a4_svd"):
        h = quantize(net, recipe, calibrate=lambda m: m(x))
        errs[recipe] = float((net(x) - ref).square().mean())
        h.remove()
    assert errs["w4a4_svd"] < errs["w4a4"]
