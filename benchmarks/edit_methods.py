"""Edit the `edit` suite's scenes with each method and score every edit exactly.

For each method: edit every case it can express (SDEdit, DiffEdit and Prompt-to-Prompt take the
prompt pair, so only recolour and reshape cases; `object` regenerates the world's edit boxes under
the edited object's words, so every kind), then score with the shapes evaluator against the
target scene (a move must land in its new box) and PSNR against the source outside the edit box.
Writes one JSON result file with provenance.

    python benchmarks/edit_methods.py --split dev --count 32 \
        --method "p2p:tau=0.6" --method "object:strength=0.8,background=" \
        --out benchmarks/results/edit/dev-methods.json

A method is NAME[:key=value,...]; keys steps, cfg, inversion and inversion option names
(fixed_point_iters, inner_steps, lr) set the sampling, the rest are the method's options.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import asdict, fields

import numpy as np
import torch

from difflab.accel.api import parse_options
from difflab.data.grid import to_uint8
from difflab.edit.editing import EditConfig, run_edit
from difflab.edit.suite import EDIT_KINDS, edit_objects, edit_suite, score_edits, source_images
from difflab.eval.provenance import provenance
from difflab.eval.stats import wilson_interval
from difflab.io import write_json
from difflab.runtime import load
from difflab.runtime.artefacts import resolve, sha256_file

INVERSION_OPTIONS = ("fixed_point_iters", "inner_steps", "lr", "tolerance")


def parse_method(spec: str) -> tuple[str, str, EditConfig, dict, tuple[str, ...]]:
    """'NAME[@kind+kind][:k=v,...]' -> (label, method, EditConfig, method options, kinds)."""
    name, _, rest = spec.partition(":")
    name, _, kinds = name.partition("@")
    kinds = tuple(kinds.split("+")) if kinds else EDIT_KINDS
    options = parse_options(rest) if rest.strip() else {}
    config_keys = {f.name for f in fields(EditConfig)} - {"inversion_options"}
    config = {k: options.pop(k) for k in list(options) if k in config_keys}
    inv = {k: options.pop(k) for k in list(options) if k in INVERSION_OPTIONS}
    if inv or "inversion" in config:
        config["inversion_options"] = {"fixed_point_iters": 1, **inv}
    return spec, name.strip(), EditConfig(**config), options, kinds


def to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1


def edit_batch(pipe, name: str, config: EditConfig, options: dict, cases, x) -> torch.Tensor:
    if name == "object":  # the world's boxes, each regenerated under its own words
        return edit_objects(pipe, cases, config, **options)
    return run_edit(name, pipe, x, [c.source_prompt for c in cases],
                    [c.target_prompt for c in cases], config, **options)


def usable_cases(name: str, kinds: tuple[str, ...], cases) -> list[int]:
    """The cases a method runs on: its kinds, and for text methods the one-word swaps."""
    return [i for i, c in enumerate(cases)
            if c.kind in kinds and (name == "object" or c.one_word)]


def summarise(rows: list[dict], seconds: float) -> dict:
    out = {"n": len(rows), "seconds_per_edit": round(seconds / max(len(rows), 1), 3)}
    groups = {"all": rows, **{k: [r for r in rows if r["kind"] == k] for k in EDIT_KINDS}}
    for key, group in groups.items():
        if not group:
            continue
        n, ok, success = len(group), sum(r["ok"] for r in group), sum(r["success"] for r in group)
        out[key] = {"n": n, "success": success, "ok": ok,
                    "ok_interval": list(wilson_interval(ok, n)),
                    "success_interval": list(wilson_interval(success, n)),
                    "psnr_outside_median": float(np.median([r["psnr_outside"] for r in group])),
                    "psnr30": int(sum(r["psnr_outside"] >= 30 for r in group))}
    return out


def run_method(pipe, spec: str, cases, images: np.ndarray, batch: int) -> tuple[dict, np.ndarray]:
    label, name, config, options, kinds = parse_method(spec)
    usable = usable_cases(name, kinds, cases)
    outs, seconds = [], 0.0
    for j in range(0, len(usable), batch):
        idx = usable[j:j + batch]
        x = to_tensor(images[idx])
        start = time.perf_counter()
        edited = edit_batch(pipe, name, config, options, [cases[i] for i in idx], x)
        seconds += time.perf_counter() - start
        outs.append(to_uint8(edited))
    edited = np.concatenate(outs)
    rows = score_edits(edited, [cases[i] for i in usable])
    result = {"method": name, "spec": label, "config": asdict(config), "options": options,
              "summary": summarise(rows, seconds), "rows": rows,
              "load_average_1min": round(os.getloadavg()[0], 2)}
    return result, edited


def write_grid(path: str, cases, grids: dict, count: int) -> None:
    """One column per case (source, target, then each method's edit; blank where a method
    cannot express the case), labelled by row."""
    from difflab.data.grid import make_grid
    from difflab.data.shapes import render

    shown = cases[:count]
    rows, labels = [grids["source"][:count], np.stack([render(c.target) for c in shown])], []
    labels += [f"{c.kind}: {c.source_prompt}" for c in shown]
    labels += [f"target: {c.target_object or 'removed'}" for c in shown]
    for spec, edited in grids.items():
        if spec == "source":
            continue
        _, name, _, _, kinds = parse_method(spec)
        usable = usable_cases(name, kinds, cases)
        row = np.full_like(rows[0], 255)
        for j, i in enumerate(usable):
            if i < count:
                row[i] = edited[j]
        rows.append(row)
        labels += [spec if i in usable else f"{spec}: n/a" for i in range(len(shown))]
    grid = make_grid(np.concatenate(rows), labels=labels, ncol=len(shown), scale=4)
    grid.save(path)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="shapes-base")
    ap.add_argument("--split", default="dev", choices=("dev", "test"))
    ap.add_argument("--count", type=int, default=32, help="cases (kinds cycle)")
    ap.add_argument("--method", action="append", required=True)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a "
                    "shared 2-core machine)")
    ap.add_argument("--grid", default="", help="optional PNG: source, target and each "
                    "method's edit of the first --grid-cases cases")
    ap.add_argument("--grid-cases", type=int, default=8)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    pipe = load(args.base)
    cases = edit_suite(args.split, args.count)
    images = source_images(cases)
    results, grids = [], {"source": images}
    for spec in args.method:
        result, edited = run_method(pipe, spec, cases, images, args.batch)
        results.append(result)
        grids[spec] = edited
        s = result["summary"]
        line = "  ".join(f"{k} {s[k]['ok']}/{s[k]['n']} ok ({s[k]['success']} edited)"
                         for k in ("all", *EDIT_KINDS) if k in s)
        print(f"{spec:<40} {s['seconds_per_edit']:6.2f} s/edit  {line}", flush=True)
    weights = resolve(args.base) / "model.safetensors"
    write_json(args.out, {
        **provenance(args.split, args.base, sha256_file(weights) if weights.is_file() else "",
                     config={"count": args.count, "batch": args.batch,
                             "threads": args.threads},
                     command="python benchmarks/edit_methods.py " + " ".join(argv)),
        "cases": [{"index": c.index, "seed": c.seed, "kind": c.kind,
                   "source_prompt": c.source_prompt, "target_prompt": c.target_prompt}
                  for c in cases],
        "results": results,
        "load_average_at_end": os.getloadavg(),
    })
    if args.grid:
        write_grid(args.grid, cases, grids, args.grid_cases)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
