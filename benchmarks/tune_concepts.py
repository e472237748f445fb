"""Teach a base (--base, default shapes-base) a new concept with every tuning method, side by side.

For each method: tune on N rendered images of the concept (`difflab.data.concepts`), save the
adapter, then score, on one split, (a) the concept's prompts of the novel suites and (b) a base
suite (forgetting), every image with the evaluator's extended vocabulary; the base model is
scored on the same images' prompts and seeds, so each method's change is a paired comparison
(McNemar on the base suite). Writes one JSON result file with provenance.

    python benchmarks/tune_concepts.py --concept star --split dev --methods lora,full \
        --out benchmarks/results/tune/star-dev.json
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from difflab.data.concepts import concept_images
from difflab.data.suites import expand_suite, load_suite
from difflab.demo import DEMO_SAMPLING
from difflab.eval.features import extract_features, frechet_distance
from difflab.eval.provenance import provenance
from difflab.eval.shapeeval import evaluate
from difflab.eval.stats import mcnemar_exact, wilson_interval
from difflab.io import write_json
from difflab.runtime import load
from difflab.runtime.machine import resolve_precision, run_record
from difflab.tune.adapters import base_reference, save_adapter
from difflab.tune.fit import TuneConfig, tune
from difflab.tune.methods import METHODS

CONCEPT_SUITE = {"star": "novel-shape", "heart": "novel-shape", "pink": "novel-color"}


def adapter_folder(root: str, base: str, concept: str, method: str, split: str) -> Path:
    """Where a run's adapter goes: named by concept, method, base and split, so runs on
    different bases never overwrite each other (a rerun of the same run replaces its own)."""
    return Path(root) / f"{concept}-{method}-{Path(base).name}-{split}"


def concept_specs(concept: str) -> list:
    """The novel-suite prompts that use `concept` alone."""
    specs = load_suite(CONCEPT_SUITE[concept])
    return [s for s in specs if any(concept in (o.shape, o.color) for o in s.objects)]


def score(pipe, specs, seeds, prompts=None) -> dict:
    """Accuracy (with interval) and verdicts of `pipe` on (specs, seeds), extended vocabulary."""
    texts = prompts or [s.text for s in specs]
    images = pipe.generate(texts, seeds, DEMO_SAMPLING)
    report = evaluate(images, specs, vocabulary="extended")
    flags = [int(v.passed) for v in report.prompts]
    return {"accuracy": float(np.mean(flags)), "n": len(flags),
            "interval": list(wilson_interval(sum(flags), len(flags))), "passed": flags,
            "features": extract_features(images)}


def evaluate_sets(pipe, sets: dict, token: str = "", concept: str = "") -> dict:
    out = {}
    for name, (specs, seeds) in sets.items():
        prompts = [s.text.replace(concept, token) for s in specs] if token else None
        out[name] = score(pipe, specs, seeds, prompts)
    return out


def summarise(res: dict, base: dict, real: np.ndarray) -> dict:
    row = {}
    for name, r in res.items():
        row[name] = {k: r[k] for k in ("accuracy", "n", "interval", "passed")}
        row[name]["fd"] = float(frechet_distance(r["features"], real[name]))
        if base is not None:
            row[name]["change"] = r["accuracy"] - base[name]["accuracy"]
            row[name]["mcnemar_p"] = mcnemar_exact(base[name]["passed"], r["passed"]).p_value
    return row


def _override(item: str) -> tuple[str, str, Any]:
    """'method.field=value' -> (method, field, value typed as the TuneConfig field): a string
    field takes the text as it is (or a JSON string, quoted), any other a JSON value."""
    key, eq, value = item.partition("=")
    method, dot, field = key.partition(".")
    if not (eq and dot):
        raise ValueError("expected method.field=value")
    default = getattr(TuneConfig(), field, AttributeError)
    if default is AttributeError:
        raise ValueError(f"TuneConfig has no field {field!r}")
    if isinstance(default, str) and not value.startswith('"'):
        return method, field, value
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        raise ValueError(f"{value!r} is not a JSON value") from None
    return method, field, parsed if default is None else type(default)(parsed)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="shapes-base", help="shipped model name or checkpoint")
    ap.add_argument("--concept", default="star")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--split", default="dev", choices=("dev", "test"))
    ap.add_argument("--images", type=int, default=12)
    ap.add_argument("--object-sizes", default="random", help="of the rendered training images: "
                    "random or largest-first")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--concept-seeds", type=int, default=4)
    ap.add_argument("--base-suite", default="single")
    ap.add_argument("--base-seeds", type=int, default=2)
    ap.add_argument("--set", action="append", default=[], help="method.field=value override")
    ap.add_argument("--adapters", default="runs/tune", help="where adapter folders go")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    overrides: dict[str, dict] = {}
    for item in args.set:  # checked before the base is scored, which takes minutes
        try:
            method, field, value = _override(item)
        except ValueError as e:
            ap.error(f"--set {item}: {e}")
        overrides.setdefault(method, {})[field] = value

    from difflab.data.shapes import render_specs

    sets = {"concept": expand_suite(concept_specs(args.concept), args.concept_seeds,
                                    split=args.split),
            "base": expand_suite(load_suite(args.base_suite), args.base_seeds,
                                 split=args.split)}
    real = {k: extract_features(render_specs(s, seeds, 32)) for k, (s, seeds) in sets.items()}
    images, captions = concept_images(args.concept, args.images, seed=0,
                                      sizes=args.object_sizes)
    base_pipe = load(args.base)
    results = {"base": summarise(evaluate_sets(base_pipe, sets), None, real)}
    base_scores = {k: {"accuracy": v["accuracy"], "passed": v["passed"]}
                   for k, v in results["base"].items()}
    costs = {}
    for method in args.methods.split(","):
        cfg = TuneConfig(method=method, concept=args.concept, images=args.images,
                         steps=args.steps, object_sizes=args.object_sizes)
        cfg = replace(cfg, **overrides.get(method, {}))
        pipe = load(args.base)
        t0 = time.perf_counter()
        result = tune(pipe, cfg, images, captions, progress=False)
        wall = time.perf_counter() - t0
        folder = adapter_folder(args.adapters, args.base, args.concept, method, args.split)
        if folder.exists():
            import shutil

            shutil.rmtree(folder)
        manifest = save_adapter(result, folder, base_reference(args.base))
        size = sum((folder / f).stat().st_size for f in manifest.files)
        token = cfg.pseudo_word if method == "textual" else ""
        res = evaluate_sets(pipe, sets, token, args.concept)
        results[method] = summarise(res, base_scores, real)
        costs[method] = {"trainable": result.trainable, "tune_seconds": round(result.seconds, 1),
                         "wall_seconds": round(wall, 1), "adapter_bytes": size,
                         "load_average_1min": round(os.getloadavg()[0], 2),
                         "final_loss": float(np.mean(result.losses[-20:])),
                         "config": asdict(cfg), "adapter": str(folder)}
        line = ", ".join(f"{k} {100 * v['accuracy']:.1f}%" for k, v in results[method].items())
        print(f"{method:<10} {result.seconds:6.1f} s  {result.trainable:>8,} trainable  {line}",
              flush=True)
    params = sum(p.numel() for p in base_pipe.net.parameters())
    base = base_reference(args.base)
    write_json(args.out, {
        "provenance": provenance(args.split, base["path"], base["sha256"], vars(args),
                                 "python benchmarks/tune_concepts.py " + " ".join(argv)),
        "command": "python benchmarks/tune_concepts.py " + shlex.join(argv),
        "base": base, "base_parameters": params,
        "concept": args.concept, "split": args.split, "training_images": captions,
        "sample_config": asdict(DEMO_SAMPLING), "evaluator_vocabulary": "extended",
        "sets": {k: {"suite": CONCEPT_SUITE[args.concept] if k == "concept" else
                     args.base_suite, "images": len(v[0])} for k, v in sets.items()},
        "results": results, "costs": costs,
        "machine": run_record(resolve_precision("auto", "cpu"), "cpu"),
        "load_average_at_end": os.getloadavg(),  # other jobs on the machine inflate times
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
    })
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
