"""The evaluator over a real (tiny) pipeline: scores against the reference from the same noise,
caches every evaluation by checkpoint hash and configuration, and a whole `run_accelerate`
writes a frontier, a report and a plan the plan reader loads."""

import json

from difflab.autotune import Candidate, EvaluationStore, Space, parse_budget
from difflab.autotune.accelerate import AccelerateSettings, run_accelerate
from difflab.autotune.evaluator import PipelineEvaluator, calibration_set
from difflab.eval.commands import PipelineTarget
from difflab.runtime.plan import read_plans

REFERENCE = Candidate(steps=8, cfg=2.0)


def evaluator(pipe, tmp_path, store, identity="tiny-a"):
    specs, prompts, seeds = calibration_set("single", "dev", 4, seed=0)
    return PipelineEvaluator(PipelineTarget(pipe, identity), REFERENCE, ("psnr",), specs,
                             prompts, seeds, split="dev", store=store, batch_size=4,
                             timing_images=2, timing_repeats=1, cache_dir=tmp_path / "ref")


def test_calibration_prefixes_mix_categories_and_splits_differ():
    specs, _, dev = calibration_set("all", "dev", 12, seed=0)
    assert len({s.category for s in specs[:12]}) >= 3
    _, _, test = calibration_set("all", "test", 12, seed=0)
    assert not set(dev) & set(test)


def test_the_reference_scores_itself_and_evaluations_are_cached(tiny_pipeline, tmp_path):
    store = EvaluationStore(tmp_path / "evals.jsonl")
    ev = evaluator(tiny_pipeline, tmp_path, store)
    assert ev.reference_quality(4)["psnr"] == float("inf")
    assert ev.evaluate(REFERENCE, 4).quality["psnr"] == float("inf")  # same noise, same images
    fewer = ev.evaluate(REFERENCE.with_(steps=2), 4)
    assert 0 < fewer.quality["psnr"] < 100 and not fewer.cached
    assert ev.evaluated == 2
    again = evaluator(tiny_pipeline, tmp_path, EvaluationStore(tmp_path / "evals.jsonl"))
    hit = again.evaluate(REFERENCE.with_(steps=2), 4)
    assert hit.cached and hit.quality == fewer.quality and again.evaluated == 0
    # another checkpoint, or other images, is another key
    other = evaluator(tiny_pipeline, tmp_path, EvaluationStore(tmp_path / "evals.jsonl"),
                      identity="tiny-b")
    assert not other.evaluate(REFERENCE.with_(steps=2), 4).cached
    assert not again.evaluate(REFERENCE.with_(steps=2), 2).cached
    ratios = ev.time_ratios([REFERENCE.with_(steps=2)])
    assert set(ratios) == {REFERENCE.with_(steps=2).key()}
    assert ratios[REFERENCE.with_(steps=2).key()]["time_ratio"] > 0


def test_a_damaged_store_line_is_skipped(tmp_path):
    path = tmp_path / "evals.jsonl"
    store = EvaluationStore(path)
    store.put("k1", {"quality": {"psnr": 1.0}})
    with open(path, "a") as f:
        f.write('{"key": "k2", "val')  # cut short
    again = EvaluationStore(path)
    assert len(again) == 1 and again.get("k1") == {"quality": {"psnr": 1.0}}


def test_run_accelerate_writes_frontier_report_and_a_loadable_plan(tiny_pipeline, tmp_path):
    space = Space(samplers=("euler",), steps=(2, 4), cfg=(2.0,), shift=(0.0,), intervals=((),),
                  accel=("", "deepcache:interval=2"), quant=("",))
    settings = AccelerateSettings(parse_budget("psnr>=15"), REFERENCE, space, minutes=5,
                                  suite="single", calib_images=4, test_images=2, rungs=2,
                                  batch_size=4, timing_images=2, timing_repeats=1)
    settings = settings.__class__(**{**settings.__dict__, "budget": parse_budget("psnr>=15")})
    record = run_accelerate(PipelineTarget(tiny_pipeline, "tiny"), settings, tmp_path / "out",
                            store=EvaluationStore(None), cache_dir=tmp_path / "ref")
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == ["frontier.json", "frontier.png", "plan.json", "report.html"]
    data = json.loads((tmp_path / "out" / "frontier.json").read_text())
    assert data["winner"]["label"] == record["winner"]["label"]
    assert [r["images"] for r in data["rungs"]] == [2, 4]
    assert data["confirmation"]["split"] == "test"
    assert isinstance(data["confirmation"]["held"], bool)
    plan = read_plans(tmp_path / "out" / "plan.json")["autotuned"]
    assert plan.sample["steps"] in (2, 4) and plan.checkpoint_sha256 == "tiny"
    assert plan.machine_mismatch() == ""  # measured here
    assert "did NOT hold" in (tmp_path / "out" / "report.html").read_text() or \
        "held" in (tmp_path / "out" / "report.html").read_text()
