"""fp32 against bf16 autocast on this machine: the demo model's training step and its sampling,
side by side in one process, interleaved round by round, with the machine record.

On a CPU without native bf16 (AVX2 only) bf16 runs through a slow fallback: this is the
measurement behind `precision = "auto"`.

    .venv/bin/python benchmarks/precision_speed.py [--rounds 5] [--train-batch 0] [--sample-batch 8]
        [--sample-steps 10] [--out benchmarks/results/precision/precision_speed.json]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

import numpy as np
import torch
from train_loop_speed import fixed_batches, make_step

from difflab.core.samplers import initial_noise, sample_euler
from difflab.eval.cost import time_interleaved
from difflab.eval.provenance import provenance
from difflab.io import write_json
from difflab.runtime.machine import configure_threads, resolve_precision, run_record
from difflab.train.config import load_train_config
from difflab.train.parts import build_parts

ROOT = Path(__file__).resolve().parents[1]


def make_sampling(net, process, cond, batch: int, steps: int, dtype):
    """Euler sampling of `batch` images in `steps` steps under autocast to `dtype` (or fp32)."""
    sigmas = process.default_schedule(steps)
    x = initial_noise((3, net.config.input_size, net.config.input_size), range(batch))
    cond = {k: v[:batch] for k, v in cond.items()}

    @torch.no_grad()
    def run():
        ctx = torch.autocast("cpu", dtype=dtype) if dtype else contextlib.nullcontext()
        with ctx:
            return sample_euler(process.denoiser(net), x * sigmas[0], sigmas, extra_args=cond)

    return run


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--config", default=str(ROOT / "configs" / "demo.toml"))
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--train-batch", type=int, default=0, help="0: the config's batch size")
    p.add_argument("--sample-batch", type=int, default=8)
    p.add_argument("--sample-steps", type=int, default=10)
    p.add_argument("--out",
                   default=str(ROOT / "benchmarks/results/precision/precision_speed.json"))
    args = p.parse_args()
    configure_threads()
    over = [f"schedule.batch_size={args.train_batch}"] if args.train_batch else []
    cfg = load_train_config(args.config, over)
    parts = build_parts(cfg)
    batches = fixed_batches(parts, cfg, 2)
    fns = {}
    for name in ("fp32", "bf16"):
        dtype = resolve_precision(name).autocast_dtype
        step, net, _ = make_step(cfg, parts, batches, dtype)
        fns[f"train_step_{name}"] = step
        fns[f"sample_{name}"] = make_sampling(net, parts.process, batches[0]["cond"],
                                              args.sample_batch, args.sample_steps, dtype)
    t0 = time.perf_counter()
    timings = time_interleaved(fns, repeats=args.rounds, warmup=1)
    rows = {k: t.to_dict() for k, t in timings.items()}
    ratios = {}
    for kind in ("train_step", "sample"):
        r = np.asarray(timings[f"{kind}_bf16"].times) / np.asarray(timings[f"{kind}_fp32"].times)
        ratios[f"{kind}_bf16_over_fp32"] = {"median": float(np.median(r)),
                                           "q1": float(np.percentile(r, 25)),
                                           "q3": float(np.percentile(r, 75))}
    command = " ".join([Path(sys.executable).name, *sys.argv])
    result = {"provenance": provenance("none", config=vars(args), command=command),
              "command": command,
              "config": args.config, "model": cfg.model.preset,
              "train_batch": cfg.schedule.batch_size, "sample_batch": args.sample_batch,
              "sample_steps": args.sample_steps, "machine": run_record(),
              "timings": rows, "time_ratios": ratios, "seconds": time.perf_counter() - t0}
    write_json(args.out, result)
    m = result["machine"]
    print(f"{m['cpu']} ({m['capability']}), {m['threads']} threads, torch {m['torch']}; "
          f"median of {args.rounds} interleaved rounds [q1, q3]")
    for k, t in rows.items():
        print(f"  {k:18s} {t['median']:8.3f} s [{t['q1']:.3f}, {t['q3']:.3f}]")
    for k, r in ratios.items():
        print(f"  {k}: {r['median']:.1f}x [{r['q1']:.1f}, {r['q3']:.1f}]")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
