"""SDEdit: strength 0 returns the input; higher strength changes it more."""

import pytest
import torch

from difflab.config import ConfigError
from difflab.edit.sdedit import sdedit
from difflab.runtime import SampleConfig


def test_strength_zero_is_identity(scene):
    pipe, x, _, seeds = scene
    out = sdedit(pipe, x, ["a blue square"] * 2, seeds, SampleConfig(steps=4), 0.0)
    assert torch.equal(out, x)


def test_strength_orders_change(scene):
    pipe, x, _, seeds = scene
    cfg = SampleConfig(steps=4)
    change = [(sdedit(pipe, x, ["a blue square"] * 2, seeds, cfg, s) - x).abs().mean()
              for s in (0.25, 1.0)]
    assert 0 < change[0] < change[1]


def test_bad_strength(scene):
    pipe, x, _, seeds = scene
    with pytest.raises(ConfigError, match="strength"):
        sdedit(pipe, x, ["a"] * 2, seeds, SampleConfig(steps=4), 1.5)
