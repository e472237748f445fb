"""Inverse problems on the shipped base: DDNM and DPS against a classical baseline.

Ground truth is rendered by the shapes world (test split of the `all` suite); each problem's
measurement y = A x + sigma_y n is restored by each method, conditioned on the scene's caption,
and scored by PSNR and SSIM against the render. Baselines: bicubic upsampling of y (SR), the
pseudo-inverse = zero-fill (inpainting, compressed sensing), the blurred y itself (deblur).
Writes one JSON result file with provenance and a before/after grid per problem.

    python benchmarks/edit_restore.py --images 24 --steps 10 \
        --out benchmarks/results/edit/restore.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from difflab.data.grid import make_grid, to_uint8
from difflab.data.shapes import render_specs
from difflab.data.suites import expand_suite, load_suite
from difflab.edit.operators import SuperResolution, make_operator
from difflab.edit.restore import RestoreConfig, restore, to_tensor
from difflab.eval.metrics import psnr, ssim
from difflab.eval.provenance import provenance
from difflab.io import atomic_write, write_json
from difflab.runtime import load
from difflab.runtime.artefacts import resolve, sha256_file

PROBLEMS = ("sr4", "inpaint", "deblur", "cs:0.25")
NOISES = (0.0, 0.05)
GRID_IMAGES = 6


def baseline(op, y: torch.Tensor) -> torch.Tensor:
    """The classical answer: bicubic for SR, the blurred input for deblur, else A_pinv y."""
    if isinstance(op, SuperResolution):
        return F.interpolate(y, scale_factor=op.factor, mode="bicubic", align_corners=False)
    if op.name == "deblur":
        return y
    return op.A_pinv(y)


def scores(images: np.ndarray, truth: np.ndarray) -> dict:
    p, s = psnr(images, truth), ssim(images, truth)
    return {"psnr": float(p.mean()), "ssim": float(s.mean()),
            "psnr_per_image": [round(float(v), 3) for v in p]}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="shapes-base")
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--step-size", type=float, default=8.0, help="DPS zeta")
    ap.add_argument("--split", default="test")
    ap.add_argument("--out", default="benchmarks/results/edit/restore.json")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    pipe = load(args.base)
    specs, seeds = expand_suite(load_suite("all"), 1, split=args.split)
    specs, seeds = specs[:args.images], seeds[:args.images]
    prompts = [s.text for s in specs]
    truth = render_specs(specs, seeds, pipe.image_shape[-1])  # (N, H, W, 3) uint8
    x = to_tensor(truth)
    rows, start = [], time.perf_counter()
    for problem in PROBLEMS:
        op = make_operator(problem, pipe.image_shape, seed=0)
        for sigma_y in NOISES:
            y = op.measure(x, sigma_y, seed=1)
            outputs = {"baseline": to_uint8(baseline(op, y))}
            seconds = {}
            for method in ("ddnm", "dps"):
                t0 = time.perf_counter()
                cfg = RestoreConfig(method, steps=args.steps, sigma_y=sigma_y,
                                    step_size=args.step_size)
                outputs[method] = to_uint8(restore(pipe, op, y, prompts, seeds, cfg))
                seconds[method] = time.perf_counter() - t0
            row = {"problem": problem, "sigma_y": sigma_y, "n": len(truth)}
            for name, images in outputs.items():
                row[name] = scores(images, truth)
                if name in seconds:
                    row[name]["seconds_per_image"] = seconds[name] / len(truth)
            rows.append(row)
            print(f"{problem:8s} sigma_y {sigma_y:.2f}: " + ", ".join(
                f"{k} {row[k]['psnr']:.2f} dB / {row[k]['ssim']:.3f}" for k in outputs),
                flush=True)
            k = min(GRID_IMAGES, len(truth))
            grid = make_grid(np.concatenate([truth[:k], *(v[:k] for v in outputs.values())]),
                             labels=None, ncol=k)
            name = f"restore-{problem.replace(':', '')}-{sigma_y:g}.png"
            atomic_write(Path(args.out).parent / name, lambda p, g=grid: g.save(p, "PNG"))
    weights = resolve(args.base) / "model.safetensors"
    config = {"problems": list(PROBLEMS), "noises": list(NOISES), "images": args.images,
              "steps": args.steps, "dps_step_size": args.step_size, "cfg": 1.0,
              "suite": "all", "grid_rows": "truth, baseline, ddnm, dps",
              "baselines": "bicubic (sr), blurred input (deblur), A_pinv zero-fill (else)"}
    result = {"provenance": provenance(args.split, args.base, sha256_file(weights)
                                       if weights.is_file() else "", config),
              "seconds": time.perf_counter() - start, "rows": rows}
    write_json(args.out, result)
    print(f"wrote {args.out} ({result['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
