"""How much faster int8 kernels are than bf16 on this CPU, at the demo UNet's shapes.

The ceiling for any real W8A8 speed-up: (1) `torch._int_mm` (what `Int8Linear` runs) against a
bf16 matmul of the same shape, for the UNet's token-wise linears and for its 3x3 convolutions
written as matmuls (im2col); (2) PyTorch's oneDNN quantized convolution against the bf16 conv,
kernel alone and with the per-call quantize / dequantize a float model around it needs.
Medians of interleaved runs, so load drift hits both sides alike.

    .venv/bin/python benchmarks/int8_kernel_speed.py [--threads 1] [--runs 9] [--batch 84]
"""

from __future__ import annotations

import argparse
import warnings

import torch
import torch.nn.functional as F

from difflab.eval.cost import time_interleaved


def interleaved(fns: dict, runs: int) -> dict:
    """Median seconds of each callable, round-robin after one warm-up round."""
    return {k: t.median for k, t in time_interleaved(fns, repeats=runs, warmup=1).items()}


MATMUL_SHAPES = {  # (M, K, N): token linears at 16x16 (64 ch), 3x3 convs as im2col matmuls
    "linear 16x16 tokens, 64->64": (256, 64, 64),
    "linear 16x16 tokens, 64->256 (MLP)": (256, 64, 256),
    "conv 3x3 32->32 at 32x32 as matmul": (1024, 288, 32),
    "conv 3x3 64->64 at 16x16 as matmul": (256, 576, 64),
}


def compare_matmul(m: int, k: int, n: int, runs: int) -> dict:
    a8 = torch.randint(-127, 128, (m, k), dtype=torch.int8)
    b8 = torch.randint(-127, 128, (k, n), dtype=torch.int8)
    a16, b16 = torch.randn(m, k, dtype=torch.bfloat16), torch.randn(k, n, dtype=torch.bfloat16)
    return interleaved({"int8": lambda: torch._int_mm(a8, b8), "bf16": lambda: a16 @ b16}, runs)


def compare_conv(c: int, r: int, batch: int, runs: int) -> dict:
    import torch.ao.nn.quantized as nnq

    conv = torch.nn.Conv2d(c, c, 3, padding=1)
    x = torch.randn(batch, c, r, r)
    w = conv.weight.detach()
    qw = torch.quantize_per_channel(w, w.abs().amax((1, 2, 3)).double() / 127,
                                    torch.zeros(c, dtype=torch.long), 0, torch.qint8)
    qconv = nnq.Conv2d(c, c, 3, padding=1)
    qconv.set_weight_bias(qw, conv.bias.detach())
    qconv.scale, qconv.zero_point = float(x.abs().amax()) / 64, 128
    xq = torch.quantize_per_tensor(x, float(x.abs().amax()) / 127, 128, torch.quint8)
    xb, wb, bb = x.bfloat16(), w.bfloat16(), conv.bias.detach().bfloat16()

    def around() -> torch.Tensor:  # what a float model pays per call
        q = torch.quantize_per_tensor(x, float(x.abs().amax()) / 127, 128, torch.quint8)
        return qconv(q).dequantize()

    return interleaved({"bf16": lambda: F.conv2d(xb, wb, bb, padding=1),
                        "kernel": lambda: qconv(xq), "around": around}, runs)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--runs", type=int, default=9)
    p.add_argument("--batch", type=int, default=84, help="images x 2 CFG branches / 2")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message=".*quantized tensor creation.*")
    warnings.filterwarnings("ignore", message=".*deprecated.*")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, "
          f"median of {args.runs} interleaved runs")
    torch.backends.quantized.engine = "x86"
    with torch.no_grad():
        print("torch._int_mm vs bf16 matmul (same shapes)")
        for name, (m, k, n) in MATMUL_SHAPES.items():
            t = compare_matmul(args.batch * m, k, n, args.runs)
            print(f"  {name:38s} int8 {t['int8'] * 1e3:7.2f} ms  bf16 {t['bf16'] * 1e3:7.2f} ms"
                  f"  int8 speed-up {t['bf16'] / t['int8']:.2f}x")
        print("oneDNN quantized conv (x86 engine) vs bf16 conv, 3x3, NCHW")
        for c, r in ((32, 32), (64, 16)):
            t = compare_conv(c, r, args.batch, args.runs)
            print(f"  {c}->{c} at {r}x{r}: bf16 {t['bf16'] * 1e3:6.2f} ms  int8 kernel "
                  f"{t['kernel'] * 1e3:6.2f} ms ({t['bf16'] / t['kernel']:.2f}x)  with quantize"
                  f" + dequantize {t['around'] * 1e3:6.2f} ms ({t['bf16'] / t['around']:.2f}x)")


if __name__ == "__main__":
    main()
