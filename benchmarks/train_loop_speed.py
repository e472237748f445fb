"""Where a training step's time goes, and which speed-ups pay, at the precision this machine uses.

Builds the model and data of a training config (configs/demo.toml by default) and times, round
robin over the same fixed batches (so load drift on a shared machine hits every variant alike):
  eager         the trainer's step: forward, loss, backward, clip, AdamW (foreach), EMA
  fused_adamw   the same with AdamW(fused=True)
  channels_last the same with the network and its input in channels_last memory format
  compiled      the same with the forward+loss under torch.compile (inductor)
and, separately, the parts of the loop outside the model's step: rendering a batch of scenes,
encoding a batch of new captions with the text encoder, and the EMA update. Writes a JSON
result file with the machine record (CPU, capability, threads, precision, torch, date).

    .venv/bin/python benchmarks/train_loop_speed.py [--rounds 8] [--warmup 2]
        [--variants eager,fused_adamw,channels_last,compiled] [--precision auto]
        [--out benchmarks/results/precision/train_loop.json]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

import numpy as np
import torch

from difflab.eval.cost import time_interleaved
from difflab.eval.provenance import provenance
from difflab.io import write_json
from difflab.runtime.machine import configure_threads, resolve_precision, run_record
from difflab.text.cache import EmbeddingCache
from difflab.train.config import load_train_config
from difflab.train.parts import build_parts

ROOT = Path(__file__).resolve().parents[1]


def fixed_batches(parts, cfg, n: int) -> list[dict]:
    """n training batches (images, sigma, noise, conditioning), rendered and encoded once."""
    text = EmbeddingCache(parts.text_encoder)
    b = cfg.schedule.batch_size
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(n):
        items = [parts.dataset[i * b + j] for j in range(b)]
        x0 = torch.stack([it["image"] for it in items])
        out.append({"x0": x0, "sigma": parts.process.sample_sigma(b, generator=g),
                    "noise": torch.randn(x0.shape, generator=g),
                    "cond": text.encode([it["caption"] for it in items],
                                        torch.device("cpu")).network_kwargs()})
    return out


def make_step(cfg, parts, batches, dtype, *, fused=False, channels_last=False, compiled=False):
    """A trainer-equivalent step closure cycling through `batches`."""
    torch.manual_seed(cfg.run.seed)
    from difflab.models import build_model

    net = build_model(cfg.model.preset, **cfg.model.overrides)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    net = net.to(memory_format=fmt)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.optim.lr, fused=fused or None,
                            foreach=None if fused else True)
    ema = {k: v.detach().clone() for k, v in net.state_dict().items()}
    process = parts.process

    def loss_fn(x0, sigma, noise, cond):
        x_in, t = process.net_input(x0, noise, sigma)
        target = process.target(x0, noise, sigma)
        ctx = torch.autocast("cpu", dtype=dtype) if dtype else contextlib.nullcontext()
        with ctx:
            out = net(x_in.contiguous(memory_format=fmt), t, **cond)
        err = (out.float() - target.float()).pow(2).flatten(1).mean(1)
        return (process.loss_weight(sigma).float() * err).mean()

    fn = torch.compile(loss_fn) if compiled else loss_fn
    state = {"i": 0}

    def step():
        bt = batches[state["i"] % len(batches)]
        state["i"] += 1
        loss = fn(bt["x0"], bt["sigma"], bt["noise"], bt["cond"])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.optim.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            for k, v in net.state_dict().items():
                ema[k].lerp_(v, 0.01)

    return step, net, ema


def outside_parts(parts, cfg, rounds: int) -> dict[str, dict]:
    """Seconds per step of the loop's work outside the model step, median over rounds."""
    b = cfg.schedule.batch_size
    step, net, ema = make_step(cfg, parts, fixed_batches(parts, cfg, 1), None)
    offset = {"i": 10_000}

    def render():
        offset["i"] += b
        return [parts.dataset[offset["i"] + j] for j in range(b)]

    def encode():  # a batch of captions no cache has seen (the worst case: all new)
        offset["i"] += b
        caps = [parts.dataset[offset["i"] + j]["caption"] + f" {offset['i']}" for j in range(b)]
        with torch.no_grad():
            parts.text_encoder.encode(caps)

    def ema_update():
        with torch.no_grad():
            for k, v in net.state_dict().items():
                ema[k].lerp_(v, 0.01)

    timings = time_interleaved({"render": render, "encode_new_captions": encode,
                                "ema": ema_update}, repeats=rounds, warmup=1)
    return {k: t.to_dict() for k, t in timings.items()}


