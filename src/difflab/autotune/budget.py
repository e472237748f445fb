"""The budget language: `"accuracy>=-1pt,fd<=+10%,psnr>=28"`, quality bounds relative to a
reference configuration.

Each constraint is `METRIC OP VALUE[UNIT]`, OP one of `>=`, `<=`:
- `-1pt` / `+2pt`: points (hundredths) off the reference's value (accuracy is a fraction, so
  `accuracy>=-1pt` means at least reference accuracy - 0.01);
- `+10%` / `-5%`: percent of the reference's value (`fd<=+10%`: at most 1.1 x reference FD);
- a signed number without unit (`psnr>=-3`): an offset from the reference in the metric's unit;
- an unsigned number (`psnr>=28`): an absolute bound.
`accuracy/*` stands for every prompt category the calibration split has (`accuracy/single`,
`accuracy/binding`, ...); `accuracy/single` names one.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from difflab.config import ConfigError

OPS = (">=", "<=")
UNITS = ("pt", "%", "")
# what the evaluator measures, by budget name (keys of `difflab.eval.metrics` results)
BUDGET_METRICS = ("accuracy", "fd", "psnr", "ssim", "kid")
_CONSTRAINT = re.compile(
    r"^(?P<metric>[a-z][a-z_]*(?:/(?:\*|[a-z_-]+))?)\s*(?P<op>>=|<=)\s*"
    r"(?P<value>[+-]?(?:\d+\.?\d*|\.\d+))\s*(?P<unit>pt|%)?$"
)


@dataclass(frozen=True)
class Constraint:
    """One bound: `metric op value unit`; relative bounds need the reference's value."""

    metric: str  # e.g. "fd", "accuracy/single", "accuracy/*"
    op: str  # ">=" or "<="
    value: float
    unit: str = ""  # "pt", "%" or "" (absolute, or an offset when `relative`)
    relative: bool = False  # the value is an offset from the reference (signed or with a unit)

    @property
    def base_metric(self) -> str:
        return self.metric.split("/", 1)[0]

    def bound(self, reference: float | None) -> float:
        """The bound's value given the reference's value of the metric."""
        if not self.relative:
            return self.value
        if reference is None or not math.isfinite(reference):
            raise ConfigError(f"budget {self.text()}: the reference has no {self.metric} value")
        if self.unit == "pt":
            return reference + self.value / 100.0
        if self.unit == "%":
            return reference * (1.0 + self.value / 100.0)
        return reference + self.value

    def margin(self, value: float, reference: float | None) -> float:
        """How far `value` is inside the bound (>= 0: met), in the metric's units."""
        b = self.bound(reference)
        return value - b if self.op == ">=" else b - value

    def text(self) -> str:
        sign = "+" if self.relative and self.value >= 0 else ""
        return f"{self.metric}{self.op}{sign}{self.value:g}{self.unit}"


@dataclass(frozen=True)
class Budget:
    """A conjunction of constraints; `check` says whether a configuration's quality meets it."""

    constraints: tuple[Constraint, ...]

    def text(self) -> str:
        return ",".join(c.text() for c in self.constraints)

    @property
    def metrics(self) -> tuple[str, ...]:
        """The evaluator metrics the budget needs (psnr/ssim are paired with the reference)."""
        return tuple(dict.fromkeys(c.base_metric for c in self.constraints))

    def expand(self, keys: Sequence[str]) -> tuple[Constraint, ...]:
        """The constraints with `metric/*` replaced by one per matching key of `keys`."""
        out = []
        for c in self.constraints:
            if c.metric.endswith("/*"):
                prefix = c.metric[:-1]
                matched = sorted(k for k in keys if k.startswith(prefix))
                if not matched:
                    raise ConfigError(f"budget {c.text()}: no {prefix}<category> values measured")
                out += [Constraint(k, c.op, c.value, c.unit, c.relative) for k in matched]
            else:
                out.append(c)
        return tuple(out)

    def margins(self, quality: Mapping[str, float], reference: Mapping[str, float]
                ) -> dict[str, float]:
        """Each (expanded) constraint's margin, keyed by its text; >= 0 means met."""
        out = {}
        for c in self.expand(list(reference) or list(quality)):
            if c.metric not in quality:
                raise ConfigError(f"budget {c.text()}: {c.metric} was not measured; measured: "
                                  + ", ".join(sorted(quality)))
            out[c.text()] = c.margin(float(quality[c.metric]), reference.get(c.metric))
        return out

    def check(self, quality: Mapping[str, float], reference: Mapping[str, float]) -> bool:
        """Whether `quality` meets every bound (relative ones against `reference`)."""
        return all(m >= 0 for m in self.margins(quality, reference).values())

    def slack(self, quality: Mapping[str, float], reference: Mapping[str, float]) -> float:
        """The smallest margin, each scaled by its bound's size (a unitless 'how safely met'):
        what successive halving ranks configurations by when none meets the budget yet."""
        worst = math.inf
        for c in self.expand(list(reference) or list(quality)):
            scale = max(abs(c.bound(reference.get(c.metric))), 1e-2)
            worst = min(worst, c.margin(float(quality[c.metric]),
                                        reference.get(c.metric)) / scale)
        return worst


def parse_budget(text: str) -> Budget:
    """`"accuracy>=-1pt,fd<=+10%,psnr>=28"` -> Budget; a malformed part raises ConfigError
    naming it and the form it must take."""
    if not isinstance(text, str) or not text.strip():
        raise ConfigError('budget is empty; e.g. --budget "accuracy>=-1pt,fd<=+10%,psnr>=28"')
    constraints = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            raise ConfigError(f"budget {text!r} has an empty part (two commas or a trailing one)")
        m = _CONSTRAINT.match(part)
        if m is None:
            raise ConfigError(f"budget part {part!r} must look like METRIC>=VALUE or "
                              "METRIC<=VALUE, VALUE a number with optional sign and unit pt or "
                              "% (e.g. accuracy>=-1pt, fd<=+10%, psnr>=28)")
        metric, op, raw, unit = m["metric"], m["op"], m["value"], m["unit"] or ""
        base = metric.split("/", 1)[0]
        if base not in BUDGET_METRICS:
            raise ConfigError(f"budget part {part!r}: unknown metric {base!r}; valid: "
                              f"{', '.join(BUDGET_METRICS)} (accuracy/* or accuracy/CATEGORY "
                              "per prompt category)")
        if "/" in metric and base != "accuracy":
            raise ConfigError(f"budget part {part!r}: only accuracy has per-category values")
        relative = bool(unit) or raw[0] in "+-"
        if unit and raw[0] not in "+-":
            sign = "-" if op == ">=" else "+"
            raise ConfigError(f"budget part {part!r}: a {unit} bound is relative to the "
                              f"reference; give its sign (e.g. {metric}{op}{sign}{raw}{unit})")
        if unit == "%" and abs(float(raw)) >= 100 and raw[0] == "-":
            raise ConfigError(f"budget part {part!r}: -100% or less leaves nothing")
        constraints.append(Constraint(metric, op, float(raw), unit, relative))
    bounds = [(c.metric, c.op) for c in constraints]
    dup = next((b for b in bounds if bounds.count(b) > 1), None)
    if dup is not None:
        raise ConfigError(f"budget {text!r} bounds {dup[0]}{dup[1]} twice; give each bound once")
    return Budget(tuple(constraints))
