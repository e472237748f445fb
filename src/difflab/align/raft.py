"""Reward-ranked fine-tuning: keep the samples the evaluator passes, fine-tune on them, repeat.

"RAFT: Reward rAnked FineTuning for Generative Foundation Model Alignment" (Dong et al., 2023):
each round samples `images` dev images of every prompt of the tuned suites from the current
model, keeps those the shapes evaluator passes (the reward's maximum, 1; RAFT ranks and keeps a
top share, and with an exact pass/fail judge that share is the passing images), and fine-tunes on
them with the base's own denoising loss (`difflab.tune.fit.tune`). The fine-tuning is
DreamBooth's (every weight, plus the class-prior preservation loss on exact renders of
single-object prompts), so what the model already draws well is held while the composed prompts
move; `method="lora"` trains a LoRA instead. Samples come from dev images k >= FIRST_IMAGE, so
the dev images a recipe is chosen on (k < FIRST_IMAGE) are never trained on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from difflab.align.dpo import check_suites
from difflab.config import ConfigError
from difflab.limits import check_float, check_int, check_seed
from difflab.tune.methods import DEFAULT_TARGETS, Delta

FIRST_IMAGE = 8  # dev images 0..7 of every prompt stay for choosing settings
RAFT_TUNERS: tuple[str, ...] = ("dreambooth", "lora")


@dataclass(frozen=True)
class RaftConfig:
    """A RAFT run: sampling per round, the fine-tuning recipe, rounds and budget."""

    suites: tuple[str, ...] = ("binding", "counting", "spatial")
    images: int = 8  # dev images sampled per prompt per round
    rounds: int = 1
    steps: int = 600  # fine-tuning steps per round
    tuner: str = "dreambooth"  # every weight with the prior loss, or a LoRA
    lr: float = 3e-4
    batch_size: int = 8
    prior_weight: float = 1.0  # the class-prior preservation loss (single-object renders)
    uncond_weight: float = 0.0  # the loss holding the unconditional branch to the base's
    rank: int = 4  # LoRA
    targets: str = DEFAULT_TARGETS  # LoRA
    budget_minutes: float = 30.0  # wall clock for every round's sampling and training
    seed: int = 0

    def __post_init__(self) -> None:
        check_suites(self.suites)
        if self.tuner not in RAFT_TUNERS:
            raise ConfigError(f"unknown RAFT tuner {self.tuner!r}; valid: "
                              + ", ".join(RAFT_TUNERS))
        check_int("images", self.images, 1, 10_000)
        check_int("rounds", self.rounds, 1, 100)
        check_int("steps", self.steps, 1, 1_000_000)
        check_int("batch_size", self.batch_size, 1, 4096)
        check_int("rank", self.rank, 1, 4096)
        check_float("lr", self.lr, 0.0, 1.0)
        check_float("prior_weight", self.prior_weight, 0.0, 100.0)
        check_float("uncond_weight", self.uncond_weight, 0.0, 100.0)
        check_float("budget_minutes", self.budget_minutes, 0.1, 10_000)
        check_seed("seed", self.seed)

    def tune_config(self, kept: int, round_index: int) -> Any:
        """The fine-tuning of one round, as `difflab.tune.fit.tune` runs it."""
        from difflab.tune.fit import TuneConfig

        return TuneConfig(method=self.tuner, concept="", images=kept, steps=self.steps,
                          lr=self.lr, batch_size=self.batch_size, rank=self.rank,
                          alpha=float(self.rank), targets=self.targets,
                          prior_weight=self.prior_weight, uncond_weight=self.uncond_weight,
                          seed=self.seed * 1_000 + round_index)


@dataclass
class RoundLog:
    """One round: what was sampled and kept, per category, and what it cost."""

    sampled: dict[str, int]
    kept: dict[str, int]
    sample_seconds: float
    tune_seconds: float
    final_loss: float


@dataclass
class RaftResult:
    """A finished run: the change to the base (what save_adapter writes) and its rounds."""

    config: Any  # the TuneConfig of the last round (adapter folders record it under "tune")
    delta: Delta
    adaptation: Any
    trainable: int
    seconds: float
    align: RaftConfig
    rounds: list[RoundLog] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)


def passing_samples(pipe: Any, cfg: RaftConfig, sampling: Any, round_index: int,
                    progress: bool = True) -> tuple[np.ndarray, list[str], dict, dict]:
    """Sample `cfg.images` dev images of every prompt of the suites (round r draws images
    FIRST_IMAGE + r * images onwards) and keep those the evaluator passes: (images, prompts,
    sampled per category, kept per category)."""
    from difflab.align.rewards import evaluator_reward
    from difflab.data.suites import expand_suite, load_suite

    specs = [s for name in cfg.suites for s in load_suite(name)]
    first = FIRST_IMAGE + round_index * cfg.images
    rows, seeds = expand_suite(specs, cfg.images, first, "dev")
    images = pipe.generate([s.text for s in rows], seeds, sampling, progress=progress)
    keep = np.flatnonzero(evaluator_reward(images, rows) == 1.0)
    sampled, kept = _count(rows, range(len(rows))), _count(rows, keep)
    return images[keep], [rows[i].text for i in keep], sampled, kept


def _count(rows: list, index: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for i in index:
        out[rows[i].category] = out.get(rows[i].category, 0) + 1
    return out


def align_raft(pipe: Any, cfg: RaftConfig, sampling: Any, progress: bool = True,
               log: Callable[[str], None] | None = None) -> RaftResult:
    """Run `cfg.rounds` rounds of sampling, filtering and fine-tuning on `pipe` (its network is
    changed in place); the change is the final weights minus the base's."""
    from difflab.tune.fit import tune

    start = time.perf_counter()
    if cfg.tuner == "lora" and cfg.rounds > 1:
        raise ConfigError("RAFT with a LoRA runs one round (a LoRA's rounds do not add up to "
                          "one LoRA); use --rounds 1 or the dreambooth tuner")
    base = {k: v.detach().clone() for k, v in pipe.net.named_parameters()}
    rounds, losses, result = [], [], None
    for r in range(cfg.rounds):
        spent = time.perf_counter() - start
        if r and spent + spent / r > 60 * cfg.budget_minutes:  # another round would overrun
            if log:
                log(f"stopping after {r} round(s): another would pass the "
                    f"{cfg.budget_minutes:g}-minute budget")
            break
        t = time.perf_counter()
        images, prompts, sampled, kept = passing_samples(pipe, cfg, sampling, r, progress)
        sample_seconds = time.perf_counter() - t
        if log:
            log(f"round {r}: kept {len(prompts)} of {sum(sampled.values())} samples "
                f"({', '.join(f'{k} {kept.get(k, 0)}/{n}' for k, n in sampled.items())}) in "
                f"{sample_seconds:.0f} s")
        if not prompts:
            raise ConfigError("the evaluator passed none of the samples; nothing to fine-tune "
                              "on (sample more --images per prompt)")
        result = tune(pipe, cfg.tune_config(len(prompts), r), images, prompts, progress)
        if cfg.tuner == "dreambooth":  # the next round samples from (and tunes) the tuned net
            pipe.net.requires_grad_(False)
        losses += result.losses
        rounds.append(RoundLog(sampled, kept, round(sample_seconds, 1),
                               round(result.seconds, 1), result.losses[-1]))
        if log:
            log(f"round {r}: {cfg.steps} steps in {result.seconds:.0f} s, final loss "
                f"{result.losses[-1]:.4f} ({time.perf_counter() - start:.0f} s in all)")
    assert result is not None
    if cfg.tuner == "dreambooth":
        with torch.no_grad():
            dense = {k: (v.detach() - base[k]) for k, v in pipe.net.named_parameters()}
        delta = Delta(dense={k: v for k, v in dense.items() if bool(v.any())})
    else:
        delta = result.delta
    return RaftResult(result.config, delta, result.adaptation, result.trainable,
                      time.perf_counter() - start, cfg, rounds, losses)
