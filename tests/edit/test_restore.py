"""Restoration: noiseless DDNM satisfies A x = y; both solvers run on the shipped base."""

import pytest
import torch

from difflab.config import ConfigError
from difflab.edit.operators import make_operator
from difflab.edit.restore import RestoreConfig, restore


@pytest.mark.parametrize("problem", ["sr4", "inpaint", "deblur", "cs:0.25"])
def test_ddnm_noiseless_matches_measurement(scene, problem):
    pipe, x, prompts, seeds = scene
    op = make_operator(problem, tuple(x.shape[1:]), seed=3)
    y = op.A(x)
    out = restore(pipe, op, y, prompts, seeds, RestoreConfig("ddnm", steps=3))
    assert torch.allclose(op.A(out), y, atol=1e-4)
    # the null-space part came from the model, not from the pseudo-inverse alone
    assert (out - op.A_pinv(y)).abs().max() > 1e-2


def test_dps_moves_toward_measurement(scene):
    pipe, x, prompts, seeds = scene
    op = make_operator("sr4", tuple(x.shape[1:]))
    y = op.A(x)
    free = restore(pipe, op, y, prompts, seeds, RestoreConfig("dps", steps=3, step_size=0))
    guided = restore(pipe, op, y, prompts, seeds, RestoreConfig("dps", steps=3, step_size=4))
    err = [(op.A(o) - y).flatten(1).norm(dim=1) for o in (free, guided)]
    assert (err[1] < err[0]).all()


def test_bad_config():
    with pytest.raises(ConfigError, match="unknown restore method"):
        RestoreConfig("pigdm")
    with pytest.raises(ConfigError, match="steps"):
        RestoreConfig(steps=0)
