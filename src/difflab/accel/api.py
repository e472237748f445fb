"""The `ACCELERATORS` registry, `apply_accel(model, name, options)`, the CLI spec parser, and the
full-step schedules shared by the step-interval caches."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

from difflab.accel.hooks import AccelHandle
from difflab.config import ConfigError, from_dict, parse_override
from difflab.registry import Registry


@dataclass(frozen=True)
class Accelerator:
    """A registered method: its frozen config class and `apply(model, config) -> handle`."""

    config_class: type
    apply: Callable[[nn.Module, Any], AccelHandle]


ACCELERATORS: Registry[Accelerator] = Registry("accelerator")


def register_accel(name: str, config_class: type) -> Callable:
    """Register `apply_<method>(model, config)` under `name` with its config class."""
    def decorate(fn: Callable[[nn.Module, Any], AccelHandle]) -> Callable:
        ACCELERATORS.register(name)(Accelerator(config_class, fn))
        return fn
    return decorate


def accel_config(name: str, options: dict[str, Any] | None = None) -> Any:
    """The config of method `name` from an options dict (unknown keys raise ConfigError)."""
    return from_dict(ACCELERATORS.get(name).config_class, dict(options or {}), where=name)


def apply_accel(model: nn.Module, name: str, options: dict[str, Any] | None = None
                ) -> AccelHandle:
    """Attach method `name` with `options` to `model`; `handle.remove()` restores it."""
    return ACCELERATORS.get(name).apply(model, accel_config(name, options))


def _split_top_level(text: str) -> list[str]:
    """Split on commas outside brackets, so `steps=[0,1,3]` stays one item."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        depth += (ch in "[(") - (ch in "])")
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    return [p for p in [*parts, cur] if p.strip()]


def parse_options(text: str) -> dict[str, Any]:
    """`"k=v,k2=[1,2]"` -> {k: v, k2: [1, 2]}, values read as TOML literals."""
    return dict(parse_override(item) for item in _split_top_level(text))


def parse_accel_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """`"NAME[:k=v,...]"` -> (name, options), values read as TOML literals; for `--accel`."""
    name, _, rest = spec.partition(":")
    name = name.strip()
    ACCELERATORS.get(name)  # raises listing the valid names
    options = parse_options(rest)
    accel_config(name, options)  # validate now, before any model work
    return name, options


def full_steps(num_steps: int, interval: int, schedule: str = "uniform", center: float = 0.3,
               power: float = 1.4) -> list[int]:
    """Steps that recompute everything, about one in `interval`: "uniform" every interval-th
    step, or "quadratic" denser around `center` (a fraction of the run), DeepCache's
    non-uniform 1:N ("DeepCache: Accelerating Diffusion Models for Free", 2023)."""
    if interval < 1:
        raise ConfigError(f"cache interval must be >= 1, got {interval}")
    if schedule == "uniform" or interval == 1:
        return list(range(0, num_steps, interval))
    if schedule != "quadratic":
        raise ConfigError(f"unknown full-step schedule {schedule!r}; valid: uniform, quadratic")
    n = max(1, -(-num_steps // interval))  # ceil: as many full steps as uniform
    c = center * (num_steps - 1)
    # |u|^power on a uniform grid in u: spacing grows away from the centre
    u = np.linspace(-(c ** (1 / power)), (num_steps - 1 - c) ** (1 / power), n)
    steps = np.rint(c + np.sign(u) * np.abs(u) ** power).astype(int)
    return sorted({0, *np.clip(steps, 0, num_steps - 1).tolist()})


def needs_full(step: int, last_full: int | None, scheduled: list[int]) -> bool:
    """Recompute on a scheduled step (every call of it, e.g. both of a Heun step), when nothing
    is cached, or when this branch missed a scheduled step in (last_full, step)."""
    if last_full is None or step < last_full or step in scheduled:
        return True
    return any(last_full < s < step for s in scheduled)


def check_range(what: str, value: int, lo: int, hi: int) -> None:
    """Raise ConfigError naming `value` unless lo <= value <= hi."""
    if not lo <= value <= hi:
        raise ConfigError(f"{what}={value} is out of range; valid: {lo}..{hi}")
