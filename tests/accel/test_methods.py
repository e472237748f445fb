"""Every hook method: exact when it caches nothing, bit-identical after removal, and skipping
compute when it should."""

from __future__ import annotations

import copy

import pytest
import torch
from accel_helpers import count_calls, sample, tiny_model
from torch.utils.flop_counter import FlopCounterMode

from difflab.accel import apply_accel, hook_names

# (method, model, options that cache nothing, options that cache)
CASES = [
    ("deepcache", "unet", {"interval": 1}, {"interval": 3, "depth": 1}),
    ("deepcache", "unet", {"interval": 1, "depth": 3}, {"interval": 2, "depth": 2,
                                                        "schedule": "quadratic"}),
    ("encoder_propagation", "unet", {"interval": 1}, {"steps": [0, 1, 2, 5]}),
    ("block_cache", "pixart", {"interval": 1}, {"interval": 2, "start": 1, "end": 3}),
    ("block_cache", "mmdit", {"interval": 1}, {"interval": 3}),
    ("teacache", "pixart", {"threshold": 0.0}, {"threshold": 1e9}),
    ("teacache", "mmdit", {"threshold": 0.0, "head_blocks": 2}, {"threshold": 1e9}),
    ("first_block_cache", "pixart", {"threshold": 0.0}, {"threshold": 1e9}),
    ("ras", "pixart", {"ratio": 1.0}, {"ratio": 0.25, "warmup": 2, "full_every": 3}),
    ("ras", "pixart-rope", {"warmup": 100}, {"ratio": 0.5, "warmup": 1, "full_every": 0}),
]
IDS = [f"{m}-{k}-{i}" for i, (m, k, _, _) in enumerate(CASES)]


def _state(net: torch.nn.Module) -> tuple:
    """Everything a hook could leave behind on any submodule."""
    return tuple((name, sorted(m.__dict__), len(m._forward_hooks), len(m._forward_pre_hooks),
                  hook_names(m)) for name, m in net.named_modules())


@pytest.mark.parametrize(("method", "kind", "exact", "cached"), CASES, ids=IDS)
def test_no_caching_is_exact_and_removal_restores(method, kind, exact, cached):
    net = tiny_model(kind)
    pristine = copy.deepcopy(net)
    before = _state(net)
    ref = sample(pristine)
    with apply_accel(net, method, exact) as handle:
        assert torch.equal(sample(net), ref)  # interval 1 / threshold 0 / ratio 1
    with apply_accel(net, method, cached) as handle:
        approx = sample(net)
    assert handle.stats["full"] > 0
    assert not torch.equal(approx, ref)  # it did reuse something
    assert torch.isfinite(approx).all()
    assert _state(net) == before
    assert torch.equal(sample(net), ref)  # bit-identical to a model that never had hooks


@pytest.mark.parametrize(("method", "kind", "exact", "cached"), CASES, ids=IDS)
def test_caching_skips_compute(method, kind, exact, cached):
    net = tiny_model(kind)
    with FlopCounterMode(display=False) as full:
        sample(net)
    with apply_accel(net, method, cached) as handle, FlopCounterMode(display=False) as fast:
        sample(net)
    assert handle.stats["cached"] + handle.stats["partial"] > 0
    assert fast.get_total_flops() < full.get_total_flops()


def test_deepcache_runs_deep_stages_only_on_full_steps():
    net = tiny_model("unet")
    deep = [net.blocks[i] for i in range(1, len(net.blocks) - 1)]  # all but down_0 and up_0
    counts, handles = count_calls([m for d in deep for m in d.modules()
                                   if type(m).__name__ == "ResBlock"])
    per_call = None
    with apply_accel(net, "deepcache", {"interval": 3, "depth": 1}) as handle:
        sample(net, steps=7)
    per_step = sum(1 for d in deep for m in d.modules() if type(m).__name__ == "ResBlock")
    per_call = counts[0] // handle.stats["full"]
    for h in handles:
        h.remove()
    assert handle.stats["full"] == 3  # steps 0, 3, 6
    assert handle.stats["cached"] == 4
    assert per_call == per_step and counts[0] == 3 * per_step


def test_block_cache_skips_its_range_on_cached_steps():
    net = tiny_model("pixart")
    inner = [b.attn for b in net.blocks]
    counts, handles = count_calls(inner[1:3])
    outside, h2 = count_calls([inner[0], inner[3]])
    with apply_accel(net, "block_cache", {"interval": 4, "start": 1, "end": 3}):
        sample(net, steps=8)
    for h in handles + h2:
        h.remove()
    assert outside[0] == 2 * 8  # two blocks, every step
    assert counts[0] == 2 * 2  # two blocks, steps 0 and 4


def test_block_cache_active_window():
    net = tiny_model("pixart")
    with apply_accel(net, "block_cache", {"interval": 100, "active_from": 0.5}) as handle:
        sample(net, steps=8)
    assert handle.stats["cached"] == 4  # steps 4..7 (t / T >= 0.5) reuse step 3's residual
