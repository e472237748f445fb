"""Precision, int8 kernels and threads chosen by the machine's capability (probe faked)."""

import os
from pathlib import Path

import pytest
import torch
from torch import nn

from difflab.config import ConfigError
from difflab.runtime import machine as mach
from difflab.runtime.machine import Machine, resolve_precision


def fake(device="cpu", bf16=False, int8=False, rates=None):
    flags = (("avx512_bf16",) if bf16 else ()) + (("avx512_vnni",) if int8 else ())
    return Machine(device, "Test CPU", "AVX512" if bf16 else "AVX2", flags, 2, bf16, int8,
                   rates or {})


DEMO = Path(__file__).resolve().parents[2] / "configs" / "demo.toml"
SLOW = {"fp32": 120.0, "bf16": 0.9, "int8": 2.0}
FAST = {"fp32": 160.0, "bf16": 405.0, "int8": 790.0}


@pytest.mark.parametrize("facts, device, want", [
    (fake(bf16=True, int8=True, rates=FAST), "cpu", "bf16"),  # AVX512_BF16 CPU
    (fake(rates=SLOW), "cpu", "fp32"),  # AVX2-only CPU
    (fake(bf16=True, rates=SLOW), "cpu", "fp32"),  # the flag lies: the probe says slow
    (fake(bf16=True), "cpu", "bf16"),  # not probed: the flags decide
    (fake("cuda", bf16=True), "cuda", "bf16"),
    (fake("cuda", bf16=False), "cuda", "fp32"),
])
def test_auto_picks_bf16_only_where_native(facts, device, want):
    p = resolve_precision("auto", device, facts)
    assert p.name == want and p.requested == "auto" and "Test CPU" in p.reason
    assert p.autocast_dtype == (torch.bfloat16 if want == "bf16" else None)


def test_explicit_values_are_kept(capsys):
    assert resolve_precision("fp32", "cpu", fake(bf16=True, rates=FAST)).name == "fp32"
    assert resolve_precision("fp16", "cuda", fake("cuda")).autocast_dtype == torch.float16
    assert resolve_precision("bf16", "cpu", fake(bf16=True, rates=FAST)).name == "bf16"
    assert capsys.readouterr().err == ""


def test_bf16_without_native_support_runs_with_one_warning(capsys):
    mach._warned.clear()
    for _ in range(3):
        assert resolve_precision("bf16", "cpu", fake(rates=SLOW)).name == "bf16"
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no native bf16" in err[0] and "133x slower" in err[0]


@pytest.mark.parametrize("value, match", [("fp16", "CUDA-only"), ("int4", "valid: auto")])
def test_bad_precisions_are_refused(value, match):
    with pytest.raises(ConfigError, match=match):
        resolve_precision(value, "cpu", fake())


def test_int8_kernels_verdict():
    assert mach.int8_kernels("cpu", fake(int8=True, rates=FAST)) == ""
    slow = mach.int8_kernels("cpu", fake(rates=SLOW))
    assert "no fast int8" in slow and "VNNI/AMX" in slow and "2.0 GOP/s" in slow
    assert mach.int8_kernels("cpu", fake(int8=True, rates=SLOW)) != ""  # the flag lies


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 8))


@pytest.mark.parametrize("fast", [True, False])
def test_int8_execution_falls_back_or_refuses_where_slow(monkeypatch, capsys, fast):
    from difflab.quant import transform
    from difflab.quant.config import QuantConfig

    monkeypatch.delenv("DIFFLAB_ALLOW_SLOW_INT8", raising=False)
    monkeypatch.setattr(mach, "int8_kernels", lambda device: "" if fast else "no VNNI")
    h = transform.quantize(_net(), QuantConfig(execution="auto"))
    assert h.execution == ("real" if fast else "simulated")
    assert ("no VNNI" in capsys.readouterr().err) == (not fast)
    if fast:
        assert transform.quantize(_net(), "w8a8_real").execution == "real"
    else:
        with pytest.raises(ConfigError, match="real int8 execution asked for, but no VNNI"):
            transform.quantize(_net(), "w8a8_real")
        monkeypatch.setenv("DIFFLAB_ALLOW_SLOW_INT8", "1")
        assert transform.quantize(_net(), "w8a8_real").execution == "real"


