"""Train the shapes-world feature net used for Fréchet distance and ship its weights.

The net learns (a) how many objects of each shape and of each colour a render holds and
(b) whether it was degraded and how (none, blur, noise, blockiness, colour shift), so its
pooled features respond to both content and image quality. Deterministic from --seed.

    .venv/bin/python scripts/train_shape_features.py --out src/difflab/assets
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from difflab.data.shapes import load_suite, render_spec
from difflab.data.world import COLORS, SHAPES
from difflab.eval.features import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    ShapeFeatureNet,
    add_gaussian_noise,
    blockiness,
    color_shift,
    gaussian_blur,
    prepare,
)
from difflab.io import save_tensors, write_json

MAX_COUNT = 4  # count classes 0..4 per shape and per colour
DEGRADATIONS = ("clean", "blur", "noise", "blocky", "colorshift")


def make_renders(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n renders of random suite prompts: images (n, S, S, 3), shape and colour counts (n, K)."""
    rng = np.random.default_rng(seed)
    specs = load_suite("all")
    images, shapes, colors = [], [], []
    for i in range(n):
        spec = specs[int(rng.integers(len(specs)))]
        img, scene = render_spec(spec, size, seed=seed * 10_000_000 + i)
        images.append(img)
        shapes.append([min(scene.count(shape=s), MAX_COUNT) for s in SHAPES])
        colors.append([min(scene.count(color=c), MAX_COUNT) for c in COLORS])
    return np.stack(images), np.array(shapes), np.array(colors)


