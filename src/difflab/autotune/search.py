"""Successive halving over configurations under a quality budget and a fixed compute budget
("Non-stochastic Best Arm Identification and Hyperparameter Optimization", Jamieson and
Talwalkar, 2016).

Why successive halving: a configuration's quality on a handful of prompts already separates the
hopeless (few steps with a coarse cache: PSNR far below the budget) from the plausible, and
scoring is the cost, so cheap rungs of few prompts prune most configurations and only the
survivors pay for the whole calibration split. Half the survivors of a rung are the fastest
that meet the budget there, half those that meet it most safely. Each rung gets an equal share
of the time budget; the survivors of the last rung are then timed interleaved with the
reference in one process, and the fastest that meets the budget on the whole calibration split wins.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from difflab.autotune.budget import Budget
from difflab.autotune.space import Candidate
from difflab.config import ConfigError
from difflab.eval.frontier import pareto_front


@dataclass
class Evaluation:
    """One configuration scored on the first `images` calibration images."""

    candidate: Candidate
    images: int
    quality: dict[str, float]
    seconds_per_image: float  # generation wall time of this rung (pruning only, not reported)
    cached: bool = False
    passed: list[int] = field(default_factory=list)  # per-image verdicts, for paired tests

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.candidate.label(), "config": self.candidate.key(),
                "images": self.images, "quality": self.quality,
                "seconds_per_image": self.seconds_per_image, "cached": self.cached}


class Evaluator(Protocol):
    """What the search needs from a model: quality on the first n calibration images, the
    reference's quality on the same images, and interleaved time ratios to the reference."""

    def reference_quality(self, images: int) -> dict[str, float]: ...

    def evaluate(self, candidate: Candidate, images: int) -> Evaluation: ...

    def time_ratios(self, candidates: Sequence[Candidate]) -> dict[str, dict[str, Any]]: ...


@dataclass
class SearchResult:
    """Every evaluation by rung, the finalists' timings, the winner (None: nothing met the
    budget) and how the time was spent."""

    rungs: list[int]
    evaluations: list[list[Evaluation]]  # per rung
    timings: dict[str, dict[str, Any]]  # candidate key -> time ratio block (finalists)
    reference_quality: dict[str, dict[str, float]]  # by rung size
    winner: Candidate | None
    seconds: float
    stopped_by_budget: bool
    failures: list[dict[str, str]] = field(default_factory=list)  # configurations that raised

    def finalists(self) -> list[Evaluation]:
        return self.evaluations[-1] if self.evaluations else []


def rank(evaluations: Sequence[Evaluation], budget: Budget,
         reference: Mapping[str, float]) -> list[Evaluation]:
    """Configurations that meet the budget, fastest first, then the rest by how nearly they
    meet it (largest slack first)."""
    ok = [e for e in evaluations if budget.check(e.quality, reference)]
    rest = [e for e in evaluations if not budget.check(e.quality, reference)]
    ok.sort(key=lambda e: (e.seconds_per_image, e.candidate.key()))
    rest.sort(key=lambda e: (-budget.slack(e.quality, reference), e.candidate.key()))
    return ok + rest


def promote(evaluations: Sequence[Evaluation], budget: Budget, reference: Mapping[str, float],
            keep: int) -> list[Candidate]:
    """The `keep` configurations that go on: half the fastest that meet the budget on this
    rung, half those that meet it most safely (largest slack). A small rung's quality is noisy:
    ranking by speed alone promotes the cheapest configurations that passed by luck."""
    fast = [e.candidate for e in rank(evaluations, budget, reference)]
    safe = [e.candidate for e in sorted(evaluations, key=lambda e: (
        -budget.slack(e.quality, reference), e.seconds_per_image, e.candidate.key()))]
    out: list[Candidate] = []
    # alternate, so that a rung cut short by the time budget has scored both kinds
    for c in itertools.chain.from_iterable(zip(fast, safe, strict=True)):
        if len(out) >= keep:
            break
        if c not in out:
            out.append(c)
    return out


