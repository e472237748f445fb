"""Mixed precision (knapsack vs brute force), configs, storage round trips and model sizes."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from quant_helpers import inputs, tiny_net

from difflab.config import ConfigError, dumps_toml, load_toml
from difflab.eval.cost import weight_bytes
from difflab.quant import (
    QUANTIZERS,
    QuantConfig,
    allocate_formats,
    layer_sensitivity,
    load_quantized,
    model_bytes,
    quantize,
    save_quantized,
    size_report,
)
from difflab.registry import UnknownNameError


def brute_force(errors, sizes, budget):
    names = list(errors)
    best = None
    for combo in itertools.product(*(list(errors[n]) for n in names)):
        size = sum(sizes[n][f] for n, f in zip(names, combo, strict=True))
        err = sum(errors[n][f] for n, f in zip(names, combo, strict=True))
        if size <= budget and (best is None or err < best[0]):
            best = (err, dict(zip(names, combo, strict=True)))
    return best


@pytest.mark.parametrize("seed", range(12))
def test_knapsack_matches_brute_force(seed):
    g = torch.Generator().manual_seed(seed)
    n_layers, fmts = 2 + seed % 4, ["int2", "int4", "int8"][: 2 + seed % 2]
    errors = {f"l{i}": {f: float(torch.rand(1, generator=g)) for f in fmts}
              for i in range(n_layers)}
    sizes = {f"l{i}": {f: int(torch.randint(1, 30, (1,), generator=g)) for f in fmts}
             for i in range(n_layers)}
    lo = sum(min(s.values()) for s in sizes.values())
    hi = sum(max(s.values()) for s in sizes.values())
    budget = lo + (hi - lo) * (seed % 5) // 4
    want_err, _ = brute_force(errors, sizes, budget)
    got = allocate_formats(errors, sizes, budget)
    assert sum(sizes[n][f] for n, f in got.items()) <= budget
    assert math.isclose(sum(errors[n][f] for n, f in got.items()), want_err, abs_tol=1e-12)


def test_knapsack_rejects_impossible_budget():
    with pytest.raises(ConfigError, match="budget"):
        allocate_formats({"a": {"int4": 1.0}}, {"a": {"int4": 10}}, 5)


@torch.no_grad()
def test_sensitivity_and_mixed_recipe():
    net, x = tiny_net(), inputs()
    sens = layer_sensitivity(net, lambda m: m(x), ["int2", "int8"])
    assert all(s["int2"] > s["int8"] for s in sens.values())
    handle = quantize(net, "mixed", calibrate=lambda m: m(x))
    chosen = [r["weight"] for r in handle.summary()]
    assert set(chosen) == {"int4", "int8"}


def test_config_toml_round_trip_and_errors(tmp_path):
    cfg = QuantConfig(weight_format="fp4_e2m1", act_format="fp8_e4m3", smooth_alpha=0.5,
                      include=("blocks.*",), layer_weight_format=(r"re:blocks\.0\.fc1=int4",),
                      act_split=("up.*=4",))
    path = tmp_path / "q.toml"
    path.write_text(dumps_toml(cfg.to_dict()))
    assert load_toml(QuantConfig, path) == cfg
    with pytest.raises(UnknownNameError, match="int8"):
        QuantConfig(weight_format="int9")
    with pytest.raises(ConfigError, match="asymmetric|act_split|smooth_alpha"):
        QuantConfig(smooth_alpha=2.0)
    with pytest.raises(ConfigError, match="calibration run"):
        quantize(tiny_net(), QuantConfig(act_granularity="tensor", act_dynamic=False))
    with pytest.raises(ConfigError, match="select no"):
        quantize(tiny_net(), QuantConfig(include=("nothing*",)))
    with pytest.raises(UnknownNameError, match="w8a8"):
        QUANTIZERS.get("w3a3")


@torch.no_grad()
@pytest.mark.parametrize("recipe", [
    "w4a4_svd", "w8a8_real", "fp4",
    QuantConfig(act_granularity="tensor", act_dynamic=False, timestep_groups=2)])
def test_save_load_round_trip(tmp_path, recipe):
    net, x = tiny_net(), inputs()
    handle = quantize(net, recipe, calibrate=lambda m: m(x))
    y = net(x)
    save_quantized(handle, tmp_path)
    fresh = tiny_net(seed=5)  # different float weights: everything must come from the files
    loaded = load_quantized(fresh, tmp_path)
    assert loaded.execution == handle.execution
    assert torch.equal(fresh(x), y)


def test_model_bytes_counts_packed_codes():
    net = tiny_net()
    fp32 = model_bytes(net)
    assert fp32 == sum(p.numel() * 4 for p in net.parameters())
    sizes = {}
    for recipe in ("w8a8", "w4a8"):
        h = quantize(net, recipe)
        report = size_report(h)
        sizes[recipe] = report["bytes"]
        assert weight_bytes(net) == report["bytes"]  # the bench counts stored bytes too
        assert report["fp32_bytes"] == fp32 and report["bf16_bytes"] == fp32 // 2
        head = h.layers["head"]
        bits = 8 if recipe == "w8a8" else 4
        expect = math.ceil(head.codes.numel() * bits / 8) + 4 * (head.weight_scale.numel()
                                                                 + head.weight_zero.numel()
                                                                 + head.bias.numel())
        assert head.storage_bytes() == expect
        h.remove()
    assert sizes["w4a8"] < sizes["w8a8"] < fp32 // 2


def test_quantize_checkpoint_command_refuses_bad_arguments(tmp_path):
    # the happy path (a real checkpoint quantized, then loaded and sampled) is in tests/runtime
    from difflab.quant.commands import quantize_checkpoint

    with pytest.raises(ConfigError, match="exactly one"):
        quantize_checkpoint(tmp_path, tmp_path / "q2")
    with pytest.raises(UnknownNameError, match="w9a9"):
        quantize_checkpoint(tmp_path, tmp_path / "q2", recipe="w9a9")
    with pytest.raises(ConfigError, match="no artefact at"):
        quantize_checkpoint(tmp_path / "missing", tmp_path / "q3", recipe="w8a8")
