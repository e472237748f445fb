"""Inverse problems on the edit suite's source scenes: each diffusion restorer beside the classical
baselines, PSNR and SSIM against the ground truth, at measurement noise 0 and sigma_y.

For every problem and noise level: measure each ground-truth scene (y = A x + sigma_y n, noise
seeded per image), restore it with every method, and score it; the diffusion methods' margin over
the best baseline is the mean paired PSNR difference with its 95% interval. Writes one JSON
result file with provenance.

    python benchmarks/edit_restore.py --split dev --count 16 --problems sr4,cs:0.25 \
        --method "ddnm:steps=20" --method "dps:steps=30,zeta=1" \
        --out benchmarks/results/edit/dev-restore.json

A method is NAME[:key=value,...]: `steps` and the restorer's options (eta, zeta, resample);
baselines run for each problem by themselves (`--baseline-options tv:weight=0.02`).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

import numpy as np
import torch

from difflab.accel.api import parse_options
from difflab.core.samplers import BatchNoise
from difflab.data.grid import to_uint8
from difflab.edit.operators import make_operator
from difflab.edit.restore import RESTORERS, restore
from difflab.edit.suite import edit_suite, source_images
from difflab.eval.metrics import psnr, ssim
from difflab.eval.provenance import provenance
from difflab.io import write_json
from difflab.runtime import load
from difflab.runtime.artefacts import resolve, sha256_file


def to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1


def parse_method(spec: str) -> tuple[str, int, dict]:
    name, _, rest = spec.partition(":")
    options = parse_options(rest) if rest.strip() else {}
    steps = int(options.pop("steps", 20))
    RESTORERS.get(name.strip())
    return name.strip(), steps, options


def paired(a: np.ndarray, b: np.ndarray) -> dict:
    """Mean of a - b with a normal 95% interval (n large enough for the CLT)."""
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    half = 1.96 * d.std(ddof=1) / math.sqrt(len(d)) if len(d) > 1 else float("nan")
    return {"mean": float(d.mean()), "lo": float(d.mean() - half), "hi": float(d.mean() + half)}


def run(pipe, truth: np.ndarray, problem: str, sigma_y: float, specs: list[str],
        baseline_options: dict, batch: int, seed: int) -> tuple[dict, dict]:
    x = to_tensor(truth)
    op = make_operator(problem, tuple(pipe.image_shape), seed)
    y = torch.cat([op.measure(x[i:i + 1], sigma_y, seed=seed + i) for i in range(len(x))])
    model = pipe.process.denoiser(pipe.net)
    methods = {b: (b, 0, baseline_options.get(b, {})) for b in op.baselines}
    for spec in specs:
        name, steps, options = parse_method(spec)
        if name == "repaint" and not problem.startswith("inpaint"):
            continue
        methods[spec] = (name, steps, options)
    out, images = {}, {}
    for label, (name, steps, options) in methods.items():
        sigmas = pipe.process.default_schedule(max(steps, 1)).float()
        parts, start = [], time.perf_counter()
        for j in range(0, len(x), batch):
            yb = y[j:j + batch]
            with torch.no_grad():
                parts.append(restore(name, model, yb, op, sigmas,
                                     extra_args=pipe.condition([""] * len(yb)),
                                     noise=BatchNoise([seed + j + i for i in range(len(yb))]),
                                     sigma_y=sigma_y, **options))
        seconds = time.perf_counter() - start
        restored = to_uint8(torch.cat(parts))
        p, s = psnr(restored, truth), ssim(restored, truth)
        out[label] = {"method": name, "steps": steps, "options": options,
                      "baseline": name in op.baselines, "psnr": p.round(4).tolist(),
                      "ssim": s.round(5).tolist(), "psnr_mean": float(p.mean()),
                      "ssim_mean": float(s.mean()),
                      "seconds_per_image": round(seconds / len(x), 4)}
        images[label] = restored
    base = max((k for k, v in out.items() if v["baseline"]), key=lambda k: out[k]["psnr_mean"])
    for v in out.values():
        if not v["baseline"]:
            v["margin_psnr"] = paired(v["psnr"], out[base]["psnr"])
            v["margin_ssim"] = paired(v["ssim"], out[base]["ssim"])
    return {"operator": op.name, "sigma_y": sigma_y, "best_baseline": base,
            "methods": out}, images


def write_grid(path: str, pipe, grids: dict, count: int, seed: int) -> None:
    """Rows: for each problem, the truth, A⁺ y (what the measurement shows) and each method."""
    from difflab.data.grid import make_grid

    truth = grids["truth"][:count]
    rows, labels = [], []
    for problem, images in grids.items():
        if problem == "truth":
            continue
        op = make_operator(problem, tuple(pipe.image_shape), seed)
        seen = to_uint8(op.pinv(op.A(to_tensor(truth))))
        rows += [truth, seen, *(v[:count] for v in images.values())]
        labels += ["truth"] * len(truth) + [f"{problem}: A⁺y"] * len(truth)
        labels += [f"{problem}: {k}" for k in images for _ in range(len(truth))]
    make_grid(np.concatenate(rows), labels=labels, ncol=len(truth) * 3, scale=3).save(path)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="shapes-base")
    ap.add_argument("--split", default="dev", choices=("dev", "test"))
    ap.add_argument("--count", type=int, default=16)
    ap.add_argument("--problems", default="inpaint:0.7,sr2,sr4,deblur:1.0,cs:0.25")
    ap.add_argument("--noise", default="0,0.05", help="measurement noise levels sigma_y")
    ap.add_argument("--method", action="append", default=[],
                    help="a diffusion method (repeatable); none: the baselines alone")
    ap.add_argument("--baseline-options", action="append", default=[],
                    help="NAME:k=v,... for a classical baseline (e.g. tv:weight=0.02)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--grid", default="", help="optional PNG: per problem (noise 0), the truth, "
                    "A⁺ y and every method on the first --grid-images images")
    ap.add_argument("--grid-images", type=int, default=4)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    pipe = load(args.base)
    truth = source_images(edit_suite(args.split, args.count))
    baseline_options = {}
    for item in args.baseline_options:
        name, _, rest = item.partition(":")
        baseline_options[name] = parse_options(rest)
    results, grids = [], {"truth": truth}
    for problem in args.problems.split(","):
        for sigma_y in (float(s) for s in args.noise.split(",")):
            res, images = run(pipe, truth, problem, sigma_y, args.method, baseline_options,
                              args.batch, args.seed)
            res["problem"] = problem
            results.append(res)
            if sigma_y == 0:
                grids[problem] = images
            cells = "  ".join(f"{k} {v['psnr_mean']:.2f} dB/{v['ssim_mean']:.3f}"
                              f" ({v['seconds_per_image']:.2f} s)"
                              for k, v in res["methods"].items())
            print(f"{problem:<12} sigma_y {sigma_y:<5} {cells}", flush=True)
    weights = resolve(args.base) / "model.safetensors"
    write_json(args.out, {
        **provenance(args.split, args.base, sha256_file(weights) if weights.is_file() else "",
                     config={"count": args.count, "prompt": "", "seed": args.seed,
                             "batch": args.batch, "threads": args.threads,
                             "baseline_options": baseline_options},
                     command="python benchmarks/edit_restore.py " + " ".join(argv)),
        "results": results,
        "load_average_at_end": os.getloadavg(),
    })
    if args.grid:
        write_grid(args.grid, pipe, grids, args.grid_images, args.seed)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
