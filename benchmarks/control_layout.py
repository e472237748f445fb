"""Layout control side by side with the plain base: accuracy, box/mask IoU and time per image.

Every method samples the same prompts with the same seeds (euler, fp32), batch by batch in
turn (so timings are interleaved on the same machine); accuracy is the shapes evaluator's
verdict (the relation included) with a Wilson interval, paired against the base by McNemar's
exact test; on the `layout` suite each requested object's box IoU and mask IoU are measured.

    python benchmarks/control_layout.py --suite layout --split dev --limit 16 \
        --method base --method box:scale=0.1 --out runs/control-dev.json
    python benchmarks/control_layout.py --suite layout --split test --method base \
        --method controlnet:dir=runs/controlnet --out benchmarks/results/control/layout-test.json
    python benchmarks/control_layout.py --base shapes-long --suite binding --split dev \
        --seeds 2 --method base --method structured:fraction=0.5 --out runs/binding-dev.json
    python benchmarks/control_layout.py --suite layout --split test --method base \
        --method t2i-adapter:dir=runs/t2i-adapter --method gligen:dir=runs/gligen \
        --reference benchmarks/results/control/layout-test.json \
        --out benchmarks/results/control/adapters-test.json

A trained adapter's row records its size (trainable parameters, share of the base) and training
time from its control folder's manifest. `empty=1` gives the adapter an empty layout (no boxes:
what the base's own suites are measured with). `--plan` gives the prompts of a suite without
boxes planned layouts (one box per object, side by side), so a layout adapter or box guidance
can place each object apart from the others. `--reference FILE` copies FILE's adapter rows
beside this run's when FILE's first row (the plain base, same prompts and seeds) reproduces this
run's first row image for image; otherwise it records that they differ and copies nothing.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from difflab.control.guidance import GuidanceConfig
from difflab.control.layout import PLANNERS, Layout, plan_layout
from difflab.control.sampling import generate_controlled
from difflab.control.structured import StructuredConfig, generate_structured
from difflab.control.train import METHODS, weights_name
from difflab.data.captions import noun
from difflab.data.grid import make_grid
from difflab.data.suites import check_split, load_layouts, load_suite, suite_seeds
from difflab.eval.provenance import provenance
from difflab.eval.shapeeval import score, score_layout
from difflab.eval.stats import mcnemar_exact, wilson_interval
from difflab.io import atomic_write, write_json
from difflab.runtime import SampleConfig, load
from difflab.runtime.machine import run_record


def suite_layouts(suite: str, planner: str = "") -> tuple[list, list[Layout]]:
    """(specs, layouts): the layout suite's boxes; for another suite, boxes planned from each
    prompt's parse by `planner` (`plan_layout`, seeded by the prompt's seed) or whole-image
    boxes."""
    if suite == "layout":
        lps = load_layouts()
        return [lp.spec for lp in lps], [Layout(lp.spec.text, lp.phrases, lp.boxes)
                                         for lp in lps]
    specs = load_suite(suite)
    if planner:
        return specs, [plan_layout(s, seed=s.seed, planner=planner) for s in specs]
    return specs, [Layout(s.text, tuple(noun(o.shape, o.color) for o in s.objects),
                          tuple((0.0, 0.0, 1.0, 1.0) for _ in s.objects)) for s in specs]


def parse_method(text: str) -> tuple[str, dict]:
    name, _, rest = text.partition(":")
    opts = dict(kv.split("=", 1) for kv in rest.split(",") if kv)
    return name, opts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="shapes-base")
    ap.add_argument("--suite", default="layout")
    ap.add_argument("--split", default="dev")
    ap.add_argument("--seeds", type=int, default=1, help="images per prompt")
    ap.add_argument("--limit", type=int, default=0, help="first N prompts only (0: all)")
    ap.add_argument("--plan", action="store_true", help="boxes planned from each prompt's "
                    "parse (difflab.control.layout.plan_layout) instead of whole-image boxes, "
                    "for suites other than layout")
    ap.add_argument("--planner", default="world", choices=PLANNERS, help="with --plan")
    ap.add_argument("--method", action="append", required=True,
                    help="base | box:scale=..,fraction=.. | attend-excite:.. | "
                    "structured:fraction=..,blocks=1+2 | "
                    "controlnet|controlnet-xs|t2i-adapter|gligen:dir=..[,grounding=TAU]")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--cfg", type=float, default=3.0)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--grid", default="", help="PNG of the first 8 prompts, boxes drawn")
    ap.add_argument("--reference", default="", help="an earlier result file of the same prompts "
                    "and seeds whose adapter rows to copy when its base row is reproduced")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    check_split(args.split, args.suite)
    pipe = load(args.base)
    if args.plan and args.suite == "layout":
        ap.error("--plan is for suites without boxes; the layout suite has its own")
    specs, layouts = suite_layouts(args.suite, args.planner if args.plan else "")
    if args.limit:
        specs, layouts = specs[: args.limit], layouts[: args.limit]
    rows = [(s, lay, seed) for k in range(args.seeds) for s, lay in zip(specs, layouts,
                                                                        strict=True)
            for seed in [suite_seeds(s, 1, k, args.split)[0]]]
    config = SampleConfig(steps=args.steps, cfg=args.cfg, precision="fp32",
                          batch_size=args.batch)
    methods = [parse_method(m) for m in args.method]
    runners = {}
    for text, (name, opts) in zip(args.method, methods, strict=True):
        runners[text] = _runner(pipe, name, opts, config)
    images = {m: [] for m in runners}
    seconds = {m: [] for m in runners}
    for i in range(0, len(rows), args.batch):
        chunk = rows[i: i + args.batch]
        for m, run in runners.items():  # interleaved: every method on this batch in turn
            t0 = time.perf_counter()
            images[m].append(run([r[1] for r in chunk], [r[2] for r in chunk]))
            seconds[m].append((time.perf_counter() - t0) / len(chunk))
        print(f"{i + len(chunk)}/{len(rows)} images per method", flush=True)
    results = {}
    base_flags = None
    for m in runners:
        imgs = np.concatenate(images[m])
        results[m] = _score(imgs, rows, args.suite == "layout")
        results[m]["seconds_per_image"] = float(np.median(seconds[m]))
        if base_flags is None:
            base_flags = results[m]["passed"]
        else:
            test = mcnemar_exact(base_flags, results[m]["passed"])
            results[m]["vs_first"] = {"p": test.p_value, "only_first": test.only_a,
                                      "only_this": test.only_b}
        if args.grid:
            _save_grid(imgs[:8], [r[1] for r in rows[:8]],
                       Path(args.grid).with_suffix(f".{_slug(m)}.png"))
    first = next(iter(results))
    for r in results.values():
        r["extra_seconds_per_image"] = r["seconds_per_image"] - results[first]["seconds_per_image"]
    for text, (name, opts) in zip(args.method, methods, strict=True):
        if name in METHODS:
            results[text]["adapter"] = _adapter_facts(opts["dir"], name)
    reference = _reference(args, results, len(rows)) if args.reference else None
    from difflab.runtime.artefacts import sha256_file
    from difflab.tune.adapters import base_reference

    controls = {o["dir"]: sha256_file(Path(o["dir"]) / weights_name(name))
                for name, o in methods if name in METHODS}
    out = {"base": args.base, "suite": args.suite, "n_images": len(rows),
           "layouts": "planned" if args.plan else "given" if args.suite == "layout" else "whole",
           "planner": args.planner if args.plan else None,
           "seeds_per_prompt": args.seeds,
           "control_weights_sha256": controls,
           "sampling": {"sampler": "euler", "steps": args.steps, "cfg": args.cfg,
                        "precision": "fp32"},
           "machine_note": "shared CPU (other jobs running); times are medians of per-batch "
                           "seconds per image, methods interleaved batch by batch",
           "methods": results,
           "reference": reference,
           "provenance": provenance(args.split, args.base, base_reference(args.base)["sha256"],
                                    config={"methods": args.method},
                                    machine=run_record())}
    write_json(args.out, out)
    for m, r in results.items():
        print(f"{m:40s} acc {r['accuracy']:.3f} {r['interval']} box {r.get('box_iou', 0):.3f} "
              f"mask {r.get('mask_iou', 0):.3f} s/img {r['seconds_per_image']:.3f}")
    if reference is not None:
        print(f"reference {args.reference}: base reproduced {reference['base_reproduced']}, "
              f"copied {reference['copied']}")


def _adapter_facts(folder: str, method: str) -> dict:
    """An adapter's trainable parameters, share of the base and training run, from its control
    folder's manifest (with its adapter config and, for GLIGEN, its gates' final openings)."""
    from difflab.runtime.artefacts import read_manifest

    m = read_manifest(folder)
    params, base = m.metrics["parameters"], m.metrics["base_parameters"]
    facts = {"method": method, "parameters": params, "base_parameters": base,
             "share_of_base": params / base, "train_seconds": m.metrics["seconds"],
             "steps_done": m.metrics["steps_done"], "train_config": m.config["train"],
             "config": m.config.get(method)}
    if "gates" in m.metrics:  # |tanh(gamma)| per gated layer at the end of training
        facts["gates"] = m.metrics["gates"]
    return facts


def _architecture_facts(method: str, base: str) -> dict:
    """A fresh adapter's trainable parameters and share of the base (its size does not depend
    on training); its training time is unknown here."""
    from difflab.control.controlnet import parameter_count
    from difflab.control.train import build_adapter

    pipe = load(base)
    params, total = parameter_count(build_adapter(method, pipe)), parameter_count(pipe.net)
    return {"method": method, "parameters": params, "base_parameters": total,
            "share_of_base": params / total, "train_seconds": None,
            "source": "a fresh adapter of the same architecture (the trained folder is gone)"}


def _kept_facts(method: str, args) -> dict:
    """A reference adapter's size and training time from the copy of its manifest kept beside
    the reference file (<method>-manifest.json), else its size from a fresh adapter of the same
    architecture (training time unknown)."""
    import json

    kept = Path(args.reference).parent / f"{method}-manifest.json"
    if kept.is_file():
        m = json.loads(kept.read_text())["metrics"]
        return {"method": method, "parameters": m["parameters"],
                "base_parameters": m["base_parameters"],
                "share_of_base": m["parameters"] / m["base_parameters"],
                "train_seconds": m["seconds"], "steps_done": m["steps_done"],
                "source": str(kept)}
    return _architecture_facts(method, args.base)


def _reference(args, results: dict, n_images: int) -> dict:
    """The reference file's adapter rows, copied into `results` when its first (plain base)
    row passes and fails exactly the images this run's first row does."""
    import json

    ref = json.loads(Path(args.reference).read_text())
    ref_first = next(iter(ref["methods"].values()))
    ours = next(iter(results.values()))
    same_setup = (ref["suite"] == args.suite and ref["n_images"] == n_images
                  and ref["provenance"]["split"] == args.split
                  and ref["sampling"]["steps"] == args.steps and ref["sampling"]["cfg"] == args.cfg)
    keys = ("passed", "box_iou", "mask_iou", "relation")
    reproduced = same_setup and all(ref_first.get(k) == ours.get(k) for k in keys)
    out = {"file": args.reference, "base_reproduced": reproduced,
           "checked": "suite, split, images, sampling and the base row's per-image verdicts, "
                      "relation, box IoU and mask IoU are equal",
           "copied": []}
    if reproduced:
        for name, row in list(ref["methods"].items())[1:]:
            if name.split(":")[0] in METHODS and name not in results:
                results[name] = dict(row) | {"from_reference": args.reference}
                test = mcnemar_exact(ours["passed"], row["passed"])
                results[name]["vs_first"] = {"p": test.p_value, "only_first": test.only_a,
                                             "only_this": test.only_b}
                results[name]["extra_seconds_per_image"] = None  # timed in another run
                if "adapter" not in row:  # its folder is gone: a kept copy of its manifest
                    results[name]["adapter"] = _kept_facts(name.split(":")[0], args)
                out["copied"].append(name)
    return out


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text).strip("-")


