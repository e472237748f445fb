"""The hook registry, per-branch step state, composition, specs and configs."""

from __future__ import annotations

import pytest
import torch
from accel_helpers import STEPS, sample, tiny_model
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from difflab.accel import (
    ACCELERATORS,
    ModelHook,
    accel_config,
    add_hook,
    apply_accel,
    full_steps,
    hook_names,
    parse_accel_spec,
    remove_hook,
)
from difflab.accel.api import needs_full
from difflab.config import ConfigError, dumps_toml, from_dict, to_dict
from difflab.core.context import branch_context, current_context
from difflab.core.processes import FlowProcess
from difflab.core.samplers import initial_noise, sample_euler
from difflab.registry import UnknownNameError


class Scale(ModelHook):
    replaces_forward = True

    def __init__(self, k: float) -> None:
        self.k = k

    def forward(self, module, call_next, *args, **kwargs):
        return call_next(*args, **kwargs) * self.k


class AddPre(ModelHook):
    def pre_forward(self, module, args, kwargs):
        return (args[0] + 1,), kwargs


def test_replacement_forwards_nest_and_remove_in_any_order():
    lin = nn.Linear(2, 2)
    x = torch.randn(3, 2)
    keys, plain = sorted(lin.__dict__), lin(x)
    add_hook(lin, "a", Scale(2.0))
    add_hook(lin, "b", Scale(3.0))
    add_hook(lin, "pre", AddPre())
    assert hook_names(lin) == ["a", "b", "pre"]
    assert torch.allclose(lin(x), 6 * lin.__class__.forward(lin, x + 1))
    remove_hook(lin, "a")  # not the last added
    assert torch.allclose(lin(x), 3 * lin.__class__.forward(lin, x + 1))
    with pytest.raises(ValueError, match="already"):
        add_hook(lin, "b", Scale(1.0))
    remove_hook(lin, "pre")
    remove_hook(lin, "b")
    with pytest.raises(KeyError, match="no hook named 'b'"):
        remove_hook(lin, "b")
    assert sorted(lin.__dict__) == keys and not lin._forward_pre_hooks
    assert torch.equal(lin(x), plain)


def test_hooks_see_the_step_context_and_cfg_branch():
    net = tiny_model("pixart")
    seen = []

    class Spy(ModelHook):
        def pre_forward(self, module, args, kwargs):
            ctx = current_context()
            seen.append((ctx.step, ctx.num_steps, ctx.branch, args[0].shape[0]))
            return args, kwargs

    add_hook(net.blocks[0], "spy", Spy())
    sample(net, steps=4, interval=(0.0, 0.6))  # guidance only while sigma <= 0.6
    remove_hook(net.blocks[0], "spy")
    assert [s[0] for s in seen] == [0, 1, 2, 3]
    assert {s[1] for s in seen} == {4}
    assert [(s[2], s[3]) for s in seen] == [("cond", 2), ("cond", 2), ("all", 4), ("all", 4)]


def _sequential_cfg(net: nn.Module, scale: float):
    """CFG as two separate model calls per step (branches "cond" then "uncond")."""
    model = FlowProcess().denoiser(net)

    def denoise(x, sigma, context):
        with branch_context("cond"):
            d_c = model(x, sigma, context=context)
        with branch_context("uncond"):
            d_u = model(x, sigma, context=torch.zeros_like(context))
        return d_u + scale * (d_c - d_u)

    denoise.alpha = model.alpha
    return denoise


@pytest.mark.parametrize(("kind", "method", "options"), [
    ("pixart", "block_cache", {"interval": 3}),
    ("pixart", "ras", {"ratio": 0.5, "warmup": 2, "full_every": 3}),
    ("unet", "deepcache", {"interval": 2}),
])
def test_cond_and_uncond_keep_separate_state(kind, method, options):
    """Batched CFG ("all") and sequential cond / uncond calls give the same cached result;
    a cache shared by the two branches would feed uncond the cond residual. (TeaCache is left
    out: on a batched call it makes one skip decision for the whole batch, by design.)"""
    net = tiny_model(kind)
    with apply_accel(net, method, options) as handle:
        batched = sample(net, seeds=(0,))
        g = torch.Generator().manual_seed(123)
        ctx = torch.randn(1, 5, net.config.context_dim, generator=g)
        x = initial_noise((3, 16, 16), [0])
        with torch.no_grad():
            seq = sample_euler(_sequential_cfg(net, 3.0), x, torch.linspace(1, 0, STEPS + 1),
                               extra_args={"context": ctx})
    assert handle.stats["cached"] + handle.stats["partial"] > 0
    assert torch.allclose(batched, seq, atol=1e-4)


