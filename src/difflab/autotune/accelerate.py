"""`difflab accelerate`: search, confirm the winner on the test split, ablate it, and write
frontier.json, report.html, frontier.png and plan.json."""

from __future__ import annotations

import html
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from difflab.autotune.budget import Budget
from difflab.autotune.evaluator import PipelineEvaluator, calibration_set
from difflab.autotune.search import (
    SearchResult,
    frontier_mask,
    successive_halving,
)
from difflab.autotune.space import Candidate, Space, ablations
from difflab.autotune.store import EvaluationStore
from difflab.runtime.plan import Plan

# FD and accuracy come along for the report even when the budget bounds only PSNR
REPORT_METRICS = ("accuracy", "fd", "psnr")
DIRECTIONS = {"accuracy": True, "fd": False, "psnr": True, "ssim": True, "kid": False}


@dataclass(frozen=True)
class AccelerateSettings:
    """What one `difflab accelerate` run searches and how long."""

    budget: Budget
    reference: Candidate
    space: Space
    minutes: float = 30.0
    suite: str = "all"
    calib_images: int = 48
    test_images: int = 48
    rungs: int = 3
    eta: int = 3
    seed: int = 0
    batch_size: int = 16
    timing_images: int = 4
    timing_repeats: int = 3
    precision: str = "fp32"


def metrics_of(budget: Budget) -> tuple[str, ...]:
    return tuple(dict.fromkeys([*REPORT_METRICS, *budget.metrics]))


def make_evaluator(target: Any, s: AccelerateSettings, split: str, images: int,
                   store: EvaluationStore, cache_dir: str | Path | None) -> PipelineEvaluator:
    specs, prompts, seeds = calibration_set(s.suite, split, images, s.seed)
    return PipelineEvaluator(target, s.reference, metrics_of(s.budget), specs, prompts, seeds,
                             split=split, store=store, batch_size=s.batch_size,
                             timing_images=s.timing_images, timing_repeats=s.timing_repeats,
                             cache_dir=cache_dir, precision=s.precision)


def confirm(target: Any, s: AccelerateSettings, winner: Candidate, store: EvaluationStore,
            cache_dir: str | Path | None) -> dict[str, Any]:
    """The winner and the reference on the test split: the budget check, accuracy with Wilson
    intervals and McNemar's paired test."""
    from difflab.eval.stats import mcnemar_exact, wilson_interval

    ev = make_evaluator(target, s, "test", s.test_images, store, cache_dir)
    n = len(ev.prompts)
    ref_q = ev.reference_quality(n)
    ref_passed = [int(v) for v in ev._score(ev.ref_images, n).get("passed", [])]
    win = ev.evaluate(winner, n)
    out: dict[str, Any] = {"split": "test", "images": n, "reference_quality": ref_q,
                           "winner_quality": win.quality,
                           "margins": s.budget.margins(win.quality, ref_q),
                           "held": s.budget.check(win.quality, ref_q)}
    if ref_passed and win.passed:
        test = mcnemar_exact([bool(v) for v in win.passed], [bool(v) for v in ref_passed])
        out["accuracy_interval"] = {
            "winner": list(wilson_interval(sum(win.passed), n)),
            "reference": list(wilson_interval(sum(ref_passed), n))}
        out["mcnemar"] = {"p": test.p_value, "winner_only": test.only_a,
                          "reference_only": test.only_b}
    return out


def ablate(ev: PipelineEvaluator, s: AccelerateSettings, winner: Candidate) -> dict[str, Any]:
    """Each component set back to the reference's value, one at a time: its quality on the
    whole calibration split and its time ratio (timed interleaved with the winner)."""
    n = len(ev.prompts)
    ref_q = ev.reference_quality(n)
    variants = ablations(winner, s.reference)
    if not variants:
        return {}
    timings = ev.time_ratios([winner, *variants.values()])
    out = {"winner": {"label": winner.label(), **timings[winner.key()]}}
    for what, c in variants.items():
        e = ev.evaluate(c, n)
        out[what] = {"label": c.label(), "quality": e.quality,
                     "meets_budget": s.budget.check(e.quality, ref_q), **timings[c.key()]}
    return out


