"""Restoration: noiseless DDNM satisfies A x = y; both solvers run on the shipped base."""

import pytest
import torch

from difflab.config import ConfigError
from difflab.data.shapes import render_specs
from difflab.data.suites import expand_suite, load_suite
from difflab.edit.operators import make_operator
from difflab.edit.restore import RestoreConfig, restore, to_tensor
from difflab.runtime import load


@pytest.fixture(scope="module")
def scene():
    pipe = load("shapes-base")
    specs, seeds = expand_suite(load_suite("all"), 1, split="test")
    specs, seeds = specs[:2], seeds[:2]
    x = to_tensor(render_specs(specs, seeds, pipe.image_shape[-1]))
    return pipe, x, [s.text for s in specs], seeds


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