def test_guidance_interval_switch_recomputes_and_runs_repeat_exactly():
    net = tiny_model("pixart")
    with apply_accel(net, "block_cache", {"interval": 100}) as handle:
        first = sample(net, interval=(0.0, 0.5))  # "cond" for sigma > 0.5, then "all"
        assert handle.stats["full"] == 2  # the first call of each branch key
        second = sample(net, interval=(0.0, 0.5))  # a new run resets every branch's state
    assert torch.equal(first, second)
    handle.reset()


def test_methods_compose():
    net = tiny_model("pixart")
    ras = {"ratio": 0.5, "warmup": 2, "full_every": 3}
    with apply_accel(net, "ras", ras):
        alone = sample(net)
    with apply_accel(net, "ras", ras), apply_accel(net, "block_cache", {"interval": 1}):
        assert torch.equal(sample(net), alone)  # an exact block cache changes nothing
    ref = sample(net)
    front = {"interval": 2, "start": 0, "end": 2, "active_to": 0.5}  # Delta-DiT style split
    rear = {"interval": 2, "start": 2, "end": 4, "active_from": 0.5}
    with apply_accel(net, "block_cache", front) as a, apply_accel(net, "block_cache", rear) as b:
        both = sample(net)
    assert a.stats["cached"] > 0 and b.stats["cached"] > 0
    assert not torch.equal(both, ref) and torch.equal(sample(net), ref)


def test_outside_a_sampler_hooks_pass_through():
    net = tiny_model("pixart")
    x, t, ctx = torch.randn(2, 3, 16, 16), torch.full((2,), 500.0), torch.randn(2, 5, 32)
    with torch.no_grad():
        ref = net(x, t, context=ctx)
        with apply_accel(net, "block_cache", {"interval": 5}):
            assert torch.equal(net(x, t, context=ctx), ref)
            assert torch.equal(net(x, t, context=ctx), ref)


def test_wrong_model_and_options_raise_clearly():
    with pytest.raises(ConfigError, match="UNet"):
        apply_accel(tiny_model("pixart"), "deepcache", {})
    with pytest.raises(ConfigError, match="transformer"):
        apply_accel(tiny_model("unet"), "teacache", {})
    with pytest.raises(ConfigError, match="DiT"):
        apply_accel(tiny_model("mmdit"), "ras", {})
    with pytest.raises(ConfigError, match="depth=4 is out of range; valid: 1..3"):
        apply_accel(tiny_model("unet"), "deepcache", {"depth": 4})
    with pytest.raises(UnknownNameError, match="valid: block_cache, deepcache"):
        apply_accel(tiny_model("unet"), "fastcache", {})


def test_parse_accel_spec():
    assert parse_accel_spec("deepcache") == ("deepcache", {})
    assert parse_accel_spec("deepcache:interval=3,depth=2") == (
        "deepcache", {"interval": 3, "depth": 2})
    assert parse_accel_spec("block_cache:steps=[0, 2,5],start=1") == (
        "block_cache", {"steps": [0, 2, 5], "start": 1})
    assert parse_accel_spec("teacache:coefficients=[1.5,-0.2]")[1] == {
        "coefficients": [1.5, -0.2]}
    with pytest.raises(ConfigError, match="intervl.*valid: interval"):
        parse_accel_spec("deepcache:intervl=3")
    with pytest.raises(UnknownNameError, match="unknown accelerator 'nope'"):
        parse_accel_spec("nope:x=1")


@pytest.mark.parametrize("name", list(ACCELERATORS))
def test_configs_round_trip(name):
    cfg = accel_config(name, {})
    cls = type(cfg)
    assert from_dict(cls, to_dict(cfg)) == cfg
    import tomllib

    assert from_dict(cls, tomllib.loads(dumps_toml(to_dict(cfg)))) == cfg


@given(st.integers(1, 60), st.integers(1, 8), st.sampled_from(["uniform", "quadratic"]),
       st.floats(0.0, 1.0))
def test_full_steps_schedules(n, interval, schedule, center):
    steps = full_steps(n, interval, schedule, center)
    assert steps[0] == 0 and steps == sorted(set(steps))
    assert all(0 <= s < n for s in steps)
    assert len(steps) <= -(-n // interval) + 1
    if schedule == "uniform":
        assert all(b - a == interval for a, b in zip(steps, steps[1:], strict=False))


def test_needs_full_detects_a_missed_full_step():
    assert needs_full(3, None, [0, 3])
    assert needs_full(3, 3, [0, 3])  # every call of a scheduled step (Heun's second)
    assert not needs_full(4, 3, [0, 3, 6])
    assert needs_full(7, 2, [0, 3, 6])  # this branch was away at step 6
