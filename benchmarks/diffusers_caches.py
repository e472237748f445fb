"""difflab's caches on small diffusers models (PixArt, SD3, SD-1.x-form UNet) with random
weights: speed-up over the uncached sampler, measured round-robin in one process, and PSNR
against the uncached output from the same noise. Random weights are not a trained model, so the
PSNR says how far each cache moves the sample, not how good the images are.

    PYTHONPATH=src python benchmarks/diffusers_caches.py [--steps 20] [--repeats 5] [--threads N]

Writes benchmarks/results/interop/caches.json (with command, code version, machine and date).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import DDIMScheduler, FlowMatchEulerDiscreteScheduler

from difflab.accel import apply_accel
from difflab.core.samplers import initial_noise, sample_euler
from difflab.core.schedules import get_sigmas_flow
from difflab.eval.metrics import psnr
from difflab.eval.provenance import provenance
from difflab.eval.stats import format_speedup, speedup_interval
from difflab.interop import diffusers_denoiser, tiny_pixart, tiny_sd3, tiny_unet, vp_sigmas
from difflab.io import write_json
from difflab.runtime.machine import configure_threads

OUT = Path(__file__).parent / "results" / "interop" / "caches.json"
SIZE = 32  # latent side: 256 tokens at patch 2
TRANSFORMER = {"sample_size": SIZE, "num_layers": 8, "num_attention_heads": 4,
               "attention_head_dim": 16}
MODELS = {
    "pixart": (lambda: tiny_pixart(0, **TRANSFORMER, cross_attention_dim=64),
               DDIMScheduler(beta_schedule="scaled_linear")),
    "sd3": (lambda: tiny_sd3(0, **TRANSFORMER, caption_projection_dim=64,
                             pos_embed_max_size=SIZE),
            FlowMatchEulerDiscreteScheduler()),
    "unet": (lambda: tiny_unet(0, sample_size=SIZE, block_out_channels=(32, 64),
                               layers_per_block=2, norm_num_groups=8, attention_head_dim=8),
             DDIMScheduler(beta_schedule="scaled_linear")),
}
TRANSFORMER_CACHES = [("block_cache", {"interval": 2}), ("block_cache", {"interval": 3}),
                      ("teacache", {"threshold": 0.2}), ("first_block_cache", {"threshold": 0.1})]
CASES = {"pixart": TRANSFORMER_CACHES, "sd3": TRANSFORMER_CACHES,
         "unet": [("deepcache", {"interval": 3}), ("encoder_propagation", {"interval": 3})]}


def _sigmas(scheduler, steps: int) -> torch.Tensor:
    if isinstance(scheduler, FlowMatchEulerDiscreteScheduler):
        return get_sigmas_flow(steps)
    return vp_sigmas(scheduler, steps, "trailing")


@torch.no_grad()
def measure(kind: str, steps: int, repeats: int, batch: int) -> dict:
    build, scheduler = MODELS[kind]
    net = build()
    model = diffusers_denoiser(net, scheduler)
    sigmas = _sigmas(scheduler, steps)
    x = initial_noise((4, SIZE, SIZE), list(range(batch))) * sigmas[0]
    g = torch.Generator().manual_seed(0)
    extra = {"context": torch.randn(batch, 8, 16, generator=g),
             "pooled": torch.randn(batch, 8, generator=g)}
    todo = [("none", {}), *CASES[kind]]
    times: list[list[float]] = [[] for _ in todo]
    outputs, stats = {}, {}
    for r in range(repeats + 1):  # round 0 warms up and keeps the outputs
        for i, (name, opts) in enumerate(todo):
            t0 = time.perf_counter()
            if name == "none":
                out = sample_euler(model, x, sigmas, extra_args=extra)
            else:
                with apply_accel(net, name, opts) as handle:
                    out = sample_euler(model, x, sigmas, extra_args=extra)
                stats[i] = dict(handle.stats)
            if r:
                times[i].append(time.perf_counter() - t0)
            else:
                outputs[i] = out.numpy()
    ref = outputs[0]
    span = float(ref.max() - ref.min())
    rows = []
    for i, (name, opts) in enumerate(todo[1:], start=1):
        rows.append({"method": name, "options": opts, "calls": stats[i], "times": times[i],
                     "psnr_db": float(np.mean(psnr(outputs[i], ref, data_range=span)))})
    return {"parameters": sum(p.numel() for p in net.parameters()), "baseline_times": times[0],
            "results": rows}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--threads", type=int, default=None, help="default: the available cores")
    args = ap.parse_args()
    configure_threads(args.threads)
    models = {kind: measure(kind, args.steps, args.repeats, args.batch) for kind in MODELS}
    record = {**provenance("none (random weights, no prompts)",
                           config={**vars(args), "latent": [4, SIZE, SIZE],
                                   "sampler": "euler", "weights": "random (seeded)"}),
              "load_average_1min": os.getloadavg()[0], "models": models}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    write_json(OUT, record)
    for kind, m in models.items():
        print(f"{kind}: {m['parameters']:,} parameters, uncached "
              f"{statistics.median(m['baseline_times']):.3f} s")
        for row in m["results"]:
            speed = format_speedup(speedup_interval(row["times"], m["baseline_times"]))
            print(f"  {row['method']:18s} {str(row['options']):20s} {speed:26s} "
                  f"PSNR {row['psnr_db']:.1f} dB  {row['calls']}")


if __name__ == "__main__":
    main()