def run_accelerate(target: Any, s: AccelerateSettings, out: str | Path, *,
                   store: EvaluationStore, cache_dir: str | Path | None = None,
                   progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The whole run; writes the outputs into `out` (whole or absent) and returns the
    frontier record."""
    from difflab.eval.provenance import provenance
    from difflab.runtime.artefacts import new_folder
    from difflab.runtime.machine import run_record

    say = progress or (lambda text: None)
    start = time.monotonic()
    load_at_start = list(os.getloadavg())
    ev = make_evaluator(target, s, "dev", s.calib_images, store, cache_dir)
    say(f"reference images ready ({len(ev.prompts)} calibration images)")
    candidates = s.space.draw(s.space.size, s.seed)
    result = successive_halving(ev, candidates, s.budget, full_images=len(ev.prompts),
                                minutes=s.minutes - (time.monotonic() - start) / 60,
                                rungs=s.rungs, eta=s.eta, progress=say)
    search_seconds = time.monotonic() - start
    confirmation, ablation = None, {}
    if result.winner is not None:
        say(f"winner {result.winner.label()}: confirming on the test split")
        confirmation = confirm(target, s, result.winner, store, cache_dir)
        say("ablating the winner's components")
        ablation = ablate(ev, s, result.winner)
    machine = run_record()
    record = frontier_record(result, s, search_seconds, confirmation, ablation)
    record["provenance"] = provenance(
        "dev (search), test (confirmation)", str(target.source), target.identity,
        {"budget": s.budget.text(), "reference": s.reference.key(), "minutes": s.minutes,
         "suite": s.suite, "calib_images": s.calib_images, "test_images": s.test_images,
         "rungs": s.rungs, "eta": s.eta, "seed": s.seed, "precision": s.precision,
         "space_size": s.space.size}, machine=machine)
    record["evaluations_computed"] = ev.evaluated
    record["timing_note"] = (
        "times are ratios to the reference timed round-robin in the same process (median of "
        "the rounds); the load average shows how shared the CPU was")
    record["load_average"] = {"start": load_at_start, "end": list(os.getloadavg())}
    with new_folder(out) as tmp:
        write_outputs(tmp, record, result, s, target.identity, machine)
    return record


def frontier_record(result: SearchResult, s: AccelerateSettings, seconds: float,
                    confirmation: dict | None, ablation: dict) -> dict[str, Any]:
    """frontier.json: every evaluation by rung with its margins, the finalists' timings and
    Pareto flags, the winner, its test-split confirmation and its ablations."""
    rungs = []
    for n, evals in zip(result.rungs, result.evaluations, strict=True):
        ref = result.reference_quality[str(n)]
        rows = [{**e.to_dict(), "meets_budget": s.budget.check(e.quality, ref),
                 "margins": s.budget.margins(e.quality, ref)} for e in evals]
        rungs.append({"images": n, "reference_quality": ref, "evaluations": rows})
    final = result.finalists()
    keys = [k for k in ("psnr", "accuracy", "fd") if final and k in final[0].quality]
    mask = frontier_mask(final, result.timings, keys, DIRECTIONS)
    finalists = [{**e.to_dict(), **result.timings.get(e.candidate.key(), {}),
                  "on_frontier": on} for e, on in zip(final, mask, strict=True)]
    winner = result.winner
    return {
        "budget": s.budget.text(), "reference": s.reference.label(),
        "search_seconds": seconds, "stopped_by_budget": result.stopped_by_budget,
        "search": "successive halving", "rungs": rungs, "finalists": finalists,
        "frontier_axes": ["time_ratio", *keys],
        "winner": None if winner is None else {
            "label": winner.label(), "config": winner.key(),
            **result.timings.get(winner.key(), {})},
        "confirmation": confirmation, "ablation": ablation, "failures": result.failures,
    }


def winner_plan(record: dict[str, Any], winner: Candidate, identity: str,
                machine: dict[str, Any]) -> Plan:
    """The winner as a plan: sampling settings, cache and quantization, with where and on
    what it was measured."""
    conf = record["confirmation"] or {}
    w = record["winner"]
    metrics = {"speedup": w.get("speedup"), "time_ratio": w.get("time_ratio"),
               "budget": record["budget"], "reference": record["reference"],
               "held_on_test": conf.get("held"), "test_quality": conf.get("winner_quality"),
               "precision": record["provenance"]["config"]["precision"]}
    from difflab.eval.report import _finite

    return Plan(name="autotuned", accel=winner.accel, sample=winner.sample(),
                quant=winner.quant, machine=machine, checkpoint_sha256=identity,
                description=f"{winner.label()} (autotuned: {record['budget']})",
                metrics=_finite(metrics))


def write_outputs(folder: Path, record: dict[str, Any], result: SearchResult,
                  s: AccelerateSettings, identity: str, machine: dict[str, Any]) -> None:
    from difflab.eval.report import _finite
    from difflab.io import write_json
    from difflab.runtime.plan import write_plans

    write_json(folder / "frontier.json", _finite(record))
    if result.winner is not None:
        write_plans(folder / "plan.json", [winner_plan(record, result.winner, identity,
                                                       machine)])
    plot(record, folder / "frontier.png")
    (folder / "report.html").write_text(report_html(record))


def plot(record: dict[str, Any], path: Path) -> None:
    """PSNR to the reference (y) against time ratio (x) of the timed finalists."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in record["finalists"] if "time_ratio" in r]
    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=120)
    for r in rows:
        color = "tab:red" if r["on_frontier"] else "tab:gray"
        psnr = float(r["quality"].get("psnr", float("nan")))
        ax.scatter([r["time_ratio"]], [psnr], c=color)
        ax.annotate(r["label"], (r["time_ratio"], psnr), fontsize=6,
                    textcoords="offset points", xytext=(3, 3))
    ax.set_xlabel("time ratio to the reference (lower is better)")
    ax.set_ylabel("PSNR to the reference, dB")
    ax.set_title(f"finalists (red: Pareto frontier); budget {record['budget']}", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)


