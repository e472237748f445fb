"""Few-step students against their teacher: accuracy per suite, FD, PSNR to the teacher.

Every point samples the same prompts with the same seeds (test split by default): the teacher
(shapes-base, Euler with its CFG) at 50 and 20 steps and plain Euler at the students' step
counts, and each student folder with its own sampler (cfg 1: the guidance is folded in) at 1, 2
and 4 steps. Scores: accuracy per suite with 95% Wilson intervals, exact McNemar against the
50-step teacher on the same images, FD to real renders (bundled evaluator features), PSNR to the
50-step teacher's image from the same noise, and the distillation cost from each student's
manifest. Seconds per point are wall time on a shared machine (not a speed claim).

    python benchmarks/distill_eval.py --student lcm=runs/distill/lcm4 \
        --out benchmarks/results/distill/eval.json
    python benchmarks/distill_eval.py --table benchmarks/results/distill/eval.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from difflab.config import to_dict
from difflab.data.suites import expand_suite, load_suite
from difflab.eval.metrics import psnr
from difflab.eval.provenance import provenance
from difflab.eval.stats import mcnemar_exact, wilson_interval
from difflab.eval.tables import format_distill
from difflab.evaluate import score_images
from difflab.io import write_json
from difflab.runtime import SampleConfig, load, read_manifest
from difflab.runtime.artefacts import resolve, sha256_file

SUITES = ("single", "counting", "heldout")  # binding and spatial: the teacher scores 0%
CACHE = Path("runs/distill/eval-cache")


def prompt_set(suites: list[str], seeds: int, split: str) -> tuple[list, list[int]]:
    specs, seed_list = [], []
    for suite in suites:
        s, k = expand_suite(load_suite(suite), seeds, split=split)
        specs += s
        seed_list += k
    return specs, seed_list


def score(images: np.ndarray, specs: list, seeds: list[int], reference: np.ndarray | None,
          ref_flags: list[bool] | None) -> dict[str, Any]:
    report, fd, floor = score_images(images, specs, seeds)
    flags = [v.passed for v in report.prompts]
    per = {}
    for cat in report.per_category:
        f = [p for p, s in zip(flags, specs, strict=True) if s.category == cat]
        per[cat] = {"accuracy": sum(f) / len(f), "n": len(f),
                    "interval": list(wilson_interval(sum(f), len(f)))}
    out = {"accuracy": sum(flags) / len(flags), "n": len(flags),
           "interval": list(wilson_interval(sum(flags), len(flags))), "per_suite": per,
           "fd": float(fd), "fd_floor": float(floor), "passed": [int(f) for f in flags]}
    if reference is not None:
        out["psnr_to_teacher50"] = float(psnr(images, reference).mean())
        m = mcnemar_exact(flags, ref_flags)
        out["mcnemar_vs_teacher50"] = {"only_this": m.only_a, "only_teacher": m.only_b,
                                       "p": m.p_value}
    return out


def run_point(pipe, name: str, config: SampleConfig, specs, seeds, reference, ref_flags,
              extra: dict[str, Any]) -> tuple[dict, np.ndarray]:
    # images are cached per point (keyed by model weights, config and seeds) so that a later
    # run adding a student reuses the teacher's points
    key = hashlib.sha256(json.dumps([pipe.source, sha256_file(Path(pipe.source)
                                     / "model.safetensors"), to_dict(config), seeds]).encode())
    cached = CACHE / f"{key.hexdigest()[:20]}.npz"
    t0 = time.perf_counter()
    if cached.is_file():
        data = np.load(cached)
        images, seconds = data["images"], float(data["seconds"])
    else:
        images = pipe.generate([s.text for s in specs], seeds, config)
        seconds = time.perf_counter() - t0
        CACHE.mkdir(parents=True, exist_ok=True)
        np.savez(cached, images=images, seconds=seconds)
    row = {"name": name, "sampler": config.sampler, "steps": config.steps, "cfg": config.cfg,
           "nfe": config.nfe, "rows_per_step": 2 if config.cfg != 1.0 else 1,
           "seconds_shared_machine": round(seconds, 1), **extra,
           **score(images, specs, seeds, reference, ref_flags)}
    print(f"{name:<22} acc {100 * row['accuracy']:5.1f}%  FD {row['fd']:6.2f}  PSNR "
          f"{row.get('psnr_to_teacher50', float('nan')):5.2f}  ({seconds:.0f} s)", flush=True)
    return row, images


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", default="shapes-base")
    ap.add_argument("--student", action="append", default=[], help="NAME=FOLDER (repeatable)")
    ap.add_argument("--steps", default="1,2,4", help="student and plain-Euler step counts")
    ap.add_argument("--guidance", type=float, default=3.0, help="the teacher's CFG scale")
    ap.add_argument("--suites", default=",".join(SUITES))
    ap.add_argument("--seeds", type=int, default=1, help="images per prompt")
    ap.add_argument("--split", default="test")
    ap.add_argument("--out", default="benchmarks/results/distill/eval.json")
    ap.add_argument("--table", default="", help="print the markdown table of a result file")
    args = ap.parse_args(argv)
    if args.table:
        print(table(json.loads(Path(args.table).read_text())))
        return 0
    steps = [int(s) for s in args.steps.split(",")]
    specs, seeds = prompt_set(args.suites.split(","), args.seeds, args.split)
    teacher = load(args.teacher)
    start, rows = time.perf_counter(), []
    ref_config = SampleConfig(sampler="euler", steps=50, cfg=args.guidance, precision="fp32")
    row, reference = run_point(teacher, "teacher euler x50", ref_config, specs, seeds, None, None,
                               {"kind": "teacher"})
    rows.append(row)
    ref_flags = [bool(p) for p in row["passed"]]
    for n in [20, *steps]:
        config = SampleConfig(sampler="euler", steps=n, cfg=args.guidance, precision="fp32")
        kind = "teacher" if n == 20 else "plain euler"
        rows.append(run_point(teacher, f"{kind} x{n}", config, specs, seeds, reference,
                              ref_flags, {"kind": kind})[0])
    plain = {r["steps"]: r for r in rows if r["kind"] == "plain euler"}
    students = {}
    for spec in args.student:
        name, folder = spec.split("=", 1)
        pipe, manifest = load(folder), read_manifest(resolve(folder))
        section = manifest.config["distill"]
        students[name] = {"folder": folder, "method": section["method"],
                          "trained_steps": section["steps"], "sampler": section["sampler"],
                          "guidance": section["guidance"], "settings": section["settings"],
                          "sha256": manifest.files["model.safetensors"],
                          "distill_minutes": round(manifest.metrics["seconds"] / 60, 1),
                          "teacher_evaluations": manifest.metrics["teacher_evaluations"],
                          "phases": manifest.metrics["phases"],
                          "provenance": manifest.provenance}
        for n in steps:
            config = pipe.default_config(steps=n, precision="fp32")
            row = run_point(pipe, f"{name} x{n}", config, specs, seeds, reference,
                            ref_flags, {"kind": "student", "student": name})[0]
            m = mcnemar_exact(row["passed"], plain[n]["passed"])  # same prompts and noise
            row["mcnemar_vs_plain_euler"] = {"only_this": m.only_a, "only_plain": m.only_b,
                                             "p": m.p_value}
            rows.append(row)
    weights = resolve(args.teacher) / "model.safetensors"
    config = {"suites": args.suites.split(","), "seeds_per_prompt": args.seeds,
              "teacher_guidance": args.guidance, "steps": steps, "reference": "teacher euler x50",
              "note": "binding and spatial left out: the teacher scores 0% on them"}
    result = {"provenance": provenance(args.split, args.teacher, sha256_file(weights), config),
              "machine_shared": True, "seconds": round(time.perf_counter() - start, 1),
              "students": students, "rows": rows}
    write_json(args.out, result)
    print(table(result))
    print(f"wrote {args.out} ({result['seconds']:.0f} s)")
    return 0


def table(result: dict[str, Any]) -> str:
    """The docs' markdown table of a result file."""
    return format_distill(result)

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
