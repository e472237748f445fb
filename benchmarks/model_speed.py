"""Forward speed of the model presets at batch 16, fp32 and bf16 autocast, next to the bf16
matmul peak and the two attention paths, all measured in this one run.

Usage: python benchmarks/model_speed.py [--presets pixart-s,dit-s,...] [--batch 16]
           [--runs 7] [--threads N] [--compile] [--json benchmarks/results/model_speed.json]
Numbers from a machine shared with other jobs are provisional: re-run on a quiet machine.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from difflab.eval.provenance import provenance
from difflab.io import write_json
from difflab.models import PRESETS, build_model, count_parameters, flops_per_image
from difflab.models.layers import attend

FLAGSHIP = "pixart-s"
DEFAULT_PRESETS = "dit-tiny,dit-s,pixart-tiny,pixart-s,mmdit-s,unet-s"


def median_seconds(fn, runs: int, warmup: int = 2) -> float:
    """Median wall time of `fn()` over `runs` calls after `warmup` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_peak(dtype: torch.dtype, runs: int) -> float:
    """Best GFLOP/s of square matmuls (the largest sizes that fit this CPU's caches and cores)."""
    best = 0.0
    for n in (512, 1024, 2048):
        a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
        seconds = median_seconds(lambda a=a, b=b: a @ b, runs)
        best = max(best, 2 * n**3 / seconds / 1e9)
    return best


def inputs_for(cfg, batch: int):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, cfg.in_channels, cfg.input_size, cfg.input_size, generator=g)
    kw = {}
    if getattr(cfg, "context_dim", 0):
        kw["context"] = torch.randn(batch, 32, cfg.context_dim, generator=g)
        kw["context_mask"] = torch.ones(batch, 32, dtype=torch.bool)
    if getattr(cfg, "pooled_dim", 0):
        kw["pooled"] = torch.randn(batch, cfg.pooled_dim, generator=g)
    return x, torch.rand(batch, generator=g) * 1000, kw


def time_preset(name: str, batch: int, runs: int, compile_too: bool = False) -> dict:
    torch.manual_seed(0)
    model = build_model(name).eval()
    x, t, kw = inputs_for(model.config, batch)

    def fp32():
        with torch.inference_mode():
            model(x, t, **kw)

    def bf16():
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            model(x, t, **kw)

    gflop = flops_per_image(model.config, context_len=32) / 1e9
    row = {"preset": name, "params_m": count_parameters(model) / 1e6, "gflop_per_image": gflop,
           "fp32_s": median_seconds(fp32, runs), "bf16_s": median_seconds(bf16, runs)}
    if compile_too:  # inductor with frozen weights: fuses the norms, GELU and adaLN elementwise
        import torch._inductor.config as inductor_config

        torch._dynamo.reset()
        inductor_config.freezing = True
        compiled = torch.compile(model)

        def bf16_compiled():
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
                compiled(x, t, **kw)

        row["bf16_compiled_s"] = median_seconds(bf16_compiled, runs, warmup=3)
    return row


def attention_paths(runs: int) -> list[dict]:
    """SDPA vs plain matmul-softmax at the head shape of the small presets (4 heads of 64):
    inference (no autograd) and a training step's forward + backward."""
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        for n in (64, 256, 1024):
            q, k, v = (torch.randn(16, 4, n, 64).to(dtype) for _ in range(3))
            row = {"dtype": str(dtype).split(".")[-1], "tokens": n}
            for mode in ("inference", "train"):
                times = {}
                for backend in ("sdpa", "math"):
                    times[backend] = median_seconds(
                        lambda q=q, k=k, v=v, b=backend, m=mode: _attention_once(q, k, v, b, m),
                        runs)
                row[f"sdpa_over_math_{mode}"] = times["sdpa"] / times["math"]
            rows.append(row)
    return rows


def _attention_once(q, k, v, backend: str, mode: str) -> None:
    if mode == "inference":
        with torch.inference_mode():
            attend(q, k, v, backend=backend)
        return
    q, k, v = (z.detach().requires_grad_() for z in (q, k, v))
    attend(q, k, v, backend=backend).sum().backward()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default=DEFAULT_PRESETS)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--json", default="")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--compile", action="store_true",
                        help="also time torch.compile (inductor, frozen weights) under bf16")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    names = args.presets.split(",")
    unknown = [n for n in names if n not in PRESETS]
    if unknown:
        parser.error(f"unknown presets {unknown}; valid: {sorted(PRESETS)}")
    peak = matmul_peak(torch.bfloat16, args.runs)
    peak32 = matmul_peak(torch.float32, args.runs)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}")
    print(f"matmul peak: bf16 {peak:.1f} GFLOP/s, fp32 {peak32:.1f} GFLOP/s\n")
    print("| preset | params (M) | GFLOP/img | fp32 ms | bf16 ms | bf16 GFLOP/s | % bf16 peak |")
    print("|---|---|---|---|---|---|---|")
    rows = []
    for name in names:
        r = time_preset(name, args.batch, args.runs, args.compile)
        r["bf16_gflops"] = r["gflop_per_image"] * args.batch / r["bf16_s"]
        r["fraction_of_peak"] = r["bf16_gflops"] / peak
        compiled = ""
        if args.compile:
            r["compiled_fraction_of_peak"] = (r["gflop_per_image"] * args.batch
                                              / r["bf16_compiled_s"] / peak)
            compiled = (f" compiled {1e3 * r['bf16_compiled_s']:.1f} ms, "
                        f"{100 * r['compiled_fraction_of_peak']:.0f}% |")
        rows.append(r)
        print(f"| {name} | {r['params_m']:.2f} | {r['gflop_per_image']:.3f} | "
              f"{1e3 * r['fp32_s']:.1f} | {1e3 * r['bf16_s']:.1f} | {r['bf16_gflops']:.1f} | "
              f"{100 * r['fraction_of_peak']:.0f}% |{compiled}")
    flagship = next((r for r in rows if r["preset"] == FLAGSHIP), None)
    if flagship:
        print(f"\nflagship {FLAGSHIP}: {100 * flagship['fraction_of_peak']:.0f}% of the measured "
              f"bf16 matmul peak eager (goal >= 60%)"
              + (f", {100 * flagship['compiled_fraction_of_peak']:.0f}% compiled"
                 if args.compile else ""))
    attention = attention_paths(args.runs)
    print("\nattention, time(SDPA) / time(matmul-softmax), batch 16, 4 heads x 64 "
          "(inference | forward + backward):")
    for a in attention:
        print(f"  {a['dtype']:>8} {a['tokens']:>5} tokens: {a['sdpa_over_math_inference']:.2f}"
              f" | {a['sdpa_over_math_train']:.2f}")
    if args.json:
        write_json(args.json, {"provenance": provenance("none", config=vars(args)),
                               "bf16_peak_gflops": peak, "fp32_peak_gflops": peak32,
                               "batch": args.batch, "presets": rows, "attention": attention})


if __name__ == "__main__":
    main()
