"""Train the differentiable reward net on dev-split images and measure its agreement with the
evaluator on held-out images.

Training images: shapes-base's samples of every single/binding/counting/spatial prompt (dev
images 0..K-1) and exact renders of the same specs, each scored by the evaluator against its own
spec and against near-miss specs (another relation, count or colour binding). Held-out images:
dev images 500..500+H-1 (other seeds, never trained on), generated and rendered the same way.

    python benchmarks/align_rewardnet.py --out runs/align/reward-net \
        --result benchmarks/results/align/rewardnet.json
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from difflab.align.rewardnet import (
    RewardNetConfig,
    agreement,
    label_images,
    predict_scores,
    save_reward_net,
    train_reward_net,
)
from difflab.data.shapes import render_specs
from difflab.data.suites import expand_suite, load_suite
from difflab.demo import DEMO_SAMPLING
from difflab.eval.commands import checkpoint_identity
from difflab.eval.provenance import provenance
from difflab.io import write_json
from difflab.runtime import load
from difflab.runtime.artefacts import resolve

SUITES = ("single", "binding", "counting", "spatial")


def image_set(pipe, first: int, count: int) -> tuple[np.ndarray, list]:
    """Generated and rendered images of every suite prompt, dev images first..first+count-1."""
    specs = [s for name in SUITES for s in load_suite(name)]
    specs, seeds = expand_suite(specs, count, first, "dev")
    generated = pipe.generate([s.text for s in specs], seeds, DEMO_SAMPLING, progress=True)
    rendered = render_specs(specs, seeds, pipe.image_shape[1])
    return np.concatenate([generated, rendered]), specs + specs


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", default="shapes-base")
    ap.add_argument("--train-images", type=int, default=4, help="dev images per prompt")
    ap.add_argument("--heldout-images", type=int, default=2)
    ap.add_argument("--near-misses", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--out", required=True, help="reward net folder")
    ap.add_argument("--result", required=True)
    args = ap.parse_args(argv)
    pipe = load(args.base)
    t0 = time.perf_counter()
    train_x, train_specs = image_set(pipe, 0, args.train_images)
    test_x, test_specs = image_set(pipe, 500, args.heldout_images)
    gen_s = time.perf_counter() - t0
    idx, specs, scores = label_images(train_x, train_specs, args.near_misses)
    t_idx, t_specs, t_scores = label_images(test_x, test_specs, args.near_misses)
    cfg = RewardNetConfig(steps=args.steps)
    t1 = time.perf_counter()
    net, losses = train_reward_net(train_x, specs, scores, idx, cfg, log=print)
    train_s = time.perf_counter() - t1
    n_gen = len(test_x) // 2
    held = {"all": agreement(predict_scores(net, test_x, t_specs, t_idx), t_scores)}
    own = np.arange(len(t_idx)) % (1 + args.near_misses) == 0  # scored against its own spec
    for name, keep in (("generated_own_spec", (t_idx < n_gen) & own),
                       ("rendered_own_spec", (t_idx >= n_gen) & own),
                       ("near_miss_specs", ~own)):
        sub = [t_specs[i] for i in np.flatnonzero(keep)]
        held[name] = agreement(predict_scores(net, test_x, sub, t_idx[keep]), t_scores[keep])
    n_params = sum(p.numel() for p in net.parameters())
    metrics = {"heldout_reward_pearson": held["all"]["reward_pearson"],
               "heldout_passed_agreement": held["all"]["passed"]["agreement"]}
    save_reward_net(net, cfg, args.out, metrics)
    folder = resolve(args.base)
    write_json(args.result, {
        "provenance": provenance("dev", str(folder), checkpoint_identity(folder),
                                 {"reward_net": cfg.__dict__, "sampling": DEMO_SAMPLING.__dict__,
                                  "suites": SUITES, "train_images_per_prompt": args.train_images,
                                  "heldout_first_image": 500,
                                  "heldout_images_per_prompt": args.heldout_images,
                                  "near_misses": args.near_misses}),
        "note": "shared 2-core machine; timings are indicative only",
        "parameters": n_params, "train_rows": len(specs), "heldout_rows": len(t_specs),
        "generate_seconds": round(gen_s, 1), "train_seconds": round(train_s, 1),
        "loss_curve": [round(float(np.mean(losses[i:i + 100])), 4)
                       for i in range(0, len(losses), 100)],
        "heldout": held,
    })
    print(f"held-out agreement: passed {held['all']['passed']['agreement']:.3f}, reward "
          f"pearson {held['all']['reward_pearson']:.3f}; wrote {args.out} and {args.result}")


if __name__ == "__main__":
    main(sys.argv[1:])
