"""One adapter's concept accuracy by inference path and precision, on the same prompts and seeds.

`difflab sample --adapter` merges the adapter into the base's weights; `tune_concepts.py`
scores the model it has just tuned, peft's unmerged LoRA layers. Both are the same function in
exact arithmetic; in bf16 they round differently. This scores the adapter both ways (merged;
peft's `PeftModel.from_pretrained` on the folder, unmerged) in each precision, per block of
`--block` seeds, so a difference between two result files can be told apart from the seeds:

    python benchmarks/tune_paths.py --base shapes-long \
        --adapter runs/tune-b16/star-lora-shapes-long-test --split test --seeds 8 \
        --out benchmarks/results/tune/star-long-paths-test.json
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from difflab.data.suites import expand_suite
from difflab.demo import DEMO_SAMPLING
from difflab.eval.shapeeval import evaluate
from difflab.eval.stats import mcnemar_exact, wilson_interval
from difflab.runtime import load, read_manifest
from difflab.runtime.machine import resolve_precision
from difflab.tune.adapters import apply_adapters

sys.path.insert(0, str(Path(__file__).parent))
from tune_accel import write_adapter_result  # noqa: E402
from tune_concepts import concept_specs  # noqa: E402


def main(argv: list[str]) -> int:
    from peft import PeftModel

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--adapter", required=True, help="a LoRA adapter folder tuned on --base")
    ap.add_argument("--base", default="shapes-base")
    ap.add_argument("--split", default="test", choices=("dev", "test"))
    ap.add_argument("--seeds", type=int, default=8, help="images per concept prompt")
    ap.add_argument("--block", type=int, default=4, help="seeds per reported block")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    concept = read_manifest(args.adapter).config["tune"]["concept"]
    prompts = concept_specs(concept)
    specs, seeds = expand_suite(prompts, args.seeds, split=args.split)
    merged = load(args.base)
    apply_adapters(merged, [(args.adapter, 1.0)])
    unmerged = load(args.base)
    unmerged.net = PeftModel.from_pretrained(unmerged.net, args.adapter).eval()
    rows = {}
    for precision in ("auto", "fp32"):
        config = replace(DEMO_SAMPLING, precision=precision)
        used = resolve_precision(precision, "cpu").name
        for path, pipe in (("merged", merged), ("peft unmerged", unmerged)):
            images = pipe.generate([s.text for s in specs], seeds, config, progress=False)
            flags = [int(v.passed) for v in evaluate(images, specs, vocabulary="extended").prompts]
            per = len(prompts) * args.block  # expand_suite orders images seed block by block
            blocks = [sum(flags[i: i + per]) for i in range(0, len(flags), per)]
            rows[f"{path}, {used}"] = {
                "path": path, "precision": used, "accuracy": float(np.mean(flags)),
                "n": len(flags), "interval": list(wilson_interval(sum(flags), len(flags))),
                "passed": flags, "passed_per_block": blocks, "block_size": per}
            print(f"{path:14s} {used:5s} {np.mean(flags):.3f} blocks {blocks}", flush=True)
    first = next(iter(rows.values()))
    for r in rows.values():
        t = mcnemar_exact(first["passed"], r["passed"])
        r["vs_first"] = {"p": t.p_value, "only_first": t.only_a, "only_this": t.only_b}
    write_adapter_result("tune_paths.py", argv, args, concept, {"rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
