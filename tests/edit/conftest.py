import pytest

from difflab.data.shapes import render_specs
from difflab.data.suites import expand_suite, load_suite
from difflab.edit.restore import to_tensor
from difflab.runtime import load


@pytest.fixture(scope="session")
def base():
    return load("shapes-base")


@pytest.fixture(scope="session")
def scene(base):
    """(pipeline, two ground-truth renders in [-1, 1], their prompts, their seeds)."""
    specs, seeds = expand_suite(load_suite("all"), 1, split="test")
    x = to_tensor(render_specs(specs[:2], seeds[:2], base.image_shape[-1]))
    return base, x, [s.text for s in specs[:2]], seeds[:2]