def _runner(pipe, name: str, opts: dict, config: SampleConfig):
    if name == "base":
        return lambda lays, seeds: generate_controlled(pipe, lays, seeds, config)
    if name in METHODS:
        from difflab.control.train import apply_control, load_control

        net = load_control(opts["dir"], pipe, name)
        empty = opts.get("empty", "0") == "1"
        tau = float(opts.get("grounding", 1.0))  # GLIGEN's scheduled sampling

        def run(lays, seeds):
            if empty:  # the prompt only: no boxes for the adapter to read
                lays = [lay.without_boxes() for lay in lays]
            with apply_control(pipe, net, tau) as handle:
                return generate_controlled(pipe, lays, seeds, config, control=handle)
        return run
    if name == "structured":  # blocks=1+2: indices into model.blocks, "+"-separated
        blocks = tuple(int(b) for b in opts.get("blocks", "").split("+") if b)
        structured = StructuredConfig(blocks=blocks, fraction=float(opts.get("fraction", 1.0)))
        return lambda lays, seeds: generate_structured(pipe, [lay.prompt for lay in lays],
                                                       seeds, config, structured)
    guidance = GuidanceConfig(method=name, scale=float(opts.get("scale", 0.5)),
                              fraction=float(opts.get("fraction", 0.5)),
                              iterations=int(opts.get("iterations", 1)))
    return lambda lays, seeds: generate_controlled(pipe, lays, seeds, config, guidance)