def rung_sizes(full: int, rungs: int, eta: int) -> list[int]:
    """Images per rung: full / eta^(R-1), ..., full / eta, full (each at least 2)."""
    if rungs < 1 or eta < 2:
        raise ConfigError(f"need rungs >= 1 and eta >= 2, got {rungs} and {eta}")
    sizes = [max(2, math.ceil(full / eta ** (rungs - 1 - r))) for r in range(rungs)]
    return sorted(set(min(s, full) for s in sizes))


def successive_halving(
    evaluator: Evaluator, candidates: Sequence[Candidate], budget: Budget, *,
    full_images: int, minutes: float, rungs: int = 3, eta: int = 3, min_keep: int = 2,
    clock: Callable[[], float] = time.monotonic, progress: Callable[[str], None] | None = None,
) -> SearchResult:
    """Successive halving of `candidates` (in the order given) within `minutes`: rung r scores
    configurations on the first `sizes[r]` calibration images; the best 1/eta go on."""
    start = clock()
    say = progress or (lambda text: None)
    sizes = rung_sizes(full_images, rungs, eta)
    share = minutes * 60.0 / (len(sizes) + 1)  # one share per rung, one for the final timing
    refs: dict[str, dict[str, float]] = {}
    evaluations: list[list[Evaluation]] = []
    pool = list(candidates)
    stopped = False
    failures: list[dict[str, str]] = []
    for r, n in enumerate(sizes):
        refs[str(n)] = evaluator.reference_quality(n)
        rung_start, done = clock(), []
        for c in pool:
            # rung 0 draws candidates until its share is spent; later rungs score every
            # survivor unless the whole search budget (less the timing share) is gone
            used = clock() - (rung_start if r == 0 else start)
            limit = share if r == 0 else share * (r + 1)
            if done and used >= limit:
                stopped = True
                break
            try:
                done.append(evaluator.evaluate(c, n))
            except (ConfigError, RuntimeError) as e:  # a combination the model refuses
                failures.append({"label": c.label(), "error": f"{type(e).__name__}: {e}"})
                say(f"rung {r}: {c.label()} failed: {e}")
                continue
            say(f"rung {r} ({n} images): {len(done)}/{len(pool)} {c.label()}")
        if not done:
            break
        evaluations.append(done)
        if r + 1 < len(sizes):
            keep = max(min_keep, math.ceil(len(done) / eta))
            pool = promote(done, budget, refs[str(n)], keep)
    if not evaluations:
        raise ConfigError("no configuration could be evaluated: "
                          + "; ".join(f"{f['label']}: {f['error']}" for f in failures[:3]))
    final = evaluations[-1]
    top = refs[str(final[0].images)]
    feasible = [e.candidate for e in final if budget.check(e.quality, top)]
    timings = evaluator.time_ratios(feasible or [e.candidate for e in final[:min_keep]])
    winner = None
    if feasible:
        winner = min(feasible, key=lambda c: (timings[c.key()]["time_ratio"], c.key()))
    return SearchResult(sizes[:len(evaluations)], evaluations, timings, refs, winner,
                        clock() - start, stopped, failures)


def frontier_mask(evaluations: Sequence[Evaluation], timings: Mapping[str, Mapping[str, Any]],
                  quality_keys: Sequence[str], directions: Mapping[str, bool]) -> list[bool]:
    """Which timed evaluations are Pareto-optimal in (time ratio, each quality key); an
    untimed one is not on the frontier."""
    timed = [i for i, e in enumerate(evaluations) if e.candidate.key() in timings]
    mask = [False] * len(evaluations)
    if not timed:
        return mask
    rows = [[timings[evaluations[i].candidate.key()]["time_ratio"]]
            + [evaluations[i].quality[k] for k in quality_keys] for i in timed]
    values = np.nan_to_num(np.asarray(rows, dtype=np.float64), posinf=1e9, neginf=-1e9)
    front = pareto_front(values, [False, *(directions[k] for k in quality_keys)])
    for i, on in zip(timed, front, strict=True):
        mask[i] = bool(on)
    return mask
