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
                              "make the preference pairs: " + ", ".join(ALIGN_SUITES)),
    images: int = typer.Option(4, help="dev images per prompt, ranked into one pair"),
    budget_minutes: float = typer.Option(20.0, help="wall-clock budget: pairs and training"),
    steps: int = typer.Option(400, help="optimisation steps at most"),
    beta: float = typer.Option(2000.0, help="DPO's KL weight beta"),
    lr: float = typer.Option(1e-3, help="learning rate"),
    batch_size: int = typer.Option(8, help="pairs per step"),
    rank: int = typer.Option(4, help="LoRA rank"),
    seed: int = typer.Option(0, help="seed of the data draws and LoRA initialisation"),
    out: str = typer.Option(..., help="new adapter folder (`difflab sample BASE --adapter OUT`)"),
) -> None:
    """Align BASE by Diffusion-DPO on evaluator-ranked pairs: `difflab align shapes-base
    --method dpo --suite binding,counting,spatial --budget-minutes 20 --out runs/dpo`."""
    from difflab.align.dpo import AlignConfig, align_dpo
    from difflab.demo import DEMO_SAMPLING
    from difflab.runtime import load
    from difflab.tune.adapters import base_reference, save_adapter

    suites = tuple(s.strip() for s in suite.split(",") if s.strip())
    cfg = AlignConfig(method=method, suites=suites, images=images, beta=beta, steps=steps,
                      budget_minutes=budget_minutes, lr=lr, batch_size=batch_size, rank=rank,
                      seed=seed)
    if Path(out).exists() and (not Path(out).is_dir() or any(Path(out).iterdir())):
        raise ConfigError(f"--out {out} exists and is not an empty folder; choose a new one")
    reference = base_reference(base)
    pipe = load(base)
    result = align_dpo(pipe, cfg, DEMO_SAMPLING, log=typer.echo)
    curve = [round(sum(result.losses[i:i + 25]) / len(result.losses[i:i + 25]), 4)
             for i in range(0, len(result.losses), 25)]
    save_adapter(result, out, reference,
                 {"pairs": result.pairs, "steps_done": result.steps_done,
                  "pair_seconds": round(result.pair_seconds, 1), "loss_curve": curve},
                 sections={"align": {**asdict(cfg), "sampling": asdict(DEMO_SAMPLING)}})
    typer.echo(f"aligned by {method} on {result.pairs} pairs: {result.steps_done} steps, "
               f"{result.seconds / 60:.1f} min, final loss {curve[-1] if curve else 'n/a'}; "
               f"wrote {out}/")