def test_threads_follow_available_cores(monkeypatch):
    n = mach.available_cores()
    assert 1 <= n <= (os.cpu_count() or 1)
    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("DIFFLAB_THREADS", raising=False)
        assert mach.configure_threads() == n == torch.get_num_threads()
        monkeypatch.setenv("DIFFLAB_THREADS", "1")
        assert mach.configure_threads() == 1 == torch.get_num_threads()
        monkeypatch.setenv("DIFFLAB_THREADS", "two")
        with pytest.raises(ConfigError, match="DIFFLAB_THREADS"):
            mach.configure_threads()
    finally:
        torch.set_num_threads(before)


def test_probe_measures_every_kind_and_is_cached(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    rates = mach.measure_rates("cpu", n=64, min_seconds=0.001)
    assert set(rates) == {"fp32", "bf16", "int8"} and min(rates.values()) > 0
    calls = []
    monkeypatch.setattr(mach, "measure_rates", lambda device: calls.append(device) or rates)
    facts = mach._facts("cpu")
    assert mach._cached_rates(facts) == rates == mach._cached_rates(facts)
    assert calls == ["cpu"]  # measured once, then read from the cache folder
    assert list((tmp_path / "difflab").glob("machine-*.json"))


def test_records_and_machine_comparison():
    rec = mach.run_record(resolve_precision("fp32", "cpu"))
    assert {"cpu", "capability", "threads", "torch", "precision", "date"} <= set(rec)
    assert mach.same_machine(rec, dict(rec)) == ""
    other = {**rec, "cpu": "Other CPU", "threads": 99}
    assert "cpu" in mach.same_machine(rec, other) and "threads" in mach.same_machine(rec, other)


def test_doctor_prints_the_choices():
    from typer.testing import CliRunner

    from difflab.cli import app

    before = torch.get_num_threads()
    try:
        out = CliRunner().invoke(app, ["doctor"])
    finally:
        torch.set_num_threads(before)
    assert out.exit_code == 0, out.output
    for word in ("torch", "cpu", "threads", "GFLOP/s", "precision   auto ->", "int8"):
        assert word in out.output


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_demo_steps_follow_the_machines_speed(monkeypatch, precision):
    from difflab.demo import BUDGET_S, DEMO_WORK, MIN_STEPS, demo_steps, machine_overrides
    from difflab.runtime.machine import Precision
    from difflab.train.config import load_train_config

    def steps_on(rate, overrides=()):
        monkeypatch.setattr(mach, "machine", lambda device: fake(rates={precision: rate}))
        return load_train_config(DEMO, machine_overrides(DEMO, list(overrides))).schedule.steps

    monkeypatch.setattr(mach, "resolve_precision",
                        lambda requested, *a, **k: Precision(requested, precision, "faked"))
    rates = [0.5, 20, 40, 60, 80, 120, 200, 400, 2000]
    steps = [steps_on(r) for r in rates]
    assert steps == sorted(steps) and steps[0] == MIN_STEPS and steps[-1] == 1300
    assert all(s % 100 == 0 for s in steps)
    for r, s in zip(rates, steps, strict=True):
        step_work, eval_work = DEMO_WORK[precision]
        if MIN_STEPS < s < 1300:  # the budget holds, and 100 more steps would break it
            assert (s * step_work + eval_work) / r <= BUDGET_S
            assert ((s + 100) * step_work + eval_work) / r > BUDGET_S
        assert s == demo_steps(1300, precision, r)
    assert steps_on(60, ["schedule.steps=50"]) == 50  # an explicit override is left alone
