"""Plans: named sampling and acceleration settings in one JSON file that `difflab sample --plan`,
`Pipeline` users and `difflab serve --plan` all load.

A plan file is `{"NAME": {...}, ...}`. A plan may hold an acceleration hook (`accel`, as
`--accel`), Bottleneck Sampling stages (`bottleneck`), sampling settings (`sample`: SampleConfig
fields such as sampler, steps, cfg, schedule, schedule_options, guidance_interval), a
quantization recipe (`quant`), and, when a search found it, what it was measured on (`machine`,
`checkpoint_sha256`) and what it measured (`metrics`). A plan measured on another machine is
re-timed, not trusted: loading it elsewhere warns.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from difflab.config import ConfigError, from_dict, read_text_file

if TYPE_CHECKING:
    import numpy as np
    from torch import nn

    from difflab.runtime.pipeline import Pipeline, SampleConfig

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")  # plan and adapter names
NO_PLAN = "none"
PLAN_KEYS = ("accel", "bottleneck", "sample", "quant", "description", "machine",
             "checkpoint_sha256", "metrics")
# Sampling settings a plan may fix (the rest, e.g. batch size and precision, stay the caller's).
PLAN_SAMPLE_KEYS = ("sampler", "steps", "cfg", "schedule", "schedule_options",
                    "sampler_options", "guidance_interval", "guidance_rescale")
# The machine facts that make a timing transferable: a plan measured where any differs warns.
MACHINE_KEYS = ("device", "cpu", "name", "capability", "torch")


@dataclass(frozen=True)
class Plan:
    """Acceleration a request can choose by name: a hook (`NAME[:k=v,...]`, as `--accel`),
    Bottleneck Sampling stages, sampling settings and a quantization recipe."""

    name: str = NO_PLAN
    accel: str = ""
    bottleneck: dict[str, Any] = field(default_factory=dict)
    sample: dict[str, Any] = field(default_factory=dict)  # SampleConfig fields (PLAN_SAMPLE_KEYS)
    quant: str = ""  # a quantization recipe (`difflab quant-recipes`); "" = float
    description: str = ""
    machine: dict[str, Any] = field(default_factory=dict)  # run_record() where it was measured
    checkpoint_sha256: str = ""  # the model it was measured on
    metrics: dict[str, Any] = field(default_factory=dict)  # what it measured there

    def __post_init__(self) -> None:
        check_name("plan", self.name)
        if self.accel:
            from difflab.accel.api import parse_accel_spec

            parse_accel_spec(self.accel)  # unknown method or option raises now
        if self.bottleneck:
            from difflab.accel.bottleneck import BottleneckConfig

            from_dict(BottleneckConfig, dict(self.bottleneck), where="bottleneck")
        unknown = sorted(set(self.sample) - set(PLAN_SAMPLE_KEYS))
        if unknown:
            raise ConfigError(f"plan {self.name!r}: sample has unknown key {unknown[0]!r}; "
                              f"valid: {', '.join(PLAN_SAMPLE_KEYS)}")
        if self.sample:
            self.sample_config()  # bad sampler, steps or schedule raise now
        if self.quant:
            from difflab.quant.config import QUANTIZERS

            QUANTIZERS.get(self.quant)  # raises listing the recipes

    def describe(self) -> str:
        parts = []
        if self.sample:
            parts.append(" ".join(f"{k}={v}" for k, v in sorted(self.sample.items())))
        if self.quant:
            parts.append(f"quant {self.quant}")
        if self.accel:
            parts.append(self.accel)
        if self.bottleneck:
            parts.append(f"bottleneck {json.dumps(self.bottleneck, sort_keys=True)}")
        return self.description or (" + ".join(parts) if parts else "no acceleration")

    def sample_config(self, base: SampleConfig | None = None) -> SampleConfig:
        """`base` (default SampleConfig()) with the plan's sampling settings and stages."""
        import dataclasses

        from difflab.runtime.pipeline import SampleConfig, sample_config

        base = base or SampleConfig()
        data = {f.name: getattr(base, f.name) for f in dataclasses.fields(base)}
        data.update(self.sample)
        if self.bottleneck:
            data["bottleneck"] = dict(self.bottleneck)
        return sample_config(data)

    def to_dict(self) -> dict[str, Any]:
        """The plan's entry in a plan file (without its name, which is the key; empty fields
        left out, so that a plain hook plan reads as before)."""
        return {k: v for k, v in asdict(self).items() if k != "name" and v not in ("", {}, ())}

    def network(self, pipe: Pipeline) -> nn.Module:
        """The network this plan samples with: the pipeline's own, or a quantized copy
        (calibrated over sampling trajectories; the pipeline's network is left as it was)."""
        if not self.quant:
            return pipe.net
        from difflab.runtime.quantized import quantized_copy

        return quantized_copy(pipe, self.quant)

    @contextlib.contextmanager
    def applied(self, net: nn.Module) -> Iterator[None]:
        """The plan's hook attached to `net` for the block (removed after, bit for bit)."""
        if not self.accel:
            yield
            return
        from difflab.accel.api import apply_accel, parse_accel_spec

        with apply_accel(net, *parse_accel_spec(self.accel)):
            yield

    def generate(self, pipe: Pipeline, prompts: list[str], seeds: list[int],
                 base: SampleConfig | None = None) -> np.ndarray:
        """Images (N, H, W, 3) uint8 of `pipe` sampled with this plan: its network, hook and
        sampling settings over `base` (the pipeline's network is left as it was)."""
        net = self.network(pipe)
        original, pipe.net = pipe.net, net
        try:
            with self.applied(net):
                return pipe.generate(prompts, seeds, self.sample_config(base))
        finally:
            pipe.net = original

    def machine_mismatch(self, here: Mapping[str, Any] | None = None) -> str:
        """'' when the plan was measured on this machine (or records none), else a one-line
        warning naming what differs: its speed must be re-timed here, not trusted."""
        if not self.machine:
            return ""
        if here is None:
            from difflab.runtime.machine import run_record

            here = run_record()
        diff = [f"{k} {self.machine.get(k)!r} there, {here.get(k)!r} here" for k in MACHINE_KEYS
                if self.machine.get(k) != here.get(k)]
        if not diff:
            return ""
        return (f"plan {self.name!r} was measured on another machine ({'; '.join(diff)}); "
                "its speed-up is not known here: re-time it (difflab accelerate)")