def caption_reuse(parts, cfg, steps: int) -> float:
    """Fraction of the first `steps` batches' captions that a per-run cache has already seen."""
    from difflab.train.schedule import batch_indices

    seen, new, total = set(), 0, 0
    for s in range(steps):
        for i in batch_indices(cfg.run.seed, s, cfg.schedule.batch_size, len(parts.dataset)):
            c = parts.dataset[int(i)]["caption"]
            new += c not in seen
            seen.add(c)
            total += 1
    return 1 - new / total


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--config", default=str(ROOT / "configs" / "demo.toml"))
    p.add_argument("--override", action="append", default=[])
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--precision", default="auto")
    p.add_argument("--variants", default="eager,fused_adamw,channels_last,compiled")
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/precision/train_loop.json"))
    args = p.parse_args()
    configure_threads()
    cfg = load_train_config(args.config, args.override)
    prec = resolve_precision(args.precision)
    parts = build_parts(cfg)
    batches = fixed_batches(parts, cfg, 4)
    options = {"eager": {}, "fused_adamw": {"fused": True},
               "channels_last": {"channels_last": True}, "compiled": {"compiled": True}}
    names = args.variants.split(",")
    steps = {n: make_step(cfg, parts, batches, prec.autocast_dtype, **options[n])[0]
             for n in names}
    t0 = time.perf_counter()
    timings = time_interleaved(steps, repeats=args.rounds, warmup=args.warmup)
    base = timings[names[0]]
    rows = {}
    for n, t in timings.items():
        ratio = np.asarray(base.times) / np.asarray(t.times)
        rows[n] = {"timing": t.to_dict(), "steps_per_s": 1 / t.median,
                   "speedup_vs_" + names[0]: float(base.median / t.median),
                   "speedup_rounds_q1_q3": [float(np.percentile(ratio, 25)),
                                            float(np.percentile(ratio, 75))]}
    outside = outside_parts(parts, cfg, args.rounds)
    reuse = caption_reuse(parts, cfg, min(cfg.schedule.steps, 300))
    command = " ".join([Path(sys.executable).name, *sys.argv])
    result = {"provenance": provenance("none", config=vars(args), command=command),
              "command": command,
              "config": args.config, "overrides": args.override,
              "batch_size": cfg.schedule.batch_size, "model": cfg.model.preset,
              "machine": run_record(prec), "step_variants": rows, "outside_step": outside,
              "caption_cache_hit_rate_first_300_steps": reuse,
              "seconds": time.perf_counter() - t0}
    write_json(args.out, result)
    print(f"{prec.name}, {torch.get_num_threads()} threads, batch {cfg.schedule.batch_size}, "
          f"median of {args.rounds} interleaved rounds [q1, q3]")
    for n, r in rows.items():
        t = r["timing"]
        print(f"  {n:14s} {t['median']:.3f} s/step [{t['q1']:.3f}, {t['q3']:.3f}]  "
              f"x{r['speedup_vs_' + names[0]]:.2f}")
    for n, t in outside.items():
        print(f"  {n:20s} {t['median']:.3f} s [{t['q1']:.3f}, {t['q3']:.3f}]")
    print(f"  caption cache hit rate over the first 300 steps: {reuse:.1%}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
