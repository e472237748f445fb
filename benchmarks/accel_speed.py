"""Wall-clock ratio of each acceleration hook to the uncached sampler, measured round-robin in one
process on randomly perturbed pixart-s / unet-s models (speed only; quality is the bench's job).

    .venv/bin/python benchmarks/accel_speed.py [--steps 20] [--repeats 5]

Numbers from a loaded machine mean little: re-run on a quiet one before quoting them.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from difflab.accel import apply_accel
from difflab.accel.bottleneck import BottleneckConfig, sample_bottleneck
from difflab.core.guidance import cfg
from difflab.core.processes import FlowProcess
from difflab.core.samplers import BatchNoise, initial_noise, sample_euler
from difflab.models import build_model

CASES = {
    "pixart-s": [("block_cache", {"interval": 2}), ("block_cache", {"interval": 3}),
                 ("teacache", {"threshold": 0.2}), ("first_block_cache", {"threshold": 0.1}),
                 ("ras", {"ratio": 0.5}), ("bottleneck", {})],
    "unet-s": [("deepcache", {"interval": 3}), ("encoder_propagation", {"interval": 3})],
}


def run(net: torch.nn.Module, model, x: torch.Tensor, sigmas: torch.Tensor, ctx: torch.Tensor,
        name: str, opts: dict) -> None:
    """One sampling run of `name` ("none": uncached; "bottleneck": the sampler wrapper)."""
    extra = {"context": ctx}
    with torch.no_grad():
        if name == "bottleneck":
            sample_bottleneck(sample_euler, model, x, sigmas, BottleneckConfig(), extra_args=extra,
                              noise=BatchNoise(range(x.shape[0])))
        elif name == "none":
            sample_euler(model, x, sigmas, extra_args=extra)
        else:
            with apply_accel(net, name, opts):
                sample_euler(model, x, sigmas, extra_args=extra)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args()
    torch.manual_seed(0)
    for preset, cases in CASES.items():
        net = build_model(preset).eval()
        for p in net.parameters():  # a fresh model outputs exactly zero: perturb it
            p.data.add_(torch.randn_like(p) * 0.02)
        ctx = torch.randn(args.batch, 8, 384)
        model = cfg(FlowProcess().denoiser(net), 3.0, {"context": torch.zeros_like(ctx)})
        x = initial_noise((3, 32, 32), list(range(args.batch)))
        sigmas = torch.linspace(1, 0, args.steps + 1)

        todo = [("none", {}), *cases]
        times: dict[int, list[float]] = {i: [] for i in range(len(todo))}
        for r in range(args.repeats + 1):  # round 0 warms up
            for i, (name, opts) in enumerate(todo):
                t0 = time.perf_counter()
                run(net, model, x, sigmas, ctx, name, opts)
                if r:
                    times[i].append(time.perf_counter() - t0)
        base = statistics.median(times[0])
        print(f"{preset}: uncached {base:.3f} s per batch of {args.batch}, {args.steps} steps")
        for i, (name, opts) in enumerate(todo[1:], start=1):
            ratio = base / statistics.median(times[i])
            print(f"  {name:20s} {str(opts):24s} speed-up x{ratio:.2f}")


if __name__ == "__main__":
    main()