def check_name(what: str, name: Any) -> str:
    """A plan or adapter name: letters, digits, '.', '_', '-' (never a path)."""
    if not isinstance(name, str) or not NAME.match(name):
        raise ConfigError(f"{what} name {name!r} must be 1-64 letters, digits, '.', '_' or '-'")
    return name


def read_plans(path: str | Path | None) -> dict[str, Plan]:
    """The plans of a JSON file `{"NAME": {"accel": ..., "sample": {...}, ...}, ...}`, after
    the built-in plan "none" (no acceleration)."""
    plans = {NO_PLAN: Plan()}
    if not path:
        return plans
    try:
        data = json.loads(read_text_file(path, "plan file"))
    except json.JSONDecodeError as e:
        raise ConfigError(f"plan file {path}: not JSON ({e})") from None
    if not isinstance(data, dict) or not data:
        raise ConfigError(f"plan file {path} must hold an object of plans by name, e.g. "
                          '{"deepcache-n2": {"accel": "deepcache:interval=2"}}')
    for name, spec in data.items():
        if name == NO_PLAN:
            raise ConfigError(f"plan file {path}: {NO_PLAN!r} is the built-in plan without "
                              "acceleration; choose another name")
        if not isinstance(spec, dict):
            raise ConfigError(f"plan file {path}: plan {name!r} must be an object")
        unknown = sorted(set(spec) - set(PLAN_KEYS))
        if unknown:
            raise ConfigError(f"plan file {path}: plan {name!r} has unknown key {unknown[0]!r}; "
                              f"valid: {', '.join(PLAN_KEYS)}")
        plans[name] = from_dict(Plan, {"name": name, **spec})
    return plans


def write_plans(path: str | Path, plans: Mapping[str, Plan] | list[Plan]) -> Path:
    """Write plans (by name) as a plan file, atomically; `read_plans` reads it back."""
    from difflab.io import atomic_write

    items = plans.values() if isinstance(plans, Mapping) else plans
    data = {p.name: p.to_dict() for p in items if p.name != NO_PLAN}
    if not data:
        raise ConfigError("no plans to write (the built-in plan 'none' is never written)")
    text = json.dumps(data, indent=2, sort_keys=True)
    return atomic_write(path, lambda p: p.write_text(text + "\n"))


def select_plan(spec: str) -> tuple[str, str]:
    """`"FILE[:NAME]"` -> (file, name); name "" = the file's only plan."""
    path, sep, name = spec.rpartition(":")
    if not sep or not path or "/" in name or name.endswith(".json"):
        return spec, ""
    return path, name


def load_plan(spec: str) -> Plan:
    """The plan `FILE[:NAME]` names (a file with one plan needs no name)."""
    path, name = select_plan(spec)
    plans = {k: v for k, v in read_plans(path).items() if k != NO_PLAN}
    if name:
        if name not in plans:
            raise ConfigError(f"plan file {path} has no plan {name!r}; valid: {', '.join(plans)}")
        return plans[name]
    if len(plans) != 1:
        raise ConfigError(f"plan file {path} holds {len(plans)} plans; choose one as "
                          f"{path}:NAME (valid: {', '.join(plans)})")
    return next(iter(plans.values()))
