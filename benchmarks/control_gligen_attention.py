"""Where GLIGEN's visual tokens look: in each gated self-attention, how much a visual token
attends to an object's grounding token when it lies inside that object's box, against when it
lies outside (1 = the attention ignores location), and the share of its attention on grounding
tokens at all.

Fresh world scenes (their exact boxes as the layout), noised to each flow time t given (near
t = 1 the image holds almost nothing of the objects, so only position can tell a token inside a
box from one outside), one conditional call of the base with the adapter attached; the
attention is recomputed from each gated layer's own inputs (`GatedSelfAttention.attention`),
averaged over heads.

    python benchmarks/control_gligen_attention.py --control runs/gligen-pos \
        --control runs/gligen-nopos --out benchmarks/results/control/gligen-attention.json
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from difflab.control.gligen import token_centres
from difflab.control.train import apply_control, load_control, scene_batch
from difflab.eval.provenance import provenance
from difflab.io import write_json
from difflab.runtime import load
from difflab.runtime.machine import run_record
from difflab.tune.adapters import base_reference


def inside(boxes: torch.Tensor, n: int) -> torch.Tensor:
    """(B, K, N) whether each of n tokens' centres lies in each (B, K, 4) box."""
    c = token_centres(n)  # (N, 2)
    x, y = c[:, 0], c[:, 1]
    b = boxes[..., None]  # (B, K, 4, 1)
    return (x >= b[:, :, 0]) & (x <= b[:, :, 2]) & (y >= b[:, :, 1]) & (y <= b[:, :, 3])


def layer_stats(attn: torch.Tensor, boxes: torch.Tensor, valid: torch.Tensor) -> dict:
    """attn (B, H, N, N + K) -> the inside/outside attention ratio to each object's grounding
    token, and the attention share on grounding tokens."""
    a = attn.mean(1)  # (B, N, N + K), heads averaged
    n = a.shape[1]
    ground = a[:, :, n:].transpose(1, 2)  # (B, K, N): attention of each token to object k
    into = inside(boxes, n) & valid[..., None]
    out_of = ~inside(boxes, n) & valid[..., None]
    ratio = ground[into].mean() / ground[out_of].mean()
    return {"inside_outside_ratio": float(ratio),
            "attention_in_box": float(ground[into].mean()),
            "attention_out_of_box": float(ground[out_of].mean()),
            "grounding_share": float(a[:, :, n:].sum(-1).mean())}


def probe(pipe, net, layouts: list, captions: list[str], x_in: torch.Tensor,
          t: torch.Tensor) -> dict:
    """One conditional call with `net` attached; each gated layer's attention statistics."""
    seen: dict[str, tuple] = {}
    probes = [g.register_forward_hook(lambda m, inp, out, name=name: seen.update({name: inp}))
              for name, g in zip(net.names, net.gated, strict=True)]
    try:
        with apply_control(pipe, net) as handle, torch.no_grad():
            handle.set_layouts(layouts)
            pipe.net(x_in, t, **pipe.condition(captions))
    finally:
        for p in probes:
            p.remove()
    g = handle.grounding
    return {name: layer_stats(gated.attention(*seen[name]), g.boxes, g.valid)
            for name, gated in zip(net.names, net.gated, strict=True)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="shapes-base")
    ap.add_argument("--control", action="append", required=True, help="a GLIGEN control folder")
    ap.add_argument("--scenes", type=int, default=64)
    ap.add_argument("--t", default="0.95,0.5", help="flow times (sigma = t) to noise to")
    ap.add_argument("--seed", type=int, default=20261206, help="scene and noise draws (training "
                    "draws with seeds (0, step))")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    pipe = load(args.base)
    size = pipe.image_shape[-1]
    x0, captions, layouts = scene_batch(args.scenes, size, np.random.default_rng([args.seed]))
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(args.seed))
    results = {}
    for folder in args.control:
        net = load_control(folder, pipe, "gligen")
        results[folder] = {"positions": net.cfg.positions, "gates": net.diagnostics()["gates"]}
        for level in args.t.split(","):
            sigma = torch.full((args.scenes,), float(level))
            layers = probe(pipe, net, layouts, captions, *pipe.process.net_input(x0, noise, sigma))
            results[folder][f"t={level}"] = layers
            print(folder, f"t={level}",
                  {k: round(v["inside_outside_ratio"], 3) for k, v in layers.items()})
    split = f"fresh world scenes (seed {args.seed}), not a suite split"
    write_json(args.out, {"base": args.base, "scenes": args.scenes, "controls": results,
                          "provenance": provenance(split, args.base,
                                                   base_reference(args.base)["sha256"],
                                                   config=vars(args), machine=run_record())})


if __name__ == "__main__":
    main()
