import sys

import pytest
import torch

from difflab.eval.cost import (
    Timing,
    count_calls,
    count_flops,
    peak_memory,
    time_callable,
    time_interleaved,
    weight_bytes,
)
from difflab.io import save_tensors


class FakeClock:
    """A clock that only moves when a timed callable says how long it 'took'."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def spend(self, seconds):
        self.now += seconds


def test_timer_reports_median_over_requested_repeats():
    clock = FakeClock()
    durations = iter([100.0, 100.0, 3.0, 1.0, 4.0, 1.0, 5.0])  # two warm-up runs first
    t = time_callable(lambda: clock.spend(next(durations)), repeats=5, warmup=2,
                      clock=clock, sync=lambda: None)
    assert t.times == (3.0, 1.0, 4.0, 1.0, 5.0)
    assert (t.median, t.q1, t.q3, t.min, t.max) == (3.0, 1.0, 4.0, 1.0, 5.0)
    assert t.images_per_s(6) == 2.0
    assert Timing.from_times([2.0, 4.0]).median == 3.0


def test_interleaved_timing_rotates_order_and_times_each():
    clock = FakeClock()
    calls = []

    def make(name, seconds):
        def fn():
            calls.append(name)
            clock.spend(seconds)
        return fn

    fns = {"base": make("base", 2.0), "a": make("a", 1.0), "b": make("b", 4.0)}
    timings = time_interleaved(fns, repeats=4, warmup=1, clock=clock, sync=lambda: None)
    assert {k: t.times for k, t in timings.items()} == {
        "base": (2.0,) * 4, "a": (1.0,) * 4, "b": (4.0,) * 4}
    rounds = [calls[i : i + 3] for i in range(0, len(calls), 3)]
    assert len(rounds) == 5 and all(sorted(r) == ["a", "b", "base"] for r in rounds)
    assert [r[0] for r in rounds] == ["base", "a", "b", "base", "a"]  # rotated each round


def test_timer_rejects_bad_repeats():
    with pytest.raises(ValueError, match="repeats"):
        time_callable(lambda: None, repeats=0)


def test_flops_of_a_linear_layer_are_2mnk():
    layer = torch.nn.Linear(64, 32, bias=False)
    x = torch.randn(4, 64)
    assert count_flops(lambda: layer(x)) == 2 * 4 * 64 * 32


def test_call_counter_counts_and_removes_its_hook():
    net = torch.nn.Linear(3, 3)
    with count_calls(net) as counter:
        for b in (1, 2, 5):
            net(torch.zeros(b, 3))
    net(torch.zeros(1, 3))  # after the block: not counted
    assert counter.calls == 3 and counter.batch_sizes == [1, 2, 5]
    assert len(net._forward_pre_hooks) == 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM is Linux-only")
def test_peak_memory_sees_a_large_temporary_tensor():
    n = 16 * 2**20  # 64 MiB of float32, written so its pages are resident

    peak = peak_memory(lambda: torch.ones(n).sum())
    assert peak.method in ("rss_hwm_linux", "ru_maxrss_growth_lower_bound")
    if peak.method == "rss_hwm_linux":
        assert peak.bytes >= 0.9 * n * 4


def test_weight_bytes_of_module_and_file(tmp_path):
    net = torch.nn.Sequential(torch.nn.Linear(10, 5), torch.nn.BatchNorm1d(5))
    # Linear: 55 float32; BatchNorm: 10 float32 params, 10 float32 stats, 1 int64 counter.
    assert weight_bytes(net) == (55 + 10 + 10) * 4 + 8
    assert weight_bytes(net.to(torch.bfloat16)) == (55 + 10 + 10) * 2 + 8
    path = save_tensors(tmp_path / "w.safetensors", net.state_dict())
    assert weight_bytes(path) == path.stat().st_size > (55 + 10 + 10) * 2
    with pytest.raises(FileNotFoundError, match="nope"):
        weight_bytes(tmp_path / "nope.safetensors")
