"""DRaFT-K on the dev split: train one LoRA per (K, lr) within a budget each, then score each
adapter and the base on unseen dev images (image 500 of the first prompts of every suite) by
the evaluator, FD to real renders and the reward net it climbed; the best by evaluator accuracy
is the one to take to the test split (benchmarks/align_eval.py).

    python benchmarks/align_draft.py --reward-net runs/reward-net --grid 1:1e-3,4:1e-3 \
        --budget-minutes 7 --out benchmarks/results/align/draft-dev.json
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from difflab.align.draft import TRAIN_IMAGES, DraftConfig, align_draft, save_draft
from difflab.align.rewardnet import load_reward_net
from difflab.align.rewards import evaluator_reward
from difflab.data.suites import expand_suite, load_suite
from difflab.demo import DEMO_SAMPLING
from difflab.eval.commands import checkpoint_identity
from difflab.eval.provenance import provenance
from difflab.eval.stats import mcnemar_exact
from difflab.evaluate import score_images
from difflab.io import write_json
from difflab.runtime import load
from difflab.runtime.artefacts import resolve

sys.path.insert(0, str(Path(__file__).parent))
from align_search import accuracy  # noqa: E402


def score(pipe, net, specs, seeds) -> dict:
    """Evaluator pass flags and rewards, reward-net rewards and FD of `pipe`'s samples."""
    import torch

    images = pipe.generate([s.text for s in specs], seeds, DEMO_SAMPLING)
    reward = evaluator_reward(images, specs)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        net_reward = net.reward(x, specs).numpy()
    _, fd, _ = score_images(images, specs, seeds)
    cats = [s.category for s in specs]
    passed = [int(r == 1.0) for r in reward]
    return {"passed": passed, "accuracy": accuracy(passed, cats), "fd": fd,
            "mean_reward": float(np.mean(reward)), "mean_net_reward": float(np.mean(net_reward))}


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", default="shapes-base")
    ap.add_argument("--reward-net", required=True)
    ap.add_argument("--grid", default="1:1e-3,4:1e-3", help="K:lr pairs")
    ap.add_argument("--budget-minutes", type=float, default=7.0)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--suites", default="binding,counting,spatial", help="tuned on")
    ap.add_argument("--eval-suites", default="single,binding,counting,spatial")
    ap.add_argument("--per-suite", type=int, default=24)
    ap.add_argument("--runs", default="runs/align", help="adapters go to RUNS/draft-k*-lr*")
    ap.add_argument("--also", default="", help="adapter folders of earlier DRaFT runs to score")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    from difflab.tune.adapters import base_reference

    net = load_reward_net(args.reward_net)
    specs = [s for name in args.eval_suites.split(",")
             for s in load_suite(name)[:args.per_suite]]
    specs, seeds = expand_suite(specs, 1, TRAIN_IMAGES, "dev")  # never trained on
    runs = {args.base: score(load(args.base), net, specs, seeds)}
    print(args.base, runs[args.base]["accuracy"]["overall"], runs[args.base]["fd"])
    for folder in [f for f in args.also.split(",") if f]:
        from difflab.runtime import read_manifest

        manifest = read_manifest(resolve(folder))
        run = score(load(folder), net, specs, seeds)
        run.update(config=manifest.config["align"], adapter=folder,
                   steps_done=manifest.metrics["steps_done"],
                   train_seconds=manifest.metrics["seconds"],
                   reward_curve=manifest.metrics["reward_curve"],
                   vs_base=mcnemar_exact(run["passed"], runs[args.base]["passed"]).__dict__)
        runs[Path(folder).name] = run
        print(folder, run["accuracy"]["overall"], run["fd"], run["mean_net_reward"])
    for item in [g for g in args.grid.split(",") if g]:
        k, lr = item.split(":")
        cfg = DraftConfig(suites=tuple(args.suites.split(",")), k=int(k), lr=float(lr),
                          steps=100_000, budget_minutes=args.budget_minutes,
                          batch_size=args.batch_size)
        name = f"draft-k{k}-lr{lr}"
        t = time.perf_counter()
        result = align_draft(load(args.base), net, cfg, DEMO_SAMPLING, log=print)
        folder = f"{args.runs}/{name}"
        save_draft(result, folder, base_reference(args.base), DEMO_SAMPLING, args.reward_net)
        run = score(load(folder), net, specs, seeds)
        run.update(config=asdict(cfg), adapter=folder, steps_done=result.steps_done,
                   train_seconds=round(result.seconds, 1),
                   reward_curve=[round(float(np.mean(result.rewards[i:i + 10])), 4)
                                 for i in range(0, len(result.rewards), 10)],
                   vs_base=mcnemar_exact(run["passed"], runs[args.base]["passed"]).__dict__,
                   seconds=round(time.perf_counter() - t, 1))
        runs[name] = run
        print(name, run["accuracy"]["overall"], run["fd"], run["mean_net_reward"],
              run["vs_base"])
    folder = resolve(args.base)
    write_json(args.out, {
        "provenance": provenance("dev", str(folder), checkpoint_identity(folder),
                                 {"sampling": DEMO_SAMPLING.__dict__, "grid": args.grid,
                                  "budget_minutes": args.budget_minutes, "also": args.also,
                                  "batch_size": args.batch_size, "suites": args.suites,
                                  "eval_suites": args.eval_suites,
                                  "per_suite": args.per_suite, "eval_image": TRAIN_IMAGES,
                                  "reward_net": args.reward_net}),
        "note": "shared 2-core machine (other jobs running); seconds are indicative only",
        "prompts": [s.text for s in specs], "categories": [s.category for s in specs],
        "seeds": seeds, "runs": runs})


if __name__ == "__main__":
    main(sys.argv[1:])