def degrade(images: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Half the images clean, the rest split over the four degradations at random strengths."""
    rng = np.random.default_rng(seed)
    n = len(images)
    kind = np.where(rng.random(n) < 0.5, 0, rng.integers(1, len(DEGRADATIONS), n))
    out = images.copy()
    for i in np.flatnonzero(kind):
        noise_seed = int(rng.integers(1 << 31))
        out[i] = _degrade_one(images[i : i + 1], int(kind[i]), rng, noise_seed)[0]
    return out, kind


def _degrade_one(one: np.ndarray, kind: int, rng: np.random.Generator, noise_seed: int):
    """Apply degradation `kind` (1-4, see DEGRADATIONS) at a random strength to (1, S, S, 3)."""
    if kind == 1:
        return gaussian_blur(one, rng.uniform(0.4, 1.5))
    if kind == 2:
        return add_gaussian_noise(one, rng.uniform(0.02, 0.15), seed=noise_seed)
    if kind == 3:
        return blockiness(one, int(rng.choice([2, 4])))
    return color_shift(one, rng.uniform(0.05, 0.25), seed=noise_seed)


def losses(net: ShapeFeatureNet, x, shapes, colors, kind) -> tuple[torch.Tensor, dict]:
    """Sum of the three cross-entropies, and per-task accuracies."""
    out = net(x)
    logit_s = out["shapes"].view(-1, MAX_COUNT + 1, len(SHAPES))  # (N, classes, shapes)
    logit_c = out["colors"].view(-1, MAX_COUNT + 1, len(COLORS))
    loss = (F.cross_entropy(logit_s, shapes) + F.cross_entropy(logit_c, colors)
            + F.cross_entropy(out["degradation"], kind))
    acc = {
        "shape_counts": (logit_s.argmax(1) == shapes).all(1).float().mean().item(),
        "color_counts": (logit_c.argmax(1) == colors).all(1).float().mean().item(),
        "degradation": (out["degradation"].argmax(1) == kind).float().mean().item(),
    }
    return loss, acc


def to_batch(images: np.ndarray, shapes: np.ndarray, colors: np.ndarray, kind: np.ndarray,
             size: int) -> tuple[torch.Tensor, ...]:
    """Net inputs (N, 3, S, S) in [-1, 1] and the three integer targets as tensors."""
    return (prepare(images, size), torch.from_numpy(shapes).long(),
            torch.from_numpy(colors).long(), torch.from_numpy(kind).long())


def train(args: argparse.Namespace) -> dict:
    """Train on fresh degradations each epoch; report accuracies on a held-out set."""
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    model_cfg = {"width": args.width, "feature_dim": args.feature_dim, "input_size": args.size,
                 "heads": {"shapes": (MAX_COUNT + 1) * len(SHAPES),
                           "colors": (MAX_COUNT + 1) * len(COLORS),
                           "degradation": len(DEGRADATIONS)}}
    net = ShapeFeatureNet(**model_cfg)
    images, shapes, colors = make_renders(args.n_images, args.size, args.seed)
    val = held_out(args)
    steps = args.epochs * (args.n_images // args.batch_size)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, args.lr, total_steps=steps)
    g = np.random.default_rng(args.seed + 3)
    start = time.perf_counter()
    for epoch in range(args.epochs):
        x, kind = degrade(images, args.seed * 1000 + epoch + 10)
        order = g.permutation(len(x))
        for b in range(len(x) // args.batch_size):
            idx = order[b * args.batch_size : (b + 1) * args.batch_size]
            loss, _ = losses(net, *to_batch(x[idx], shapes[idx], colors[idx], kind[idx],
                                            args.size))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        net.eval()
        with torch.no_grad():
            val_loss, acc = losses(net, *val)
        net.train()
        print(f"epoch {epoch + 1}/{args.epochs}  loss {loss.item():.3f}  "
              f"val loss {val_loss.item():.3f}  val acc " + json.dumps(
                  {k: round(v, 3) for k, v in acc.items()}), flush=True)
    seconds = time.perf_counter() - start
    return {"model": model_cfg, "train": vars(args) | {"seconds": round(seconds, 1)},
            "val_accuracy": {k: round(v, 4) for k, v in acc.items()}, "net": net}


def held_out(args: argparse.Namespace) -> tuple[torch.Tensor, ...]:
    """The validation batch `train` reports on: renders of seed + 1, degraded with seed + 2."""
    val_imgs, val_shapes, val_colors = make_renders(args.n_val, args.size, args.seed + 1)
    val_x, val_kind = degrade(val_imgs, args.seed + 2)
    return to_batch(val_x, val_shapes, val_colors, val_kind, args.size)


def evaluate_shipped(args: argparse.Namespace) -> None:
    """Held-out accuracies of the net in `args.evaluate`, written to `args.result`."""
    from difflab.eval.features import load_feature_net
    from difflab.eval.provenance import provenance
    from difflab.runtime.artefacts import sha256_file

    if not args.result:
        raise SystemExit("error: --evaluate needs --result FILE")
    torch.set_num_threads(args.threads)
    net = load_feature_net(str(args.evaluate)).eval()
    with torch.no_grad():
        _, acc = losses(net, *held_out(args))
    weights = args.evaluate / WEIGHTS_FILE
    config = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    write_json(args.result, {
        "val_accuracy": {k: round(v, 4) for k, v in acc.items()}, "n_val": args.n_val,
        "weights": str(weights), "weights_sha256": sha256_file(weights),
        "bytes": weights.stat().st_size,
        "parameters": sum(p.numel() for p in net.parameters()),
        "provenance": provenance("held-out renders (seed + 1), not used in training",
                                 config=config)})
    print(json.dumps({k: round(v, 4) for k, v in acc.items()}), f"wrote {args.result}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("src/difflab/assets"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-images", type=int, default=8192)
    p.add_argument("--n-val", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--feature-dim", type=int, default=64)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--result", type=Path, default=None,
                   help="also write a result file (accuracies, weights hash, provenance)")
    p.add_argument("--evaluate", type=Path, default=None,
                   help="score the net in this folder (e.g. src/difflab/assets) on the "
                   "held-out set instead of training; writes --result")
    args = p.parse_args()
    if args.evaluate:
        evaluate_shipped(args)
        return
    result = train(args)
    net = result.pop("net")
    result["train"] = {k: str(v) if isinstance(v, Path) else v
                       for k, v in result["train"].items()}
    save_tensors(args.out / WEIGHTS_FILE, net.state_dict())
    write_json(args.out / CONFIG_FILE, result)
    size_kb = (args.out / WEIGHTS_FILE).stat().st_size / 1024
    print(f"wrote {args.out / WEIGHTS_FILE} ({size_kb:.0f} KiB) and {args.out / CONFIG_FILE}")
    if args.result:
        write_result(args, result)


def write_result(args: argparse.Namespace, result: dict) -> None:
    """The held-out accuracies with the weights' hash, whether they equal the shipped ones
    (training is deterministic given the seed), and the run's provenance."""
    from difflab.eval.provenance import provenance
    from difflab.runtime.artefacts import sha256_file

    shipped = Path(__file__).resolve().parents[1] / "src/difflab/assets" / WEIGHTS_FILE
    sha = sha256_file(args.out / WEIGHTS_FILE)
    record = {**result, "weights_sha256": sha, "bytes": (args.out / WEIGHTS_FILE).stat().st_size,
              "equals_shipped": shipped.is_file() and sha256_file(shipped) == sha,
              "provenance": provenance("held-out renders (seed + 1), not used in training",
                                       config=result["train"])}
    write_json(args.result, record)
    print(f"wrote {args.result}")


if __name__ == "__main__":
    main()
