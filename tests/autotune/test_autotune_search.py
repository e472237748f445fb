"""Successive halving on a mocked evaluator whose optimum is known, the Pareto filter of the
finalists, and the candidate space."""

import itertools

import pytest

from difflab.autotune import Candidate, Space, ablations, parse_budget, successive_halving
from difflab.autotune.search import Evaluation, frontier_mask, rung_sizes
from difflab.config import ConfigError

SPACE = Space(samplers=("euler", "heun"), steps=(2, 4, 8, 16), cfg=(3.0,), shift=(0.0, 2.0),
              intervals=((), (0.3, 1.0)), accel=("", "deepcache:interval=2"),
              quant=("", "w8a8"))
REFERENCE = Candidate(steps=50, cfg=3.0)


def cost(c: Candidate) -> float:
    """Seconds per image of a made-up machine: NFE, halved by the cache, 0.6x with int8."""
    nfe = 2 * c.steps - 1 if c.sampler == "heun" else c.steps
    guided = 0.75 if c.interval else 1.0
    return nfe * guided * (0.55 if c.accel else 1.0) * (0.6 if c.quant else 1.0)


def psnr(c: Candidate) -> float:
    """A made-up quality: more (effective) steps help, every shortcut costs some dB."""
    order = 2 if c.sampler == "heun" else 1
    return (18 + 4 * order * (c.steps.bit_length() - 1) + (1.5 if c.shift else 0.0)
            - (3.0 if c.accel else 0.0) - (1.0 if c.quant else 0.0) - (0.5 if c.interval else 0))


class MockEvaluator:
    """Quality and cost from the formulas above; counts calls; a fake clock ticks per image."""

    def __init__(self):
        self.now, self.calls = 0.0, []

    def clock(self):
        return self.now

    def reference_quality(self, images):
        return {"psnr": float("inf")}

    def evaluate(self, c, images):
        self.calls.append((c, images))
        self.now += 0.01 * images * cost(c)
        return Evaluation(c, images, {"psnr": psnr(c)}, cost(c))

    def time_ratios(self, candidates):
        return {c.key(): {"time_ratio": cost(c) / cost(REFERENCE)} for c in candidates}


def test_successive_halving_finds_the_known_optimum_and_prunes_on_small_rungs():
    budget = parse_budget("psnr>=28")
    feasible = [c for c in SPACE.all() if psnr(c) >= 28]
    best = min(feasible, key=cost)
    ev = MockEvaluator()
    result = successive_halving(ev, SPACE.draw(SPACE.size, seed=0), budget, full_images=27,
                                minutes=60, rungs=3, eta=3, clock=ev.clock)
    assert result.winner == best
    assert result.rungs == [3, 9, 27]
    counts = [len(r) for r in result.evaluations]
    assert counts == [SPACE.size, SPACE.size // 3 + (SPACE.size % 3 > 0), counts[2]]
    assert counts[2] < counts[1] < counts[0]  # most configurations never see the full split
    full = [c for c, n in ev.calls if n == 27]
    assert best in full and len(full) == counts[2]


def test_the_time_budget_stops_the_first_rung_early():
    ev = MockEvaluator()
    result = successive_halving(ev, SPACE.draw(SPACE.size, seed=1), parse_budget("psnr>=20"),
                                full_images=27, minutes=0.05, clock=ev.clock)
    assert result.stopped_by_budget
    assert 1 <= len(result.evaluations[0]) < SPACE.size


def test_nothing_meets_an_impossible_budget():
    ev = MockEvaluator()
    result = successive_halving(ev, list(SPACE.all())[:12], parse_budget("psnr>=99"),
                                full_images=9, minutes=60, rungs=2, clock=ev.clock)
    assert result.winner is None
    assert result.timings  # the nearest ones are still timed for the frontier


def test_pareto_filter_of_the_finalists():
    cands = [Candidate(steps=s) for s in (2, 4, 8, 16)]
    q = {2: 20.0, 4: 25.0, 8: 24.0, 16: 30.0}  # 8 steps: slower and worse than 4
    evals = [Evaluation(c, 4, {"psnr": q[c.steps]}, 0.0) for c in cands]
    timings = {c.key(): {"time_ratio": c.steps / 50} for c in cands[:3]}  # 16 steps untimed
    mask = frontier_mask(evals, timings, ["psnr"], {"psnr": True})
    assert mask == [True, True, False, False]


def test_rung_sizes_and_space_checks():
    assert rung_sizes(48, 3, 3) == [6, 16, 48]
    assert rung_sizes(4, 3, 3) == [2, 4]
    with pytest.raises(ConfigError, match="eta >= 2"):
        rung_sizes(48, 3, 1)
    with pytest.raises(ConfigError, match="axis accel is empty"):
        Space(accel=())
    with pytest.raises(ConfigError, match="unknown accelerator"):
        Space(accel=("nocache",))
    draws = SPACE.draw(10, seed=3)
    assert draws == SPACE.draw(10, seed=3) and len(set(draws)) == 10
    assert SPACE.size == len(list(SPACE.all())) == 2 * 4 * 2 * 2 * 2 * 2


def test_ablations_set_back_one_component_at_a_time():
    winner = Candidate(sampler="heun", steps=4, cfg=3.0, shift=2.0, accel="deepcache:interval=2",
                       quant="w8a8_real")
    parts = ablations(winner, Candidate(steps=50, cfg=3.0))
    assert set(parts) == {"quantization", "cache", "schedule shift", "sampler", "steps"}
    assert parts["cache"] == winner.with_(accel="")
    for what, c in parts.items():  # each differs from the winner in exactly one field
        diff = [f for f, a, b in itertools.zip_longest(
            c.__dataclass_fields__, vars(c).values(), vars(winner).values()) if a != b]
        assert len(diff) == 1, what


def test_candidate_round_trips_as_bench_point_and_plan_settings():
    c = Candidate(sampler="dpmpp_2m", steps=6, cfg=2.0, shift=3.0, interval=(0.3, 1.0),
                  accel="deepcache:interval=3", quant="w8a8_real")
    assert Candidate.from_dict(__import__("json").loads(c.key())) == c
    point = c.point()
    assert point["accel"] == {"method": "deepcache", "interval": 3}
    assert point["quant"] == {"recipe": "w8a8_real"}
    assert c.sample() == {"sampler": "dpmpp_2m", "steps": 6, "cfg": 2.0, "schedule": "flow",
                          "schedule_options": {"shift": 3.0}, "guidance_interval": [0.3, 1.0]}
