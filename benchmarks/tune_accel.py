"""How much of an adapter's accuracy gain survives each cache and quantization, and at what speed.

With `--suite NAME` the prompts are that suite's instead of the concept's: the adapter's change
there is what it makes the base forget, under each setting too.

For every `--accel NAME[:k=v,...]` setting: the base and the base with the adapter merged are
sampled under it on the adapter's concept prompts; for every `--quant RECIPE`, the base and
the base with the adapter merged are quantized by RECIPE (`RECIPE+joined`: the LoRA joined to
the low-rank branches of a base quantized without it, as SVDQuant runs LoRAs) and sampled.
The share of the gain kept is (adapter - base) under the setting / (adapter - base) plain.
Seconds per image are medians over batches, every setting timed in turn on the same batch
(interleaved). Choose settings on the dev split, then report the chosen ones on test:

    python benchmarks/tune_accel.py --base shapes-long \
        --adapter runs/tune-b16/star-lora-shapes-long-test --split dev --seeds 8 \
        --accel deepcache:interval=2 --accel deepcache:interval=3 \
        --out benchmarks/results/tune/star-long-accel-dev.json
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from difflab.accel.api import apply_accel, parse_accel_spec
from difflab.data.suites import expand_suite, load_suite
from difflab.demo import DEMO_SAMPLING
from difflab.eval.provenance import provenance
from difflab.eval.shapeeval import evaluate
from difflab.eval.stats import mcnemar_exact, wilson_interval
from difflab.io import write_json
from difflab.runtime import read_manifest
from difflab.runtime.machine import resolve_precision, run_record
from difflab.tune.adapters import base_reference

sys.path.insert(0, str(Path(__file__).parent))
from tune_compose import pipeline  # noqa: E402
from tune_concepts import concept_specs  # noqa: E402

BATCH = 16


def _score(images: np.ndarray, specs) -> dict:
    flags = [int(v.passed) for v in evaluate(images, specs, vocabulary="extended").prompts]
    return {"accuracy": float(np.mean(flags)), "n": len(flags),
            "interval": list(wilson_interval(sum(flags), len(flags))), "passed": flags}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--adapter", required=True, help="the adapter folder (tuned on --base)")
    ap.add_argument("--base", default="shapes-base")
    ap.add_argument("--split", default="dev", choices=("dev", "test"))
    ap.add_argument("--seeds", type=int, default=4, help="images per concept prompt")
    ap.add_argument("--accel", action="append", default=[], help="NAME[:k=v,...]")
    ap.add_argument("--quant", action="append", default=[],
                    help="RECIPE (merged, then quantized) or RECIPE+joined (quantized, then the "
                    "LoRA joined to its low-rank branches)")
    ap.add_argument("--suite", default="", help="score this prompt suite (e.g. single: what the "
                    "adapter may make the base forget) instead of the concept's prompts")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    concept = read_manifest(args.adapter).config["tune"]["concept"]
    prompts = load_suite(args.suite) if args.suite else concept_specs(concept)
    specs, seeds = expand_suite(prompts, args.seeds, split=args.split)
    # setting -> (quantization recipe or "", cache setting or None)
    settings = {"plain": ("", None), **{s: ("", parse_accel_spec(s)) for s in args.accel},
                **{q: (q, None) for q in args.quant}}
    pipes = {}
    for quant in dict.fromkeys(q for q, _ in settings.values()):
        pipes["base", quant] = pipes.get(("base", quant.partition("+")[0])) or pipeline(
            args.base, [], quant=quant)
        pipes["adapter", quant] = pipeline(args.base, [args.adapter], quant=quant)
    images = {(m, s): [] for m in ("base", "adapter") for s in settings}
    seconds = {k: [] for k in images}
    for i in range(0, len(specs), BATCH):
        texts, chunk = [s.text for s in specs[i: i + BATCH]], seeds[i: i + BATCH]
        for (m, s) in images:  # interleaved: every (model, setting) on this batch in turn
            quant, accel = settings[s]
            pipe = pipes[m, quant]
            ctx = apply_accel(pipe.net, *accel) if accel else contextlib.nullcontext()
            t0 = time.perf_counter()
            with ctx:
                images[m, s].append(pipe.generate(texts, chunk, DEMO_SAMPLING))
            seconds[m, s].append((time.perf_counter() - t0) / len(texts))
        print(f"{min(i + BATCH, len(specs))}/{len(specs)} prompts", flush=True)
    rows = {}
    for s in settings:
        base = _score(np.concatenate(images["base", s]), specs)
        tuned = _score(np.concatenate(images["adapter", s]), specs)
        quant, accel = settings[s]
        rows[s] = {"setting": {"quant": quant} if quant else accel, "base": base, "adapter": tuned,
                   "gain": tuned["accuracy"] - base["accuracy"],
                   "seconds_per_image": float(np.median(seconds["adapter", s])),
                   "seconds_spread": [float(np.min(seconds["adapter", s])),
                                      float(np.max(seconds["adapter", s]))]}
    plain = rows["plain"]
    for s, r in rows.items():
        r["kept"] = r["gain"] / plain["gain"] if plain["gain"] else None
        r["speedup"] = plain["seconds_per_image"] / r["seconds_per_image"]
        test = mcnemar_exact(plain["adapter"]["passed"], r["adapter"]["passed"])
        r["adapter_vs_plain"] = {"p": test.p_value, "only_plain": test.only_a,
                                 "only_this": test.only_b}
        print(f"{s:40s} base {r['base']['accuracy']:.3f} adapter {r['adapter']['accuracy']:.3f} "
              f"kept {r['kept']} {r['speedup']:.2f}x", flush=True)
    write_adapter_result("tune_accel.py", argv, args, concept, {
        "prompts": f"suite {args.suite}" if args.suite else f"the {concept} prompts",
        "n_images": len(specs), "evaluator_vocabulary": "extended", "settings": rows})
    return 0


def write_adapter_result(script: str, argv: list[str], args, concept: str, fields: dict) -> None:
    """Write `fields` to `args.out` with what every adapter result file records: provenance,
    command, base, adapter and its files, split, sampling, machine and date."""
    ref = base_reference(args.base)
    command = f"python benchmarks/{script} " + shlex.join(argv)
    write_json(args.out, {
        "provenance": provenance(args.split, ref["path"], ref["sha256"], vars(args), command),
        "command": command, "base": ref, "adapter": args.adapter,
        "adapter_files": read_manifest(args.adapter).files, "concept": concept,
        "split": args.split, "sample_config": asdict(DEMO_SAMPLING), **fields,
        "machine": run_record(resolve_precision("auto", "cpu"), "cpu"),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S")})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
