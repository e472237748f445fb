"""Calibration: determinism, timestep groups over a trajectory, shortcut splits, range methods."""

from __future__ import annotations

import pytest
import torch
from quant_helpers import inputs, tiny_net
from torch import nn

from difflab.core.context import StepContext, step_context
from difflab.quant import FORMATS, RANGE_METHODS, ActivationObserver, QuantConfig, quantize
from difflab.quant.calibrate import timestep_group
from difflab.quant.modules import ActQuantizer

INT8 = FORMATS.get("int8")


def trajectory(num_steps: int = 8, seed: int = 1):
    """A calibration run: every step publishes its context, inputs grow with the step."""
    def run(model: nn.Module) -> torch.Tensor:
        out = []
        for i in range(num_steps):
            with step_context(StepContext(i, num_steps, 1.0 - i / num_steps)):
                out.append(model(inputs(seed + i) * (1 + i)))
        return torch.stack(out)
    return run


@torch.no_grad()
@pytest.mark.parametrize("method", ["minmax", "percentile", "mse"])
def test_calibration_is_deterministic(method):
    cfg = QuantConfig(act_granularity="tensor", act_dynamic=False, calibration=method,
                      timestep_groups=2, include=("blocks.0.*", "stem"))
    scales = []
    for _ in range(2):
        net = tiny_net()
        h = quantize(net, cfg, calibrate=trajectory(num_steps=4))
        scales.append({n: m.act.scale.clone() for n, m in h.layers.items()})
    for n in scales[0]:
        assert torch.equal(scales[0][n], scales[1][n])


def test_range_methods_clip_inside_minmax():
    x = torch.randn(4000, generator=torch.Generator().manual_seed(0))
    x[0] = 40.0  # one outlier
    lo, hi = RANGE_METHODS.get("minmax")(x, INT8, True)
    for method in ("percentile", "mse"):
        clo, chi = RANGE_METHODS.get(method)(x, FORMATS.get("int4"), True)
        assert 0 < max(-clo, chi) < max(-lo, hi)  # the outlier is clipped


def test_timestep_groups_track_the_trajectory():
    obs = ActivationObserver(channel_dim=-1)
    for i in range(8):
        with step_context(StepContext(i, 8, 1.0)):
            obs.record(torch.full((4, 3), float(i + 1)))
    lo, hi = obs.ranges(RANGE_METHODS.get("minmax"), INT8, True, groups=4)
    # rows: 4 groups of two steps each, then all steps together
    assert hi[:, 0].tolist() == [2.0, 4.0, 6.0, 8.0, 8.0]
    act = ActQuantizer(INT8, "tensor", dynamic=False, groups=4)
    act.set_ranges(lo, hi)
    x = torch.full((1, 3), 7.0)
    with step_context(StepContext(0, 8, 1.0)):
        clipped = act(x)  # step 0's group only saw values up to 2
    assert torch.allclose(clipped, torch.full((1, 3), 2.0))
    assert torch.allclose(act(x), x, rtol=1e-2)  # outside a sampler: the all-steps scale
    assert [timestep_group(s, 8, 4) for s in range(8)] == [0, 0, 1, 1, 2, 2, 3, 3]


def test_not_timestep_aware_sees_only_the_last_step():
    obs = ActivationObserver(channel_dim=-1, only_last_step=True)
    for i in range(5):
        with step_context(StepContext(i, 5, 1.0)):
            obs.record(torch.full((2, 2), float(10 - i)))
    assert obs.steps() == [4]


def test_shortcut_split_gives_each_part_its_own_scale():
    g = torch.Generator().manual_seed(0)
    h, skip = torch.randn(2, 4, 3, 3, generator=g) * 0.01, torch.randn(2, 6, 3, 3, generator=g) * 10
    x = torch.cat([h, skip], dim=1)  # channels 0..3 tiny, 4..9 large
    obs_one, obs_split = ActivationObserver(1), ActivationObserver(1, split=4)
    obs_one.record(x)
    obs_split.record(x)
    errs = []
    for obs, split in ((obs_one, None), (obs_split, 4)):
        act = ActQuantizer(INT8, "tensor", dynamic=False, channel_dim=1, split=split)
        act.set_ranges(*obs.ranges(RANGE_METHODS.get("minmax"), INT8, True, groups=1))
        errs.append(float((act(x) - x)[:, :4].abs().max()))
        if split:
            scale_h = float(h.abs().max()) / 127
            assert errs[-1] <= scale_h / 2 * (1 + 1e-5)
    assert errs[1] < errs[0] / 100


@torch.no_grad()
def test_static_calibrated_model_stays_close():
    net = tiny_net()
    run = trajectory()
    ref = run(net)
    cfg = QuantConfig(act_granularity="tensor", act_dynamic=False, calibration="percentile",
                      timestep_groups=4)
    h = quantize(net, cfg, calibrate=run)
    rel = float((run(net) - ref).square().mean() / ref.square().mean())
    assert rel < 1e-2
    assert all(bool(m.act.calibrated) for m in h.layers.values())
