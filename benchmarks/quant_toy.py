"""The quantization recipes on a toy layer: a seeded 64 -> 256 -> 64 MLP fed 32 seeded inputs
(docs/quantization.md renders the result file).

    python benchmarks/quant_toy.py --out benchmarks/results/quant/toy_layer.json

rel-MSE is output MSE / output power against the float MLP; bytes count codes at their bit
width plus fp32 biases and scales (`quant.storage.model_bytes`); `restored` says whether
`handle.remove()` gives back bit-identical outputs.
"""

from __future__ import annotations

import argparse
import copy

import torch
from torch import nn

from difflab.eval.provenance import provenance
from difflab.io import write_json
from difflab.quant import quantize, size_report

RECIPES = ("w8a8", "w8a8_real", "w4a8", "w4a4", "w4a4_svd", "fp8", "fp4")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="benchmarks/results/quant/toy_layer.json")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.manual_seed(args.seed)
    mlp = nn.Sequential(nn.Linear(64, 256), nn.GELU(), nn.Linear(256, 64)).eval()
    x = torch.randn(32, 64, generator=torch.Generator().manual_seed(args.seed + 1))
    with torch.no_grad():
        ref = mlp(x)
    rows = {}
    for name in RECIPES:
        model = copy.deepcopy(mlp)
        handle = quantize(model, name, calibrate=lambda m: m(x))
        with torch.no_grad():
            out = model(x)
        report, execution = size_report(handle), handle.execution
        rel_mse = float((out - ref).pow(2).mean() / ref.pow(2).mean())
        handle.remove()
        with torch.no_grad():
            restored = torch.equal(model(x), ref)
        rows[name] = {"execution": execution, "rel_mse": rel_mse,
                      "bytes": report["bytes"], "vs_bf16": report["vs_bf16"],
                      "restored": restored}
        print(f"{name:10} {execution:9} rel-MSE {rel_mse:.2e} {report['bytes']:7d} B  "
              f"bf16/{report['vs_bf16']:.2f}  restored: {restored}")
    write_json(args.out, {"layer": "Linear(64, 256) -> GELU -> Linear(256, 64)", "inputs": 32,
                          "recipes": rows,
                          "provenance": provenance("synthetic (seeded random layer and inputs)",
                                                   config=vars(args))})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
