"""What the autotuner searches: one `Candidate` is a full sampling configuration (sampler,
steps, schedule shift, guidance scale and interval, cache policy, quantization recipe), and a
`Space` lists the values of each axis."""

from __future__ import annotations

import hashlib
import itertools
import json
import random
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from difflab.config import ConfigError, from_dict


@dataclass(frozen=True)
class Candidate:
    """One configuration; `accel` is an `--accel` spec (e.g. "deepcache:interval=3"), `quant`
    a recipe name, `shift` SD3's flow-schedule shift (0: the process's default schedule)."""

    sampler: str = "euler"
    steps: int = 50
    cfg: float = 1.0
    shift: float = 0.0
    interval: tuple[float, ...] = ()  # guidance active for sigma in [lo, hi]; () = every step
    accel: str = ""
    quant: str = ""

    def __post_init__(self) -> None:
        from difflab.core.samplers import get_sampler
        from difflab.limits import check_float, check_int

        get_sampler(self.sampler)  # raises with the valid names
        check_int("steps", self.steps, 1)
        check_float("cfg", self.cfg, 0.0)
        check_float("shift", self.shift, 0.0)
        if self.interval and (len(self.interval) != 2 or not 0 <= self.interval[0]
                              <= self.interval[1]):
            raise ConfigError(f"guidance interval must be (lo, hi) with 0 <= lo <= hi, got "
                              f"{self.interval}")

    def key(self) -> str:
        """Canonical text of the configuration (what the evaluation cache is keyed by)."""
        return json.dumps(asdict(self), sort_keys=True)

    def digest(self) -> str:
        return hashlib.sha256(self.key().encode()).hexdigest()[:12]

    def label(self) -> str:
        """A short readable name: `euler-12-cfg3-s2-gi0.2:1-deepcache:interval=3-w8a8_real`."""
        parts = [self.sampler, str(self.steps), f"cfg{self.cfg:g}"]
        if self.shift:
            parts.append(f"shift{self.shift:g}")
        if self.interval:
            parts.append(f"gi{self.interval[0]:g}:{self.interval[1]:g}")
        if self.accel:
            parts.append(self.accel.replace(" ", ""))
        if self.quant:
            parts.append(self.quant)
        return "-".join(parts)

    def sample(self) -> dict[str, Any]:
        """The SampleConfig fields this configuration fixes (a plan's `sample` table)."""
        out: dict[str, Any] = {"sampler": self.sampler, "steps": self.steps, "cfg": self.cfg}
        if self.shift:
            out.update(schedule="flow", schedule_options={"shift": self.shift})
        if self.interval:
            out["guidance_interval"] = list(self.interval)
        return out

    def point(self, name: str | None = None) -> dict[str, Any]:
        """The configuration as a bench point (`difflab bench` grids, `PipelineTarget`)."""
        point: dict[str, Any] = {"name": name or self.label(), "sampler": self.sampler,
                                 "steps": self.steps, "cfg_scale": self.cfg}
        extra = {k: v for k, v in self.sample().items()
                 if k not in ("sampler", "steps", "cfg")}
        if extra:
            point["sample"] = extra
        if self.accel:
            from difflab.accel.api import parse_accel_spec

            method, options = parse_accel_spec(self.accel)
            point["accel"] = {"method": method, **options}
        if self.quant:
            point["quant"] = {"recipe": self.quant}
        return point

    def with_(self, **changes: Any) -> Candidate:
        return replace(self, **changes)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Candidate:
        return from_dict(cls, dict(data), where="candidate")


@dataclass(frozen=True)
class Space:
    """The values of every axis; a candidate is one value per axis."""

    samplers: tuple[str, ...] = ("euler", "dpmpp_2m", "heun")
    steps: tuple[int, ...] = (3, 4, 5, 6, 8, 10, 12, 16, 20)
    cfg: tuple[float, ...] = (2.0, 3.0, 4.0)
    shift: tuple[float, ...] = (0.0, 2.0, 3.0)
    intervals: tuple[tuple[float, ...], ...] = ((), (0.0, 0.7), (0.3, 1.0))
    accel: tuple[str, ...] = ("", "deepcache:interval=2", "deepcache:interval=3",
                              "encoder_propagation:interval=2")  # a UNet's; see caches_for
    quant: tuple[str, ...] = ("", "w8a8_real")
    fixed: dict[str, Any] = field(default_factory=dict)  # axes held at one value (ablations)

    def __post_init__(self) -> None:
        from difflab.accel.api import parse_accel_spec
        from difflab.core.samplers import get_sampler
        from difflab.quant.config import QUANTIZERS

        for name in self.samplers:
            get_sampler(name)
        for spec in self.accel:
            if spec:
                parse_accel_spec(spec)
        for recipe in self.quant:
            if recipe:
                QUANTIZERS.get(recipe)
        for axis in ("samplers", "steps", "cfg", "shift", "intervals", "accel", "quant"):
            if not getattr(self, axis):
                raise ConfigError(f"search space axis {axis} is empty; give at least one value")
        if any(s < 1 for s in self.steps):
            raise ConfigError(f"steps must be >= 1, got {self.steps}")

    @property
    def size(self) -> int:
        n = 1
        for axis in self._axes().values():
            n *= len(axis)
        return n

    def _axes(self) -> dict[str, tuple]:
        return {"sampler": self.samplers, "steps": self.steps, "cfg": self.cfg,
                "shift": self.shift, "interval": self.intervals, "accel": self.accel,
                "quant": self.quant}

    def all(self) -> Iterator[Candidate]:
        """Every candidate, in a fixed order."""
        axes = self._axes()
        for values in itertools.product(*axes.values()):
            yield Candidate(**dict(zip(axes, values, strict=True)))

    def draw(self, n: int, seed: int) -> list[Candidate]:
        """`n` distinct candidates drawn uniformly (all of them when the space is smaller), in
        an order fixed by `seed`."""
        everything = list(self.all())
        rng = random.Random(seed)
        rng.shuffle(everything)
        return everything[:n]


UNET_CACHES = Space.accel
TRANSFORMER_CACHES = ("", "block_cache:interval=2", "block_cache:interval=3",
                      "first_block_cache:threshold=0.1")


def caches_for(net: Any) -> tuple[str, ...]:
    """The cache axis that fits `net`: DeepCache and encoder propagation for a UNet stage list
    (blocks = down, mid, up), block caches for a transformer's block list, else none."""
    blocks = getattr(net, "blocks", None)
    levels = getattr(net, "num_levels", None)
    if blocks is None:
        return ("",)
    if isinstance(levels, int) and len(blocks) == 2 * levels + 1:
        return UNET_CACHES
    return TRANSFORMER_CACHES


def ablations(winner: Candidate, reference: Candidate) -> dict[str, Candidate]:
    """The winner with one component at a time set back to the reference's value: what each
    component contributes (a component the winner does not use is left out)."""
    out = {}
    if winner.quant != reference.quant:
        out["quantization"] = winner.with_(quant=reference.quant)
    if winner.accel != reference.accel:
        out["cache"] = winner.with_(accel=reference.accel)
    if winner.interval != reference.interval:
        out["guidance interval"] = winner.with_(interval=reference.interval)
    if winner.cfg != reference.cfg:
        out["guidance scale"] = winner.with_(cfg=reference.cfg)
    if winner.shift != reference.shift:
        out["schedule shift"] = winner.with_(shift=reference.shift)
    if winner.sampler != reference.sampler:
        out["sampler"] = winner.with_(sampler=reference.sampler)
    if winner.steps != reference.steps:
        out["steps"] = winner.with_(steps=reference.steps)
    return out
