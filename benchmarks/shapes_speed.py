"""Shapes-world generator speed on one core: scene sampling + rendering, images/s per size.

Run on a quiet machine: `python benchmarks/shapes_speed.py [--n 4000]`. Prints images/s for
each image size and its ratio to the 32x32 rate measured in the same run.
"""

from __future__ import annotations

import argparse
import time

import torch

from difflab.data.shapes_dataset import ShapesConfig, ShapesDataset


def images_per_second(size: int, n: int) -> float:
    """Time n samples (scene + caption + render to uint8) of a default shapes dataset."""
    ds = ShapesDataset(ShapesConfig(size=size, length=n))
    ds.sample(0)  # warm-up (imports, caches)
    start = time.perf_counter()
    for i in range(n):
        ds.sample(i)
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=4000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rates = {size: images_per_second(size, args.n) for size in (16, 32, 64, 128)}
    for size, rate in rates.items():
        print(f"{size:>4}x{size:<4} {rate:8.0f} images/s  ({rate / rates[32]:.2f}x of 32x32)")


if __name__ == "__main__":
    main()
