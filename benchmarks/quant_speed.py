"""Quantization speed, side by side in one process: fp32 / bf16 eager vs real int8 W8A8
(torch._int_mm; eager and torch.compile with freezing) vs simulated W8A8 (fake quantization).

    .venv/bin/python benchmarks/quant_speed.py --runs 5 --preset dit-s

Ratios are to bf16 eager measured in the same run (median of --runs timed calls after warm-up).
Simulated rows are labelled `simulated`: they measure the cost of emulation, not a speed-up.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from difflab.quant import compile_for_inference, model_bytes, quantize


class Block(nn.Module):
    """Pre-norm attention + MLP transformer block over (B, N, D) tokens."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.fc1, self.fc2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        B, N, D = h.shape
        q, k, v = self.qkv(self.norm1(h)).reshape(B, N, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        h = h + self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, N, D))
        return h + self.fc2(F.gelu(self.fc1(self.norm2(h))))


def small_transformer(dim: int, depth: int, tokens: int, batch: int):
    torch.manual_seed(0)
    model = nn.Sequential(*(Block(dim, 4) for _ in range(depth))).eval()
    x = torch.randn(batch, tokens, dim)
    return model, (lambda m: m(x.to(_dtype(m))))


def _dtype(m: nn.Module) -> torch.dtype:
    """The float dtype the model runs in (bf16 variants take bf16 inputs)."""
    return torch.bfloat16 if any(p.dtype == torch.bfloat16 for p in m.buffers()) or any(
        p.dtype == torch.bfloat16 for p in m.parameters()) else torch.float32


def dit_preset(name: str, batch: int):
    from difflab.models import build_model, model_config

    cfg = model_config(name)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    x = torch.randn(batch, cfg.in_channels, cfg.input_size, cfg.input_size)
    t = torch.full((batch,), 500.0)
    kw = {}
    if getattr(cfg, "num_classes", 0):
        kw["y"] = torch.zeros(batch, dtype=torch.long)
    if getattr(cfg, "context_dim", 0):
        kw["context"] = torch.randn(batch, 8, cfg.context_dim)
    if getattr(cfg, "pooled_dim", 0):
        kw["pooled"] = torch.randn(batch, cfg.pooled_dim)

    def call(m: nn.Module):
        dtype = _dtype(m)
        return m(x.to(dtype), t, **{k: v.to(dtype) if v.is_floating_point() else v
                                    for k, v in kw.items()})
    return model, call


def median_time(fn: Callable[[], object], runs: int, warmup: int = 2) -> float:
    with torch.no_grad():
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def variants(model: nn.Module, call, compile_int8: bool):
    """(name, label, model) for every configuration compared."""
    bf16 = copy.deepcopy(model).to(torch.bfloat16)
    int8 = copy.deepcopy(bf16)
    quantize(int8, "w8a8_real")
    sim = copy.deepcopy(bf16)
    quantize(sim, "w8a8")
    out = [("fp32 eager", "float", model), ("bf16 eager", "float", bf16),
           ("w8a8 int8 eager", "real", int8)]
    if compile_int8:
        with torch.no_grad():
            out.append(("w8a8 int8 compiled", "real", compile_for_inference(int8)))
    out.append(("w8a8 simulated eager", "simulated", sim))
    return out


def bench(title: str, model: nn.Module, call, runs: int, compile_int8: bool) -> None:
    print(f"\n## {title}  (torch {torch.__version__}, {torch.get_num_threads()} threads)")
    print(f"{'variant':24s} {'execution':10s} {'median ms':>10s} {'vs bf16':>8s} {'MB':>7s}")
    rows = []
    for name, label, m in variants(model, call, compile_int8):
        rows.append((name, label, median_time(lambda m=m: call(m), runs),
                     model_bytes(getattr(m, "_orig_mod", m)) / 2**20))
    base = next(r[2] for r in rows if r[0] == "bf16 eager")
    for name, label, sec, mb in rows:
        speed = f"{base / sec:7.2f}x" if label != "simulated" else "   (sim)"
        print(f"{name:24s} {label:10s} {sec * 1e3:10.2f} {speed:>8s} {mb:7.2f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--tokens", type=int, default=256)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--preset", default="dit-s", help="a difflab.models preset; '' to skip")
    p.add_argument("--no-compile", action="store_true")
    args = p.parse_args()
    if args.runs < 5:
        raise SystemExit(f"--runs={args.runs}: use at least 5 for a median")
    model, call = small_transformer(args.dim, args.depth, args.tokens, args.batch)
    bench(f"small transformer d{args.dim} x{args.depth}, {args.batch}x{args.tokens} tokens",
          model, call, args.runs, not args.no_compile)
    if args.preset:
        model, call = dit_preset(args.preset, args.batch)
        bench(f"preset {args.preset}, batch {args.batch}", model, call, args.runs,
              not args.no_compile)


if __name__ == "__main__":
    main()