def _score(imgs: np.ndarray, rows: list, layout: bool) -> dict:
    flags, boxes, masks, rel = [], [], [], []
    for img, (spec, lay, _) in zip(imgs, rows, strict=True):
        verdict = score(img, spec)
        flags.append(bool(verdict.passed))
        if verdict.relation is not None:
            rel.append(bool(verdict.relation))
        if layout:
            objects = [(o.shape, o.color) for o in spec.objects]
            for p in score_layout(img, objects, lay.pixel_boxes(img.shape[0])):
                boxes.append(p.box_iou)
                masks.append(p.mask_iou)
    k, n = sum(flags), len(flags)
    out = {"accuracy": k / n, "n": n, "interval": list(wilson_interval(k, n)),
           "passed": flags, "relation": float(np.mean(rel)) if rel else None}
    if layout:
        out |= {"box_iou": float(np.mean(boxes)), "mask_iou": float(np.mean(masks)),
                "objects_box_iou_ge_0.5": float(np.mean(np.array(boxes) >= 0.5))}
    return out


def _save_grid(imgs: np.ndarray, layouts: list[Layout], path: Path) -> None:
    from difflab.control.layout import draw_boxes

    drawn = np.stack([draw_boxes(img, lay.pixel_boxes(img.shape[0]), scale=4)
                      for img, lay in zip(imgs, layouts, strict=True)])
    grid = make_grid(drawn, ncol=len(drawn))
    atomic_write(path, lambda p: grid.save(p, format="PNG"))


if __name__ == "__main__":
    main()