def _table(rows: list[list[Any]], head: list[str]) -> str:
    def cell(v: Any) -> str:
        return html.escape(f"{v:.4g}" if isinstance(v, float) else str(v))
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>" for r in rows)
    return ("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"
            + body + "</table>")


def report_html(record: dict[str, Any]) -> str:
    """One page: the winner, whether it held on the test split, the finalists, the ablations
    and how many configurations each rung scored."""
    w, conf = record["winner"], record["confirmation"]
    parts = [f"<h1>difflab accelerate</h1><p>budget <code>{html.escape(record['budget'])}"
             f"</code> against <code>{html.escape(record['reference'])}</code>; search "
             f"{record['search_seconds'] / 60:.1f} min (successive halving); times are "
             "ratios to the reference timed interleaved in the same process.</p>"]
    if w is None:
        parts.append("<p><b>No configuration met the budget on the calibration split.</b></p>")
    else:
        parts.append(f"<p>winner <code>{html.escape(w['label'])}</code>: "
                     f"{w.get('speedup', float('nan')):.2f}x faster than the reference.</p>")
        if conf is not None:
            verdict = "held" if conf["held"] else "did NOT hold"
            parts.append(f"<p>On the test split ({conf['images']} images) the budget "
                         f"<b>{verdict}</b>: margins {html.escape(str(conf['margins']))}.</p>")
    parts.append("<h2>Finalists</h2><img src='frontier.png'>")
    keys = record["frontier_axes"][1:]
    parts.append(_table([[r["label"], r.get("time_ratio", "-"), *(r["quality"][k] for k in keys),
                          r["on_frontier"]] for r in record["finalists"]],
                        ["configuration", "time ratio", *keys, "frontier"]))
    if record["ablation"]:
        rows = [[what, a["label"], a["time_ratio"], a.get("quality", {}).get("psnr", "-"),
                 a.get("meets_budget", "-")] for what, a in record["ablation"].items()]
        parts.append("<h2>Ablation (one component back to the reference's)</h2>"
                     + _table(rows, ["removed", "configuration", "time ratio", "psnr",
                                     "meets budget"]))
    parts.append("<h2>Rungs</h2>" + _table(
        [[r["images"], len(r["evaluations"]), sum(e["meets_budget"] for e in r["evaluations"])]
         for r in record["rungs"]], ["images", "configurations", "meeting the budget"]))
    style = ("<style>body{font-family:sans-serif}"
             "td,th{padding:2px 8px;border:1px solid #ccc}</style>")
    return f"<!doctype html><html><head><meta charset='utf-8'>{style}</head><body>" \
           + "".join(parts) + "</body></html>"
