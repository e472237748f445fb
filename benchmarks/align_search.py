"""Inference-time search on the shapes suites: plain sampling vs best-of-N vs SMC steering at
equal model evaluations, with the shapes evaluator as the reward (and SMC's potential).

Every prompt's candidate 0 is its plain sample (the suite seed), so plain, best-of-m for every
m <= N (the first m candidates) and SMC compare pairwise on the same prompts and initial noise.

    python benchmarks/align_search.py --split test --n 4 --lams 10 \
        --out benchmarks/results/align/search-test.json
    python benchmarks/align_search.py --split dev --per-suite 4 --n 4 --lams 3,10,30 \
        --out benchmarks/results/align/search-dev.json
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from difflab.align.search import BestOfConfig, SMCConfig, net_potential, search
from difflab.data.suites import expand_suite, load_suite
from difflab.demo import DEMO_SAMPLING
from difflab.eval.commands import checkpoint_identity
from difflab.eval.provenance import provenance
from difflab.eval.stats import mcnemar_exact, wilson_interval
from difflab.evaluate import score_images
from difflab.io import write_json
from difflab.runtime import load
from difflab.runtime.artefacts import resolve


def accuracy(flags: list[int], cats: list[str]) -> dict:
    """Overall and per-category accuracy with 95% Wilson intervals."""
    out = {}
    for cat in ["overall", *sorted(set(cats))]:
        f = [x for x, c in zip(flags, cats, strict=True) if cat in ("overall", c)]
        out[cat] = {"accuracy": float(np.mean(f)), "k": int(sum(f)), "n": len(f),
                    "interval": list(wilson_interval(int(sum(f)), len(f)))}
    return out


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", default="shapes-base")
    ap.add_argument("--split", default="dev")
    ap.add_argument("--suites", default="single,binding,counting,spatial")
    ap.add_argument("--per-suite", type=int, default=0, help="first P prompts per suite (0: all)")
    ap.add_argument("--n", type=int, default=4, help="candidates = particles")
    ap.add_argument("--lams", default="10", help="SMC potential temperatures")
    ap.add_argument("--interval", type=int, default=1)
    ap.add_argument("--reward-net", default="", help="also SMC with this reward net as potential")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    pipe = load(args.base)
    specs = [s for name in args.suites.split(",")
             for s in load_suite(name)[:args.per_suite or None]]
    specs, seeds = expand_suite(specs, 1, 0, args.split)
    prompts, cats = [s.text for s in specs], [s.category for s in specs]
    config = DEMO_SAMPLING
    runs, timing = {}, {}
    t = time.perf_counter()
    _, best = search(pipe, prompts, seeds, config, "bestof", BestOfConfig(args.n), specs=specs,
                     progress=True)
    timing["bestof"] = time.perf_counter() - t
    rewards = np.array([r.rewards for r in best])  # (P, N); column 0 is the plain sample
    candidates = np.stack([r.candidates for r in best])  # (P, N, H, W, 3)
    chosen = {}
    for m in sorted({1, 2, args.n} | {2 ** j for j in range(args.n.bit_length())}):
        if m > args.n:
            continue
        top = rewards[:, :m].argmax(1)
        name = "plain" if m == 1 else f"bestof{m}"
        chosen[name] = candidates[np.arange(len(top)), top]
        runs[name] = {"nfe_per_image": m * config.nfe, "reward_calls_per_image": m,
                      "passed": [int(r == 1.0) for r in rewards[np.arange(len(top)), top]],
                      "reward": [float(r) for r in rewards[np.arange(len(top)), top]]}
    potentials = [("evaluator", float(lam), None) for lam in args.lams.split(",")]
    if args.reward_net:
        from difflab.align.rewardnet import load_reward_net

        net = net_potential(load_reward_net(args.reward_net))
        potentials.append(("reward_net", float(args.lams.split(",")[0]), net))
    for kind, lam, potential in potentials:
        name = f"smc{args.n}_lam{lam:g}" + ("_net" if kind == "reward_net" else "")
        t = time.perf_counter()
        _, res = search(pipe, prompts, seeds, config, "smc",
                        SMCConfig(args.n, lam, args.interval), reward=potential, specs=specs,
                        progress=True)
        timing[name] = time.perf_counter() - t
        # the chosen particle is scored by the evaluator whatever steered it
        from difflab.align.rewards import evaluator_reward

        chosen[name] = np.stack([r.image for r in res])
        final = evaluator_reward(chosen[name], specs)
        runs[name] = {"nfe_per_image": res[0].nfe, "potential": kind, "lam": lam,
                      "reward_calls_per_image": float(np.mean([r.reward_calls for r in res])),
                      "resamples_per_image": float(np.mean([r.resamples for r in res])),
                      "passed": [int(r == 1.0) for r in final],
                      "reward": [float(r) for r in final],
                      "mean_trace": np.mean([r.trace for r in res], 0).round(4).tolist()}
    for name, run in runs.items():
        run["accuracy"] = accuracy(run["passed"], cats)
        _, run["fd"], run["fd_floor"] = score_images(chosen[name], specs, seeds)
        run["mean_reward"] = float(np.mean(run["reward"]))
    plain = runs["plain"]["passed"]
    tests = {}
    for name, run in runs.items():
        if name != "plain":
            tests[f"{name} vs plain"] = mcnemar_exact(run["passed"], plain).__dict__
    for name in [n for n in runs if n.startswith("smc")]:
        tests[f"{name} vs bestof{args.n}"] = mcnemar_exact(
            runs[name]["passed"], runs[f"bestof{args.n}"]["passed"]).__dict__
    folder = resolve(args.base)
    write_json(args.out, {
        "provenance": provenance(args.split, str(folder), checkpoint_identity(folder),
                                 {"sampling": config.__dict__, "suites": args.suites,
                                  "per_suite": args.per_suite, "n": args.n,
                                  "interval": args.interval, "reward_net": args.reward_net}),
        "note": "shared 2-core machine (other jobs running); seconds are indicative only",
        "prompts": prompts, "categories": cats, "seeds": seeds,
        "seconds": {k: round(v, 1) for k, v in timing.items()}, "runs": runs,
        "paired_tests": tests})
    for name, run in runs.items():
        a = run["accuracy"]
        print(f"{name:<22} nfe {run['nfe_per_image']:>4}  reward {run['mean_reward']:.3f}  "
              f"FD {run['fd']:.1f}  "
              + "  ".join(f"{c} {100 * v['accuracy']:.1f}%" for c, v in a.items()))
    for name, t in tests.items():
        print(f"{name}: only first {t['only_a']}, only second {t['only_b']}, p {t['p_value']:.3g}")


if __name__ == "__main__":
    main(sys.argv[1:])
