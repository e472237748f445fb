"""Every schedule is strictly decreasing and ends in exactly 0, for any valid parameters."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from difflab.config import ConfigError
from difflab.core.processes import VPProcess
from difflab.core.schedules import SCHEDULES, get_sigmas, get_sigmas_vp_uniform
from difflab.registry import UnknownNameError

steps = st.integers(1, 200)
sigma_min = st.floats(1e-3, 1.0)
ratio = st.floats(1.05, 1e4)


def _check(sigmas: torch.Tensor, n: int) -> None:
    assert sigmas.ndim == 1 and len(sigmas) == n + 1
    assert sigmas[-1] == 0
    assert (sigmas[1:] < sigmas[:-1]).all(), sigmas


@settings(max_examples=60, deadline=None)
@given(n=steps, lo=sigma_min, r=ratio, rho=st.floats(1.0, 10.0))
def test_sigma_range_schedules(n: int, lo: float, r: float, rho: float) -> None:
    _check(get_sigmas("karras", n, sigma_min=lo, sigma_max=lo * r, rho=rho), n)
    _check(get_sigmas("exponential", n, sigma_min=lo, sigma_max=lo * r), n)
    # rho > 3 bunches the last sigmas closer than float64 resolves near sigma_min
    poly_rho = 0.25 + (rho - 1.0) / 9.0 * 2.75
    _check(get_sigmas("polyexponential", n, sigma_min=lo, sigma_max=lo * r, rho=poly_rho), n)


@settings(max_examples=40, deadline=None)
@given(n=steps, shift=st.floats(0.1, 10.0))
def test_flow_schedule(n: int, shift: float) -> None:
    sigmas = get_sigmas("flow", n, shift=shift)
    _check(sigmas, n)
    assert sigmas[0] == 1  # the shift keeps t = 1 (pure noise) where it is


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 1000), spacing=st.sampled_from(["leading", "trailing", "linspace"]),
       schedule=st.sampled_from(["linear", "cosine"]), discrete=st.booleans())
def test_vp_uniform_schedule(n: int, spacing: str, schedule: str, discrete: bool) -> None:
    table = VPProcess(schedule=schedule, discrete=discrete).train_sigmas()
    _check(get_sigmas_vp_uniform(n, table, spacing=spacing), n)


def test_trailing_spacing_starts_at_the_last_training_timestep() -> None:
    table = VPProcess().train_sigmas()
    assert get_sigmas_vp_uniform(10, table, "trailing")[0] == table[-1]
    assert get_sigmas_vp_uniform(10, table, "leading")[0] < table[-1]


def test_unknown_schedule_lists_valid_names() -> None:
    with pytest.raises(UnknownNameError) as err:
        get_sigmas("karas", 10)
    for name in SCHEDULES:
        assert name in str(err.value)


def test_bad_schedule_parameters_raise() -> None:
    with pytest.raises(ConfigError, match="sigma_min < sigma_max"):
        get_sigmas("karras", 10, sigma_min=2.0, sigma_max=1.0)
    with pytest.raises(ConfigError, match="steps"):
        get_sigmas("exponential", 0)
    with pytest.raises(ConfigError, match="leading, trailing"):
        get_sigmas_vp_uniform(10, spacing="middle")
