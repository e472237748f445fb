"""Choose tuning recipes on the dev split: tune a base (--base, default shapes-base) on a
concept with each named config, score the concept's prompts and suite `single` on dev (seeds
per prompt: --seeds), and append one JSON line per config (with the base model, machine, load
average and date) to the output file.

    python benchmarks/tune_explore.py --runs runs.json --out benchmarks/results/tune/dev.jsonl

`runs.json` is a list of [name, {TuneConfig fields}]; the name "base" scores the base alone.
A run whose name already has a line in the output file is skipped, so the same command resumes
a queue that was stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

from difflab.data.concepts import concept_images
from difflab.data.suites import expand_suite, load_suite
from difflab.eval.provenance import provenance
from difflab.runtime import load
from difflab.runtime.machine import resolve_precision, run_record
from difflab.tune.adapters import base_reference
from difflab.tune.fit import TuneConfig, tune

sys.path.insert(0, str(Path(__file__).parent))
from tune_concepts import concept_specs, evaluate_sets  # noqa: E402


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", required=True)
    ap.add_argument("--base", default="shapes-base", help="shipped model name or checkpoint")
    ap.add_argument("--concept", default="star")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seeds", default="2,1", help="seeds per prompt: concept,base")
    ap.add_argument("--images", type=int, default=12, help="training images of the concept")
    args = ap.parse_args(argv)
    runs = json.loads(Path(args.runs).read_text())
    k_concept, k_base = (int(k) for k in args.seeds.split(","))
    sets = {"concept": expand_suite(concept_specs(args.concept), k_concept, split="dev"),
            "base": expand_suite(load_suite("single"), k_base, split="dev")}
    base = base_reference(args.base)
    out = Path(args.out)
    done = {json.loads(line)["name"] for line in out.read_text().splitlines()
            if line} if out.exists() else set()
    for name, fields in runs:
        if name in done:
            print(f"{name}: already in {args.out}, skipped", flush=True)
            continue
        pipe = load(args.base)
        seconds, cfg, trainable = 0.0, None, 0
        n_images = fields.get("images", args.images)  # a run may name its own image count
        if name != "base":
            cfg = TuneConfig(concept=args.concept, **fields)
            images, captions = concept_images(args.concept, n_images, sizes=cfg.object_sizes)
            result = tune(pipe, cfg, images, captions, progress=False)
            seconds, trainable = result.seconds, result.trainable
        token = cfg.pseudo_word if cfg is not None and cfg.method == "textual" else ""
        res = evaluate_sets(pipe, sets, token, args.concept)
        command = "python benchmarks/tune_explore.py " + shlex.join(argv)
        row = {"provenance": provenance("dev", base["path"], base["sha256"], fields, command),
               "name": name, "base_model": base, "config": fields,
               "trainable": trainable, "tune_seconds": round(seconds, 1), "split": "dev",
               "tuned_concept": args.concept, "images": n_images,
               **{k: {"accuracy": v["accuracy"], "n": v["n"], "passed": v["passed"]}
                  for k, v in res.items()},
               "command": command,
               "machine": run_record(resolve_precision("auto", "cpu"), "cpu"),
               "load_average_1min": round(os.getloadavg()[0], 2),  # shared machine: times
               "date": time.strftime("%Y-%m-%dT%H:%M:%S")}
        with open(args.out, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(name, f"{seconds:.0f}s", {k: round(v["accuracy"], 3) for k, v in res.items()},
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
