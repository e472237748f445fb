"""Invert the edit suite's source scenes with each inversion method and decode them back under
guidance: reconstruction PSNR against the image, and the time each inversion takes.

    python benchmarks/edit_inversion.py --split test --count 48 --cfg 3 \
        --method ddim --method "ddim:fixed_point_iters=3" --method "negative-prompt" \
        --method "null-text:lr=0.1" --out benchmarks/results/edit/inversion.json

A method is NAME[:key=value,...] with the inversion's options (`difflab.edit.inversion`);
`steps` sets its DDIM steps (default --steps).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

from difflab.accel.api import parse_options
from difflab.data.grid import to_uint8
from difflab.edit.inversion import invert, reconstruct
from difflab.edit.suite import edit_suite, source_images
from difflab.eval.metrics import psnr
from difflab.eval.provenance import provenance
from difflab.eval.stats import median_interval
from difflab.io import write_json
from difflab.runtime import load
from difflab.runtime.artefacts import resolve, sha256_file


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="shapes-base")
    ap.add_argument("--split", default="dev", choices=("dev", "test"))
    ap.add_argument("--count", type=int, default=16)
    ap.add_argument("--cfg", type=float, default=3.0)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--method", action="append", required=True)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--grid", default="", help="optional PNG: each image and its "
                    "reconstructions, first --grid-images images")
    ap.add_argument("--grid-images", type=int, default=8)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    pipe = load(args.base)
    cases = edit_suite(args.split, args.count)
    truth = source_images(cases)
    x = torch.from_numpy(truth).permute(0, 3, 1, 2).float() / 127.5 - 1
    model = pipe.process.denoiser(pipe.net)
    results, shown = [], [truth[:args.grid_images]]
    for spec in args.method:
        name, _, rest = spec.partition(":")
        options = parse_options(rest) if rest.strip() else {}
        steps = int(options.pop("steps", args.steps))
        sigmas = pipe.process.default_schedule(steps).float()
        outs, seconds = [], 0.0
        for j in range(0, len(x), args.batch):
            xb = x[j:j + args.batch]
            prompts = [c.source_prompt for c in cases[j:j + args.batch]]
            cond = pipe.condition(prompts)
            null = pipe.conditioner.null("", len(prompts), pipe.device)
            start = time.perf_counter()
            inversion = invert(name.strip(), model, xb, sigmas, cond, args.cfg, null, **options)
            seconds += time.perf_counter() - start
            with torch.no_grad():
                outs.append(to_uint8(reconstruct(model, inversion)))
        p = np.minimum(psnr(np.concatenate(outs), truth), 100.0)  # 100: identical
        shown.append(np.concatenate(outs)[:args.grid_images])
        med = median_interval(p)
        results.append({"method": name.strip(), "spec": spec, "steps": steps,
                        "options": options, "psnr": p.round(3).tolist(),
                        "psnr_mean": float(p.mean()), "psnr_median": med.median,
                        "psnr_median_interval": [med.lo, med.hi], "psnr_min": float(p.min()),
                        "at_least_35db": int((p >= 35).sum()),
                        "seconds_per_image": round(seconds / len(x), 4),
                        "load_average_1min": round(os.getloadavg()[0], 2)})
        print(f"{spec:<36} mean {p.mean():6.2f} dB  median {med.median:6.2f} "
              f"[{med.lo:.2f}, {med.hi:.2f}]  min {p.min():6.2f}  >=35 dB "
              f"{(p >= 35).sum()}/{len(p)}  {seconds / len(x):.2f} s/image", flush=True)
    weights = resolve(args.base) / "model.safetensors"
    write_json(args.out, {
        **provenance(args.split, args.base, sha256_file(weights) if weights.is_file() else "",
                     config={"count": args.count, "cfg": args.cfg, "steps": args.steps,
                             "batch": args.batch, "threads": args.threads},
                     command="python benchmarks/edit_inversion.py " + " ".join(argv)),
        "results": results,
        "load_average_at_end": os.getloadavg(),
    })
    if args.grid:
        from difflab.data.grid import make_grid

        labels = [lab for lab in ["image", *args.method] for _ in range(len(shown[0]))]
        make_grid(np.concatenate(shown), labels=labels, ncol=len(shown[0])).save(args.grid)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
