"""ReNO noise optimisation on the shapes suites: each prompt's initial noise climbs the reward
net for a few gradient steps through the whole sampler; every iterate is scored by the
evaluator. Rows: plain (iterate 0, the plain sample), reno_last (the last iterate: the
optimisation alone), reno_netpick (the iterate the reward net scores highest: no evaluator
involved) and reno (the iterate the evaluator scores highest, as search picks).

    python benchmarks/align_reno.py --split dev --per-suite 2 --lrs 5,50 --iters 2 \
        --reward-net runs/reward-net --out benchmarks/results/align/reno-dev.json
    python benchmarks/align_reno.py --split test --per-suite 12 --lrs 50 --iters 2 \
        --reward-net runs/reward-net --out benchmarks/results/align/reno-test.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from difflab.align.reno import RenoConfig
from difflab.align.rewardnet import load_reward_net
from difflab.align.rewards import evaluator_reward
from difflab.align.search import search
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


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", default="shapes-base")
    ap.add_argument("--split", default="dev")
    ap.add_argument("--suites", default="single,binding,counting,spatial")
    ap.add_argument("--per-suite", type=int, default=12)
    ap.add_argument("--iters", type=int, default=2)
    ap.add_argument("--lrs", default="50")
    ap.add_argument("--reward-net", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    pipe, net = load(args.base), load_reward_net(args.reward_net)
    specs = [s for name in args.suites.split(",")
             for s in load_suite(name)[:args.per_suite]]
    specs, seeds = expand_suite(specs, 1, 0, args.split)
    prompts, cats = [s.text for s in specs], [s.category for s in specs]
    runs, chosen, timing = {}, {}, {}
    for lr in args.lrs.split(","):
        opts = RenoConfig(iters=args.iters, lr=float(lr))
        t = time.perf_counter()
        _, res = search(pipe, prompts, seeds, DEMO_SAMPLING, "reno", opts, specs=specs,
                        reward_net=net, progress=True)
        timing[f"lr{lr}"] = time.perf_counter() - t
        cands = np.stack([r.candidates for r in res])  # (P, iters + 1, H, W, 3)
        ev = np.array([r.rewards for r in res])  # evaluator reward per iterate
        netr = np.array([r.trace for r in res])  # reward net per iterate
        picks = {"plain": np.zeros(len(res), int), f"reno_lr{lr}_last": np.full(len(res), -1),
                 f"reno_lr{lr}_netpick": netr.argmax(1), f"reno_lr{lr}": ev.argmax(1)}
        for name, idx in picks.items():
            if name == "plain" and name in runs:
                continue
            rows = np.arange(len(res))
            chosen[name] = cands[rows, idx]
            reward = evaluator_reward(chosen[name], specs)
            # evaluator calls: the plain sample's score, or every iterate's for the pick
            evals = {"plain": 1, f"reno_lr{lr}": len(ev[0])}.get(name, 0)
            runs[name] = {"nfe_per_image": DEMO_SAMPLING.nfe if name == "plain" else res[0].nfe,
                          "backward_per_image": 0 if name == "plain" else res[0].backward,
                          "reward_calls_per_image": evals,
                          "passed": [int(r == 1.0) for r in reward],
                          "reward": [float(r) for r in reward],
                          "net_reward": netr[rows, idx].tolist(),
                          "config": {"iters": args.iters, "lr": float(lr)}}
        runs[f"reno_lr{lr}"]["mean_net_trace"] = netr.mean(0).round(4).tolist()
    for name, run in runs.items():
        run["accuracy"] = accuracy(run["passed"], cats)
        _, run["fd"], run["fd_floor"] = score_images(chosen[name], specs, seeds)
        run["mean_reward"] = float(np.mean(run["reward"]))
        run["mean_net_reward"] = float(np.mean(run["net_reward"]))
    tests = {f"{n} vs plain": mcnemar_exact(r["passed"], runs["plain"]["passed"]).__dict__
             for n, r in runs.items() if n != "plain"}
    folder = resolve(args.base)
    write_json(args.out, {
        "provenance": provenance(args.split, str(folder), checkpoint_identity(folder),
                                 {"sampling": DEMO_SAMPLING.__dict__, "suites": args.suites,
                                  "per_suite": args.per_suite, "iters": args.iters,
                                  "lrs": args.lrs, "reno": RenoConfig().__dict__,
                                  "reward_net": args.reward_net}),
        "note": "shared 2-core machine (other jobs running); seconds are indicative only",
        "prompts": prompts, "categories": cats, "seeds": seeds,
        "seconds": {k: round(v, 1) for k, v in timing.items()}, "runs": runs,
        "paired_tests": tests})
    for name, run in runs.items():
        print(f"{name:<22} nfe {run['nfe_per_image']:>4} bwd {run['backward_per_image']:>3} "
              f"reward {run['mean_reward']:.3f} net {run['mean_net_reward']:.3f} "
              f"FD {run['fd']:.1f} "
              + "  ".join(f"{c} {100 * v['accuracy']:.1f}%" for c, v in run["accuracy"].items()))
    for name, t in tests.items():
        print(f"{name}: only first {t['only_a']}, only second {t['only_b']}, p {t['p_value']:.3g}")


if __name__ == "__main__":
    main(sys.argv[1:])
