"""Speed of the shapes evaluator and the feature net per image size, measured side by side.

    .venv/bin/python benchmarks/shapeeval_speed.py

Prints images/s of `shapeeval.evaluate` (detection + verdicts) and of `extract_features`
on renders of the whole prompt suite, and each size's cost as a ratio to 32 px, measured
round-robin in one process. Re-run on a quiet machine before quoting the numbers.
"""

from __future__ import annotations

import time

import numpy as np

from difflab.data.shapes import load_suite, render_spec
from difflab.eval.features import extract_features, load_feature_net
from difflab.eval.shapeeval import evaluate

SIZES = (16, 32, 64, 128)


def main(rounds: int = 3) -> None:
    specs = load_suite("all")
    images = {s: np.stack([render_spec(p, s, seed=p.seed)[0] for p in specs]) for s in SIZES}
    load_feature_net()
    timings = {(kind, s): [] for kind in ("evaluate", "features") for s in SIZES}
    for _ in range(rounds):  # round-robin, so load changes hit every size alike
        for s in SIZES:
            t = time.perf_counter()
            evaluate(images[s], specs)
            timings["evaluate", s].append(time.perf_counter() - t)
            t = time.perf_counter()
            extract_features(images[s])
            timings["features", s].append(time.perf_counter() - t)
    n = len(specs)
    print(f"{n} images per size, median of {rounds} rounds")
    print("| size | evaluate img/s | x cost vs 32 | features img/s | x cost vs 32 |")
    print("|---|---|---|---|---|")
    for s in SIZES:
        ev, ft = (float(np.median(timings[k, s])) for k in ("evaluate", "features"))
        ev32, ft32 = (float(np.median(timings[k, 32])) for k in ("evaluate", "features"))
        print(f"| {s} | {n / ev:.0f} | {ev / ev32:.2f} | {n / ft:.0f} | {ft / ft32:.2f} |")


if __name__ == "__main__":
    main()
