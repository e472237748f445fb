"""Score aligned models against their base on the test split, with the reward-hacking guard.

Each model (the base, then every adapter folder given) samples every prompt of the "all" suite
(single, binding, counting, spatial, held-out shape-colour pairs) on the test split with the
demo's sampling; accuracy per category with 95% intervals, FD to real renders, and an exact
McNemar test against the base on the same prompts and seeds. A model whose FD rises by more
than 20% or whose single-object accuracy drops by more than 2 points is reported as hacking.

    python benchmarks/align_eval.py runs/align/dpo --out benchmarks/results/align/dpo-test.json

`--control DIR` adds a row for a layout adapter (`difflab control train`) on the base, each
prompt's boxes planned from its parse (`difflab.control.layout.plan_layout`, seeded by the
image's seed) and read by the adapter: layout-planned generation on the same images.
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


class Planned:
    """The base with a control adapter whose layouts are planned from the prompts: `generate`
    as a pipeline's, for `evaluate_suite`."""

    def __init__(self, pipe, folder: str, planner: str) -> None:
        from difflab.control.train import load_control

        self.pipe, self.net, self.planner = pipe, load_control(folder, pipe), planner

    def generate(self, prompts, seeds, config, progress: bool = False):
        from difflab.align.rewards import parse_prompt
        from difflab.control.layout import plan_layout
        from difflab.control.sampling import generate_controlled
        from difflab.control.train import apply_control

        layouts = [plan_layout(parse_prompt(p), s, self.planner)
                   for p, s in zip(prompts, seeds, strict=True)]
        with apply_control(self.pipe, self.net) as handle:
            return generate_controlled(self.pipe, layouts, seeds, config, control=handle)


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("adapters", nargs="*")
    ap.add_argument("--base", default="shapes-base")
    ap.add_argument("--split", default="test")
    ap.add_argument("--suite", default="all")
    ap.add_argument("--seeds", type=int, default=1, help="images per prompt")
    ap.add_argument("--control", action="append", default=[],
                    help="a control folder: sampled with layouts planned from each prompt")
    ap.add_argument("--planner", default="world", help="with --control: world or grid")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    models = {}
    for name in [args.base, *args.adapters, *(f"planned:{c}" for c in args.control)]:
        t = time.perf_counter()
        pipe = load(name) if not name.startswith("planned:") else Planned(
            load(args.base), name.partition(":")[2], args.planner)
        result = evaluate_suite(pipe, args.suite, DEMO_SAMPLING, args.seeds, split=args.split)
        m = result.metrics()
        m["seconds"] = round(time.perf_counter() - t, 1)
        m["categories"] = [s.category for s in result.specs]
        if name != args.base:
            manifest = read_manifest(resolve(name.removeprefix("planned:")))
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
                                  "adapters": args.adapters, "planned_controls": args.control,
                                  "planner": args.planner if args.control else None,
                                  "guard": {"fd_rise": FD_RISE, "single_drop": SINGLE_DROP}}),
        "note": "shared 2-core machine (other jobs running); seconds are indicative only",
        "models": models})


if __name__ == "__main__":
    main(sys.argv[1:])
