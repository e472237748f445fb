"""`difflab accelerate MODEL --budget ... --budget-minutes M --out DIR`."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import typer

from difflab.config import ConfigError

DEFAULT_BUDGET = "accuracy>=-1pt,fd<=+10%"
DEFAULT_REFERENCE = "sampler=euler,steps=50,cfg=3.0"


def parse_reference(text: str):
    """`"sampler=euler,steps=50,cfg=3.0"` -> the reference Candidate (unknown keys raise)."""
    from difflab.accel.api import parse_options
    from difflab.autotune.space import Candidate

    return Candidate.from_dict(parse_options(text))


def accelerate_command(
    model: str = typer.Argument(..., help="a shipped model's name (shapes-base) or any "
                                "artefact folder"),
    budget: str = typer.Option(DEFAULT_BUDGET, help="quality budget relative to the reference, "
                               "e.g. 'accuracy>=-1pt,fd<=+10%,psnr>=28' (accuracy/* bounds "
                               "every prompt category)"),
    budget_minutes: float = typer.Option(30.0, "--budget-minutes", help="wall-clock minutes of "
                                         "the search (reference images included; the test-"
                                         "split confirmation and ablations come after)"),
    out: str = typer.Option(..., help="new folder: frontier.json, report.html, frontier.png, "
                            "plan.json"),
    reference: str = typer.Option(DEFAULT_REFERENCE, help="the configuration the budget is "
                                  "relative to and speed-ups are measured against"),
    suite: str = typer.Option("all", help="prompt suite of the calibration and test images"),
    calib_images: int = typer.Option(48, help="calibration images (dev split)"),
    test_images: int = typer.Option(48, help="confirmation images (test split)"),
    quant: bool = typer.Option(True, help="search quantization recipes (real int8 where this "
                               "machine has fast kernels)"),
    seed: int = typer.Option(0, help="order of the candidates and of the calibration images"),
    store: str = typer.Option("", help="evaluated-configuration cache (JSON lines); default "
                              "$DIFFLAB_CACHE/autotune/evaluations.jsonl"),
) -> None:
    """Search the fastest configuration of MODEL within a quality budget; write the frontier,
    a report and a plan that `difflab sample --plan` and `difflab serve --plan` load."""
    from difflab.autotune.accelerate import AccelerateSettings, run_accelerate
    from difflab.autotune.budget import parse_budget
    from difflab.autotune.space import Space, caches_for
    from difflab.autotune.store import EvaluationStore, default_store_dir
    from difflab.data.suites import load_suite
    from difflab.limits import check_float, check_int, check_seed

    parsed = parse_budget(budget)
    ref = parse_reference(reference)
    check_float("--budget-minutes", budget_minutes, 0.0, 24 * 60.0, lo_open=True)
    load_suite(suite)
    check_int("--calib-images", calib_images, 2, 10_000)
    check_int("--test-images", test_images, 2, 10_000)
    check_seed("--seed", seed, 1)
    space = Space() if quant else Space(quant=("",))
    if Path(out).exists() and (not Path(out).is_dir() or any(Path(out).iterdir())):
        raise ConfigError(f"--out {out} exists and is not an empty folder; choose a new one")
    if store and Path(store).is_dir():
        raise ConfigError(f"--store {store} is a folder; give a file (JSON lines)")
    settings = AccelerateSettings(parsed, ref, space, minutes=budget_minutes, suite=suite,
                                  calib_images=calib_images, test_images=test_images,
                                  seed=seed)
    from difflab.eval.commands import pipeline_target

    target = pipeline_target(model)
    if space.accel == Space().accel:  # the default axis: the caches this network supports
        settings = replace(settings, space=replace(space, accel=caches_for(target.pipe.net)))
    record = run_accelerate(
        target, settings, out,
        store=EvaluationStore(Path(store) if store else
                              default_store_dir() / "evaluations.jsonl"),
        progress=lambda text: typer.echo(text, err=True))
    w, conf = record["winner"], record["confirmation"]
    typer.echo(f"search: {record['search_seconds'] / 60:.1f} min, "
               f"{sum(len(r['evaluations']) for r in record['rungs'])} evaluations "
               f"({record['evaluations_computed']} computed, the rest from the cache)")
    if w is None:
        typer.echo(f"no configuration met the budget {record['budget']}")
    else:
        typer.echo(f"winner: {w['label']}: {w['speedup']:.2f}x vs {record['reference']} "
                   "(interleaved timing, this machine)")
        typer.echo(f"test split: budget {'held' if conf['held'] else 'did NOT hold'} "
                   f"({conf['margins']})")
    typer.echo(f"wrote {out}/ (frontier.json, report.html, frontier.png"
               + (", plan.json)" if w else ")"))
