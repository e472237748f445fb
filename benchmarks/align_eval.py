"""Score aligned models against their base on the test split, with the reward-hacking guard.

Each model (the base, then every adapter folder given) samples every prompt of the "all" suite
(single, binding, counting, spatial, held-out shape-colour pairs) on the test split with the
demo's sampling; accuracy per category with 95% intervals, FD to real renders, and an exact
McNemar test against the base on the same prompts and seeds. A model whose FD rises by more
than 20% or whose single-object accuracy drops by more than 2 points is reported as hacking.

    python benchmarks/align_eval.py runs/align/dpo --out benchmarks/results/align/dpo-test.json
"""

from __future__ import annotations

import argparse
import sys
import time

from difflab.demo import DEMO_SAMPLING
from difflab.eval.commands import checkpoint_identity
from difflab.eval.provenance import provenance
from difflab.eval.stats import mcnemar_exact
from difflab.evaluate import evaluate_suite
from difflab.io import write_json
from difflab.runtime import load, read_manifest
from difflab.runtime.artefacts import resolve

FD_RISE, SINGLE_DROP = 0.20, 0.02


def guard(base: dict, model: dict) -> dict:
    """The hacking verdict of `model` against `base` (FD up > 20%, single-object down > 2 pts)."""
    fd_change = model["fd"] / base["fd"] - 1
    single_change = model["per_category"]["single"] - base["per_category"]["single"]
    hacking = fd_change > FD_RISE or single_change < -SINGLE_DROP
    return {"fd_change": fd_change, "single_change": single_change, "hacking": hacking}


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("adapters", nargs="*")
    ap.add_argument("--base", default="shapes-base")
    ap.add_argument("--split", default="test")
    ap.add_argument("--suite", default="all")
    ap.add_argument("--seeds", type=int, default=1, help="images per prompt")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    models = {}
    for name in [args.base, *args.adapters]:
        t = time.perf_counter()
        pipe = load(name)
        result = evaluate_suite(pipe, args.suite, DEMO_SAMPLING, args.seeds, split=args.split)
        m = result.metrics()
        m["seconds"] = round(time.perf_counter() - t, 1)
        m["categories"] = [s.category for s in result.specs]
        if name != args.base:
            manifest = read_manifest(resolve(name))
            m["adapter_manifest"] = {"config": manifest.config, "metrics": manifest.metrics}
        models[name] = m
        print(name)
        print(result.table())
    base = models[args.base]
    for name, m in models.items():
        if name != args.base:
            m["guard"] = guard(base, m)
            m["vs_base"] = mcnemar_exact(m["passed"], base["passed"]).__dict__
            print(f"{name}: {m['guard']}, McNemar {m['vs_base']}")
    folder = resolve(args.base)
    write_json(args.out, {
        "provenance": provenance(args.split, str(folder), checkpoint_identity(folder),
                                 {"sampling": DEMO_SAMPLING.__dict__, "suite": args.suite,
                                  "seeds_per_prompt": args.seeds,
                                  "adapters": args.adapters,
                                  "guard": {"fd_rise": FD_RISE, "single_drop": SINGLE_DROP}}),
        "note": "shared 2-core machine (other jobs running); seconds are indicative only",
        "models": models})


if __name__ == "__main__":
    main(sys.argv[1:])
