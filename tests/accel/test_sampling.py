"""TeaCache calibration, bottleneck sampling, and the bench adapter's accel table."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from accel_helpers import sample, tiny_model
from torch.utils.flop_counter import FlopCounterMode

from difflab.accel import apply_accel, calibrate_teacache, hook_names
from difflab.accel.bottleneck import (
    BottleneckConfig,
    sample_bottleneck,
    shift_sigmas,
    stage_steps,
)
from difflab.config import ConfigError
from difflab.core.denoisers import Denoiser
from difflab.core.processes import FlowProcess
from difflab.core.samplers import BatchNoise, initial_noise, sample_dpmpp_2m, sample_euler
from difflab.core.schedules import flow_shift


def test_calibration_fits_a_polynomial_that_teacache_takes():
    net = tiny_model("pixart")
    coeffs = calibrate_teacache(net, lambda: [sample(net, seeds=(s,)) for s in (0, 1)],
                                degree=2)
    assert len(coeffs) == 3 and np.isfinite(coeffs).all()
    assert hook_names(net) == [] and all(hook_names(b) == [] for b in net.blocks)
    with apply_accel(net, "teacache", {"coefficients": list(coeffs), "threshold": 0.0}):
        assert torch.equal(sample(net), sample(tiny_model("pixart")))


def test_calibration_recovers_a_known_relation():
    """A model whose output change equals its first-block residual change: the fit of degree 1
    must be close to y = x (the relation the polynomial should learn)."""
    net = tiny_model("pixart")
    for blk in net.blocks[1:]:  # later blocks are the identity: output ~ final(first block)
        for p in blk.parameters():
            p.data.zero_()
    coeffs = calibrate_teacache(net, lambda: sample(net, scale=1.0), degree=1)
    assert coeffs[0] > 0  # output changes grow with the signal's changes
    with pytest.raises(ConfigError, match="step pairs"):
        calibrate_teacache(net, lambda: sample(net, scale=1.0, steps=2), degree=4)


def test_a_negative_rescaled_change_counts_as_none():
    """y = -x rescales every change below zero; at threshold 0 nothing may be cached (a negative
    running sum would otherwise stay under the threshold and cache every step)."""
    net = tiny_model("pixart")
    with apply_accel(net, "teacache", {"coefficients": [-1.0, 0.0], "threshold": 0.0}) as h:
        out = sample(net)
    assert h.stats["cached"] == 0
    assert torch.equal(out, sample(tiny_model("pixart")))


def test_stage_steps_and_shift():
    for n in range(3, 40):
        counts = stage_steps(n, (0.2, 0.5, 0.3))
        assert sum(counts) == n and min(counts) >= 1
    model = FlowProcess().denoiser(tiny_model("pixart"))
    t = torch.linspace(1, 0, 11, dtype=torch.float64)
    # for flow, scaling t / (1 - t) by s is SD3's shift
    assert torch.allclose(shift_sigmas(model, t, 3.0), flow_shift(t, 3.0))
    ve = Denoiser()  # alpha = 1: sigma itself scales
    s = torch.tensor([80.0, 10.0, 1.0, 0.0])
    assert torch.allclose(shift_sigmas(ve, s, 0.5), s * 0.5)
    with pytest.raises(ConfigError, match="last stage"):
        BottleneckConfig(scales=(1.0, 0.5), fractions=(1, 1), shifts=(1, 1))


def _bottleneck(net, config, sampler=sample_euler, steps=10):
    model = FlowProcess().denoiser(net)
    ctx = torch.randn(2, 5, 32, generator=torch.Generator().manual_seed(1))
    x = initial_noise((3, 16, 16), [0, 1])
    sigmas = torch.linspace(1, 0, steps + 1)
    with torch.no_grad():
        if config is None:
            return sampler(model, x, sigmas, extra_args={"context": ctx})
        return sample_bottleneck(sampler, model, x, sigmas, config, extra_args={"context": ctx},
                                 noise=BatchNoise([5, 6]))


def test_bottleneck_one_stage_is_the_plain_sampler():
    net = tiny_model("pixart")
    one = BottleneckConfig(scales=(1.0,), fractions=(1.0,), shifts=(1.0,))
    for sampler in (sample_euler, sample_dpmpp_2m):
        assert torch.equal(_bottleneck(net, one, sampler), _bottleneck(net, None, sampler))


@pytest.mark.parametrize("kind", ["pixart", "pixart-rope"])
def test_bottleneck_runs_middle_steps_at_low_resolution(kind):
    net = tiny_model(kind)
    shapes = []
    handle = net.register_forward_pre_hook(lambda m, a: shapes.append(tuple(a[0].shape[-2:])))
    with FlopCounterMode(display=False) as fast:
        out = _bottleneck(net, BottleneckConfig())
    handle.remove()
    with FlopCounterMode(display=False) as full:
        _bottleneck(net, None)
    assert out.shape == (2, 3, 16, 16) and torch.isfinite(out).all()
    assert shapes == [(16, 16)] * 2 + [(8, 8)] * 5 + [(16, 16)] * 3
    assert fast.get_total_flops() < full.get_total_flops()


class FakePipe:
    """Stands in for a Pipeline: records which hooks were on the net while generating."""

    def __init__(self, net):
        self.net, self.seen = net, []

    def generate(self, prompts, seeds, config):
        self.seen.append(hook_names(self.net))
        return np.zeros((len(prompts), 16, 16, 3), np.uint8)


def test_bench_adapter_applies_and_removes_the_accel_table():
    from difflab.eval.commands import PipelineTarget, accel_of

    pipe = FakePipe(tiny_model("pixart"))
    target = PipelineTarget(pipe, "id")
    point = {"name": "p", "sampler": "euler", "steps": 4,
             "accel": {"method": "block_cache", "interval": 2}}
    target.generate(point, ["a"], [0])
    target.generate({"name": "q", "sampler": "euler", "steps": 4}, ["a"], [0])
    assert len(pipe.seen[0]) == 1 and pipe.seen[0][0].startswith("block_cache#")
    assert pipe.seen[1] == [] and hook_names(pipe.net) == []
    with pytest.raises(ConfigError, match="needs a method"):
        accel_of({"name": "r", "accel": {"interval": 2}})
    with pytest.raises(ConfigError, match="interval: expected int"):
        accel_of({"name": "r", "accel": {"method": "deepcache", "interval": "x"}})



def test_pipeline_bottleneck_samples_the_middle_at_low_resolution(tiny_pipeline):
    from difflab.runtime import SampleConfig

    pipe, net = tiny_pipeline, tiny_pipeline.net
    sizes = []
    net.register_forward_pre_hook(lambda m, args: sizes.append(tuple(args[0].shape[-2:])))
    prompts, seeds = ["a red circle", "a blue ring"], [3, 4]
    plain = pipe.generate(prompts, seeds, SampleConfig(steps=10, cfg=2.0))
    assert np.array_equal(plain, pipe.generate(prompts, seeds, SampleConfig(steps=10, cfg=2.0)))
    one_stage = {"scales": [1.0], "fractions": [1.0], "shifts": [1.0]}
    same = pipe.generate(prompts, seeds, SampleConfig(steps=10, cfg=2.0, bottleneck=one_stage))
    assert np.array_equal(plain, same)
    sizes.clear()
    low = pipe.generate(prompts, seeds, SampleConfig(steps=10, cfg=2.0,
                                                     bottleneck={"scales": [1.0, 0.5, 1.0]}))
    assert low.shape == plain.shape and not np.array_equal(low, plain)
    assert sizes == [(16, 16)] * 2 + [(8, 8)] * 5 + [(16, 16)] * 3  # fractions 0.2/0.5/0.3
    with pytest.raises(ConfigError, match="valid: scales"):
        SampleConfig(bottleneck={"scale": [1.0]})
