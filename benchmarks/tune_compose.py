"""Adapters together and under acceleration/compression, measured on one split.

Composition: two separately tuned concept adapters (a shape and a colour) merged by task
arithmetic and by TIES, scored on the prompt that needs both ("a pink star") and on each
concept's own prompts (interference). Acceleration/compression: one adapter merged into the
base, then DeepCache, encoder propagation, real-int8 W8A8 or SVDQuant W4A4 applied (quantized after
merging), and the LoRA joined to the low-rank branch of a W4A4 base quantized without it (as
SVDQuant runs LoRAs); the share of the adapter's accuracy gain that survives =
(adapter - base) under the method / (adapter - base) plain.

    python benchmarks/tune_compose.py --shape runs/tune/star-lora-test \
        --color runs/tune/pink-lora-test --split test --out benchmarks/results/tune/compose.json

The adapters must have been tuned on --base (default shapes-base); applying them to another
base is refused.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from difflab.accel.api import apply_accel
from difflab.data.suites import expand_suite
from difflab.data.world import ObjectSpec, PromptSpec
from difflab.demo import DEMO_SAMPLING
from difflab.eval.provenance import provenance
from difflab.eval.shapeeval import evaluate
from difflab.eval.stats import wilson_interval
from difflab.io import write_json
from difflab.runtime import load, quantize_pipeline, read_manifest
from difflab.runtime.machine import resolve_precision, run_record
from difflab.tune.adapters import apply_adapters, base_reference, join_adapters

sys.path.insert(0, str(Path(__file__).parent))
from tune_concepts import concept_specs  # noqa: E402

# The base is a UNet: DeepCache and Faster Diffusion's encoder propagation (TeaCache and the
# other block caches are for transformers).
ACCEL = {"deepcache": ("deepcache", {"interval": 3}),
         "encoder_propagation": ("encoder_propagation", {"interval": 2})}
QUANT = ("w8a8_real", "w4a4_svd", "w4a4_svd+joined")


def score(pipe, specs, seeds, accel=None) -> dict:
    ctx = apply_accel(pipe.net, *ACCEL[accel]) if accel else contextlib.nullcontext()
    with ctx:
        images = pipe.generate([s.text for s in specs], seeds, DEMO_SAMPLING)
    flags = [int(v.passed) for v in evaluate(images, specs, vocabulary="extended").prompts]
    return {"accuracy": float(np.mean(flags)), "n": len(flags),
            "interval": list(wilson_interval(sum(flags), len(flags))), "passed": flags}


def pipeline(base, adapters, how="sum", quant=""):
    """The base with adapters merged then quantized, or (quant "R+joined") quantized by R then
    the LoRA adapters joined to its low-rank branches."""
    pipe = load(base)
    recipe, _, joined = quant.partition("+")
    if adapters and not joined:
        apply_adapters(pipe, [(a, 1.0) for a in adapters], how)
    if recipe:
        quantize_pipeline(pipe, recipe)
    if adapters and joined:
        join_adapters(pipe, [(a, 1.0) for a in adapters])
    return pipe


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", required=True, help="adapter of the shape concept (star)")
    ap.add_argument("--color", required=True, help="adapter of the colour concept (pink)")
    ap.add_argument("--base", default="shapes-base", help="the base both adapters were tuned on")
    ap.add_argument("--split", default="dev", choices=("dev", "test"))
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    shape = read_manifest(args.shape).config["tune"]["concept"]
    color = read_manifest(args.color).config["tune"]["concept"]
    both = PromptSpec(f"a {color} {shape}", "novel_both", (ObjectSpec(shape, color),), seed=8000)
    sets = {"both": expand_suite([both], 4 * args.seeds, split=args.split),
            shape: expand_suite(concept_specs(shape), args.seeds, split=args.split),
            color: expand_suite(concept_specs(color), args.seeds, split=args.split)}
    rows = {}
    variants = {"base": [], f"{shape} only": [args.shape], f"{color} only": [args.color],
                "sum": [args.shape, args.color], "ties": [args.shape, args.color]}
    for name, adapters in variants.items():
        pipe = pipeline(args.base, adapters, "ties" if name == "ties" else "sum")
        rows[name] = {k: score(pipe, *v) for k, v in sets.items()}
        print(name, {k: round(v["accuracy"], 3) for k, v in rows[name].items()}, flush=True)
    kept = {}
    for method in [*ACCEL, *QUANT]:
        accel = method if method in ACCEL else None
        quant = method if method in QUANT else ""
        base = score(pipeline(args.base, [], quant=quant), *sets[shape], accel)
        tuned = score(pipeline(args.base, [args.shape], quant=quant), *sets[shape], accel)
        gain_plain = rows[f"{shape} only"][shape]["accuracy"] - rows["base"][shape]["accuracy"]
        gain = tuned["accuracy"] - base["accuracy"]
        kept[method] = {"base": base, "adapter": tuned, "gain": gain, "gain_plain": gain_plain,
                        "kept": gain / gain_plain if gain_plain else None,
                        "setting": ACCEL.get(method, (method, {}))}
        print(method, f"base {base['accuracy']:.3f} adapter {tuned['accuracy']:.3f} "
              f"kept {kept[method]['kept']}", flush=True)
    base = base_reference(args.base)
    write_json(args.out, {
        "provenance": provenance(args.split, base["path"], base["sha256"], vars(args),
                                 "python benchmarks/tune_compose.py " + " ".join(argv)),
        "command": "python benchmarks/tune_compose.py " + " ".join(argv),
        "base": base,
        "adapters": {"shape": args.shape, "color": args.color},
        "adapter_manifests": {k: read_manifest(v).files for k, v in
                              (("shape", args.shape), ("color", args.color))},
        "split": args.split, "sample_config": asdict(DEMO_SAMPLING),
        "evaluator_vocabulary": "extended", "composition": rows, "under_methods": kept,
        "machine": run_record(resolve_precision("auto", "cpu"), "cpu"),
        "load_average_at_end": os.getloadavg(),  # other jobs on the machine inflate times
        "date": time.strftime("%Y-%m-%dT%H:%M:%S")})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
