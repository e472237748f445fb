"""`difflab align`: tune a base model towards the shapes evaluator's verdicts; writes an adapter."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import typer

from difflab.align.dpo import ALIGN_METHODS, ALIGN_SUITES
from difflab.config import ConfigError


def align_command(
    base: str = typer.Argument(..., help="base model: a shipped name (shapes-base), run or "
                               "checkpoint folder"),
    method: str = typer.Option("dpo", help=", ".join(ALIGN_METHODS)),
    suite: str = typer.Option("binding,counting,spatial", help="dev-split suites whose prompts "
                              "it tunes on: " + ", ".join(ALIGN_SUITES)),
    images: int = typer.Option(None, help="dpo: dev images per prompt, ranked into one pair "
                               "(default 4); raft: per prompt per round (default 8)"),
    rounds: int = typer.Option(1, help="raft: rounds of sampling, filtering and fine-tuning"),
    tuner: str = typer.Option("dreambooth", help="raft: what fine-tunes on the kept samples: "
                              "dreambooth (every weight, prior loss) or lora"),
    prior_weight: float = typer.Option(1.0, help="raft: weight of the class-prior "
                                       "preservation loss on single-object renders"),
    uncond_weight: float = typer.Option(0.0, help="raft: weight of the loss holding the "
                                        "unconditional branch to the base's"),
    budget_minutes: float = typer.Option(20.0, help="wall-clock budget (dpo: pairs and "
                                         "training; raft: no round starts that would pass "
                                         "it)"),
    steps: int = typer.Option(None, help="optimisation steps (ddpo, spo: iterations; raft: per "
                              "round) at most (default: dpo 400, draft 200, ddpo and spo 100, "
                              "raft 600)"),
    beta: float = typer.Option(None, help="dpo, spo: KL weight beta (default: dpo 2000, spo "
                               "10)"),
    k: int = typer.Option(1, help="draft: sampling steps the gradient flows through (the last "
                          "K)"),
    reward_net: str = typer.Option("", help="draft: the reward net folder it climbs "
                                   "(benchmarks/align_rewardnet.py writes one)"),
    penalty: float = typer.Option(0.0, help="draft: weight of the LoRA weights' squared norm"),
    group: int = typer.Option(4, help="ddpo: images per prompt, normalised against each "
                              "other; spo: candidate next states per step"),
    prompts: int = typer.Option(4, help="ddpo, spo: prompts per iteration"),
    train_steps: int = typer.Option(6, help="ddpo, spo: sampler steps per iteration trained "
                                    "on"),
    inner: int = typer.Option(1, help="ddpo: optimisation passes over each iteration's "
                              "samples"),
    clip: float = typer.Option(1e-4, help="ddpo: PPO clip range of the importance ratio"),
    kl: float = typer.Option(0.0, help="ddpo: weight of the KL to the base's transition"),
    lr: float = typer.Option(None, help="learning rate (default: raft 3e-4, else 1e-3)"),
    batch_size: int = typer.Option(None, help="pairs (dpo, default 8) or prompts (draft, "
                                   "default 4) per step"),
    rank: int = typer.Option(4, help="LoRA rank"),
    seed: int = typer.Option(0, help="seed of the data draws and LoRA initialisation"),
    out: str = typer.Option(..., help="new adapter folder (`difflab sample BASE --adapter OUT`)"),
) -> None:
    """Align BASE by Diffusion-DPO on evaluator-ranked pairs, DRaFT-K on a reward net, DDPO or
    SPO on the evaluator's reward, or RAFT on the samples the evaluator passes:
    `difflab align shapes-base --method dpo --budget-minutes 20 --out runs/dpo`."""
    from difflab.demo import DEMO_SAMPLING
    from difflab.runtime import load
    from difflab.tune.adapters import base_reference

    suites = tuple(s.strip() for s in suite.split(",") if s.strip())
    if method not in ALIGN_METHODS:
        raise ConfigError(f"unknown alignment method {method!r}; valid: "
                          + ", ".join(ALIGN_METHODS))
    if method != "raft":
        lr = 1e-3 if lr is None else lr
        images = 4 if images is None else images
    if method == "raft":
        from difflab.align.raft import RaftConfig

        cfg = RaftConfig(suites=suites, images=8 if images is None else images, rounds=rounds,
                         steps=600 if steps is None else steps, tuner=tuner,
                         lr=3e-4 if lr is None else lr,
                         batch_size=8 if batch_size is None else batch_size, rank=rank,
                         prior_weight=prior_weight, uncond_weight=uncond_weight,
                         budget_minutes=budget_minutes, seed=seed)
    elif method == "ddpo":
        from difflab.align.ddpo import DdpoConfig, check_chain

        cfg = DdpoConfig(suites=suites, group=group, prompts=prompts,
                         iterations=100 if steps is None else steps, train_steps=train_steps,
                         inner=inner, clip=clip, kl=kl, budget_minutes=budget_minutes, lr=lr,
                         rank=rank, seed=seed)
        check_chain(DEMO_SAMPLING)
    elif method == "spo":
        from difflab.align.ddpo import check_chain
        from difflab.align.spo import SpoConfig

        cfg = SpoConfig(suites=suites, candidates=group, prompts=prompts,
                        iterations=100 if steps is None else steps, train_steps=train_steps,
                        beta=10.0 if beta is None else beta, budget_minutes=budget_minutes,
                        lr=lr, rank=rank, seed=seed)
        check_chain(DEMO_SAMPLING)
    elif method == "draft":
        from difflab.align.draft import DraftConfig, check_sampling

        cfg = DraftConfig(suites=suites, k=k, steps=200 if steps is None else steps,
                          budget_minutes=budget_minutes, lr=lr, penalty=penalty,
                          batch_size=4 if batch_size is None else batch_size, rank=rank,
                          seed=seed)
        check_sampling(DEMO_SAMPLING, k)
        if not reward_net:
            raise ConfigError("--method draft climbs a reward net: give --reward-net DIR")
        from difflab.align.rewardnet import load_reward_net

        net = load_reward_net(reward_net)  # a bad folder fails before the base loads
    else:
        from difflab.align.dpo import AlignConfig

        cfg = AlignConfig(method=method, suites=suites, images=images,
                          beta=2000.0 if beta is None else beta,
                          steps=400 if steps is None else steps, budget_minutes=budget_minutes,
                          lr=lr, batch_size=8 if batch_size is None else batch_size, rank=rank,
                          seed=seed)
    if Path(out).exists() and (not Path(out).is_dir() or any(Path(out).iterdir())):
        raise ConfigError(f"--out {out} exists and is not an empty folder; choose a new one")
    reference = base_reference(base)
    if method == "raft":
        _align_raft(base, cfg, reference, out)
        return
    if method == "ddpo":
        from difflab.align.ddpo import align_ddpo, save_policy_run

        result = align_ddpo(load(base), cfg, DEMO_SAMPLING, log=typer.echo)
        save_policy_run(result, out, reference, DEMO_SAMPLING, "ddpo")
        _report_policy(result, "ddpo", out)
        return
    if method == "spo":
        from difflab.align.ddpo import save_policy_run
        from difflab.align.spo import align_spo

        result = align_spo(load(base), cfg, DEMO_SAMPLING, log=typer.echo)
        save_policy_run(result, out, reference, DEMO_SAMPLING, "spo",
                        {"step_pairs": sum(result.pairs)})
        _report_policy(result, "spo", out)
        return
    if method == "draft":
        from difflab.align.draft import align_draft, save_draft

        result = align_draft(load(base), net, cfg, DEMO_SAMPLING, log=typer.echo)
        save_draft(result, out, reference, DEMO_SAMPLING, reward_net)
        first, last = result.rewards[:10], result.rewards[-10:]
        typer.echo(f"aligned by draft (k={k}): {result.steps_done} steps, "
                   f"{result.seconds / 60:.1f} min, reward net score {sum(first) / len(first):.3f}"
                   f" (first 10 steps) -> {sum(last) / len(last):.3f} (last 10); wrote {out}/")
        return
    _align_dpo(base, cfg, reference, out)


def _report_policy(result, method: str, out: str) -> None:
    """The closing line of a DDPO or SPO run: iterations, time, reward first vs last."""
    first, last = result.rewards[:5], result.rewards[-5:]
    typer.echo(f"aligned by {method}: {result.steps_done} iterations, "
               f"{result.seconds / 60:.1f} min, evaluator reward {sum(first) / len(first):.3f} "
               f"(first 5 iterations) -> {sum(last) / len(last):.3f} (last 5); wrote {out}/")


def _align_dpo(base: str, cfg, reference: dict, out: str) -> None:
    """Diffusion-DPO: pairs and training, then the adapter folder."""
    from difflab.align.dpo import align_dpo
    from difflab.demo import DEMO_SAMPLING
    from difflab.runtime import load
    from difflab.tune.adapters import save_adapter

    pipe = load(base)
    result = align_dpo(pipe, cfg, DEMO_SAMPLING, log=typer.echo)
    curve = [round(sum(result.losses[i:i + 25]) / len(result.losses[i:i + 25]), 4)
             for i in range(0, len(result.losses), 25)]
    save_adapter(result, out, reference,
                 {"pairs": result.pairs, "steps_done": result.steps_done,
                  "pair_seconds": round(result.pair_seconds, 1), "loss_curve": curve},
                 sections={"align": {**asdict(cfg), "sampling": asdict(DEMO_SAMPLING)}})
    typer.echo(f"aligned by {cfg.method} on {result.pairs} pairs: {result.steps_done} steps, "
               f"{result.seconds / 60:.1f} min, final loss {curve[-1] if curve else 'n/a'}; "
               f"wrote {out}/")


def _align_raft(base: str, cfg, reference: dict, out: str) -> None:
    """RAFT: rounds of sampling, filtering and fine-tuning, then the adapter folder."""
    from difflab.align.raft import align_raft
    from difflab.demo import DEMO_SAMPLING
    from difflab.runtime import load
    from difflab.tune.adapters import save_adapter

    result = align_raft(load(base), cfg, DEMO_SAMPLING, log=typer.echo)
    save_adapter(result, out, reference, {"rounds": [asdict(r) for r in result.rounds]},
                 sections={"align": {"method": "raft", **asdict(cfg),
                                     "sampling": asdict(DEMO_SAMPLING)}})
    kept = sum(sum(r.kept.values()) for r in result.rounds)
    sampled = sum(sum(r.sampled.values()) for r in result.rounds)
    typer.echo(f"aligned by raft: {len(result.rounds)} round(s), kept {kept} of {sampled} "
               f"samples, {result.seconds / 60:.1f} min; wrote {out}/")
