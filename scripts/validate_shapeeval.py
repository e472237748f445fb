"""Validate the shapes evaluator and the FD feature space on ground-truth renders.

    .venv/bin/python scripts/validate_shapeeval.py --sizes 32 64 --n-seeds 4 --fd-n 1000

Columns: clean / noise / blur = fraction of renders whose own prompt passes (noise and blur
as given); reject = fraction of renders that fail a prompt their true scene does not satisfy;
truth = fraction of true scenes that pass their own prompt under the evaluator's rules.
The FD table compares --fd-n renders of random suite prompts with --fd-n other renders
(different seeds), clean or degraded, in the shipped feature net's space.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from difflab.data.shapes import load_suite, render_spec
from difflab.eval.features import (
    add_gaussian_noise,
    blockiness,
    color_shift,
    extract_features,
    frechet_distance,
    gaussian_blur,
)
from difflab.eval.shapeeval import validate

COLUMNS = ("clean", "noise", "blur", "reject", "truth", "n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[32, 64])
    p.add_argument("--n-seeds", type=int, default=4, help="0: skip the accuracy table")
    p.add_argument("--suite", default="all")
    p.add_argument("--noise", type=float, default=8 / 255, help="noise std in [0, 1] units")
    p.add_argument("--blur", type=float, default=0.5, help="Gaussian blur std in pixels")
    p.add_argument("--fd-n", type=int, default=0, help="images per set for the FD table")
    args = p.parse_args()
    for size in args.sizes:
        accuracy_table(size, args)
        if args.fd_n:
            fd_table(size, args.fd_n)


def renders(n: int, size: int, seed: int, suite: str = "all") -> np.ndarray:
    """n renders (n, S, S, 3) of random prompts of `suite`, seeded."""
    specs = load_suite(suite)
    picks = np.random.default_rng(seed).integers(len(specs), size=n)
    return np.stack([render_spec(specs[i], size, seed=seed * 1_000_000 + j)[0]
                     for j, i in enumerate(picks)])


def fd_table(size: int, n: int) -> None:
    """FD from one set of real renders to another set, clean, degraded, or of other content."""
    real_a, real_b = renders(n, size, 1), renders(n, size, 2)
    f_a = extract_features(real_a)
    rows = {
        "real (other seeds)": real_b,
        "blur std 0.5 px @32": gaussian_blur(real_b, 0.5 * size / 32),
        "blur std 1 px @32": gaussian_blur(real_b, size / 32),
        "noise std 8/255": add_gaussian_noise(real_b, 8 / 255, seed=0),
        "noise std 0.1": add_gaussian_noise(real_b, 0.1, seed=0),
        "blockiness 2 px @32": blockiness(real_b, max(1, size // 16)),
        "colour shift 0.1": color_shift(real_b, 0.1, seed=0),
        "content: single objects only": renders(n, size, 3, "single"),
        "content: counting only": renders(n, size, 4, "counting"),
    }
    print(f"\nFD at {size}x{size}, {n} vs {n} images (set A: random prompts of suite 'all')")
    print("| set B | FD(A, B) |\n|---|---|")
    for name, images in rows.items():
        print(f"| {name} | {frechet_distance(f_a, extract_features(images)):.3f} |")


def accuracy_table(size: int, args: argparse.Namespace) -> None:
    """Validate the evaluator at one image size and print its table."""
    if args.n_seeds:
        start = time.perf_counter()
        result = validate(size, args.n_seeds, args.suite, args.noise, args.blur)
        seconds = time.perf_counter() - start
        n_scored = 4 * result["table"]["overall"]["n"]  # clean, noise, blur, reject
        print(f"\n{size}x{size}, suite {args.suite!r}, {args.n_seeds} seeds per prompt, "
              f"noise std {args.noise:.4f}, blur std {args.blur} px "
              f"({n_scored} images scored in {seconds:.1f} s: {n_scored / seconds:.0f} images/s "
              "including rendering)")
        print("| category | " + " | ".join(COLUMNS) + " |")
        print("|---" * (len(COLUMNS) + 1) + "|")
        for cat, row in result["table"].items():
            cells = [f"{row[c]:.4f}" if c != "n" else str(row[c]) for c in COLUMNS]
            print(f"| {cat} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
