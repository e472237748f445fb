"""Diffusion-DPO on a LoRA adapter, with pairs ranked by the shapes evaluator.

"Diffusion Model Alignment Using Direct Preference Optimization" (Wallace et al., 2023), Eq. 14:
for a preferred image x_w and a rejected one x_l of the same prompt, noised with the same noise
at the same t, the loss is -log sigmoid(-beta/2 ((e_w - e_w_ref) - (e_l - e_l_ref))), where e is
the weighted denoising error of the tuned network and e_ref that of the frozen base (here the
same network with its LoRA switched off). It lowers the error on x_w relative to the base more
than on x_l. The adapter goes through difflab's peft path (`difflab.tune.methods.prepare_peft`)
and is saved as an adapter folder (`difflab.tune.adapters.save_adapter`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from difflab.config import ConfigError
from difflab.limits import check_float, check_int, check_seed
from difflab.tune.methods import DEFAULT_TARGETS

# dpo is configured here, the others in difflab.align.<name>
ALIGN_METHODS: tuple[str, ...] = ("dpo", "draft", "ddpo", "spo", "raft")
ALIGN_SUITES: tuple[str, ...] = ("single", "binding", "counting", "spatial")


def check_suites(suites: tuple[str, ...]) -> None:
    """Refuse an empty list or a suite alignment cannot tune on, in one line."""
    if not suites:
        raise ConfigError("--suite names no suite; valid: " + ", ".join(ALIGN_SUITES))
    for s in suites:
        if s not in ALIGN_SUITES:
            raise ConfigError(f"--suite {s!r} cannot be tuned on; valid: "
                              + ", ".join(ALIGN_SUITES))


@dataclass(frozen=True)
class AlignConfig:
    """A Diffusion-DPO run: pair data, objective, LoRA and budget."""

    method: str = "dpo"
    suites: tuple[str, ...] = ("binding", "counting", "spatial")
    images: int = 4  # dev images per prompt, ranked by the evaluator into one pair
    beta: float = 2000.0  # DPO's KL weight (the paper: 2000-5000 on pixel-mean errors)
    steps: int = 400  # at most; the budget may stop it sooner
    budget_minutes: float = 20.0  # wall clock for pair generation and training together
    lr: float = 1e-3
    batch_size: int = 8  # pairs per step
    rank: int = 4
    alpha: float = 4.0
    targets: str = DEFAULT_TARGETS
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in ALIGN_METHODS:
            raise ConfigError(f"unknown alignment method {self.method!r}; valid: "
                              + ", ".join(ALIGN_METHODS))
        if self.method != "dpo":
            raise ConfigError(f"AlignConfig configures dpo; {self.method} has its own config")
        check_suites(self.suites)
        check_int("images", self.images, 2, 999)
        check_int("steps", self.steps, 1, 1_000_000)
        check_int("batch_size", self.batch_size, 1, 4096)
        check_int("rank", self.rank, 1, 4096)
        check_float("beta", self.beta, 0.0, 1e7)
        check_float("budget_minutes", self.budget_minutes, 0.1, 10_000)
        check_float("lr", self.lr, 0.0, 1.0)
        check_float("alpha", self.alpha, 0.0, 1e6)
        check_seed("seed", self.seed)


def dpo_loss(err_w: Tensor, err_l: Tensor, ref_w: Tensor, ref_l: Tensor, beta: float
             ) -> Tensor:
    """(B,) Diffusion-DPO loss (Wallace et al., 2023, Eq. 14) from per-sample denoising errors
    of the tuned and reference networks on the preferred (w) and rejected (l) images."""
    return -F.logsigmoid(-0.5 * beta * ((err_w - ref_w) - (err_l - ref_l)))


@dataclass
class Pairs:
    """Preference pairs: uint8 images (P, H, W, 3) preferred and rejected, their prompts and
    evaluator rewards."""

    win: np.ndarray
    lose: np.ndarray
    prompts: list[str]
    reward_win: np.ndarray
    reward_lose: np.ndarray


def make_pairs(pipe: Any, cfg: AlignConfig, sampling: Any, progress: bool = True) -> Pairs:
    """Sample `cfg.images` dev images of every prompt of `cfg.suites`, score them with the
    evaluator, and pair each prompt's best with its worst (prompts whose images all score alike
    give no pair)."""
    from difflab.align.rewards import evaluator_reward
    from difflab.data.suites import expand_suite, load_suite

    specs = [s for name in cfg.suites for s in load_suite(name)]
    rows, seeds = expand_suite(specs, cfg.images, 0, "dev")  # image-major: k * P + p
    images = pipe.generate([s.text for s in rows], seeds, sampling, progress=progress)
    reward = evaluator_reward(images, rows).reshape(cfg.images, len(specs))
    images = images.reshape(cfg.images, len(specs), *images.shape[1:])
    best, worst = reward.argmax(0), reward.argmin(0)
    keep = np.flatnonzero(reward.max(0) > reward.min(0))
    if len(keep) == 0:
        raise ConfigError("every prompt's images scored alike; no preference pairs (sample "
                          "more --images per prompt)")
    return Pairs(images[best[keep], keep], images[worst[keep], keep],
                 [specs[p].text for p in keep], reward[best[keep], keep],
                 reward[worst[keep], keep])


def _errors(pipe: Any, net: Any, x0: Tensor, noise: Tensor, sigma: Tensor,
            cond: dict[str, Tensor]) -> Tensor:
    """(B,) the process's weighted denoising error of `net`."""
    x_in, t = pipe.process.net_input(x0, noise, sigma)
    out = net(x_in, t, **cond)
    err = (out.float() - pipe.process.target(x0, noise, sigma).float()).pow(2).flatten(1)
    return pipe.process.loss_weight(sigma).float() * err.mean(1)


def dpo_step_loss(pipe: Any, adaptation: Any, win: Tensor, lose: Tensor,
                  prompts: Sequence[str], beta: float, gen: torch.Generator
                  ) -> tuple[Tensor, Tensor]:
    """(loss, share of pairs where the tuned net already prefers the winner) for one batch;
    winner and loser share noise and t, the reference is the net with its adapter off."""
    b = len(prompts)
    sigma = pipe.process.sample_sigma(b, generator=gen)
    noise = torch.randn(win.shape, generator=gen)
    cond = pipe.condition(list(prompts))
    x0 = torch.cat([win, lose])
    two = {k: torch.cat([v, v]) for k, v in cond.items()}
    err = _errors(pipe, adaptation.net, x0, torch.cat([noise, noise]), sigma.repeat(2), two)
    with torch.no_grad(), adaptation.peft_model.disable_adapter():
        ref = _errors(pipe, adaptation.net, x0, torch.cat([noise, noise]), sigma.repeat(2), two)
    loss = dpo_loss(err[:b], err[b:], ref[:b], ref[b:], beta)
    prefers = ((err[:b] - ref[:b]) < (err[b:] - ref[b:])).float().mean()
    return loss.mean(), prefers


@dataclass
class AlignResult:
    """A finished run: what save_adapter writes, and its curves."""

    config: Any  # the LoRA's TuneConfig (what adapter folders record under "tune")
    delta: Any
    adaptation: Any
    trainable: int
    seconds: float
    losses: list[float]
    align: AlignConfig
    pairs: int
    steps_done: int
    pair_seconds: float
    preference: list[float]  # per step: share of the batch's pairs the net prefers correctly


def align_dpo(pipe: Any, cfg: AlignConfig, sampling: Any, progress: bool = True,
              log: Callable[[str], None] | None = None, pairs: Pairs | None = None
              ) -> AlignResult:
    """Generate evaluator-ranked pairs on the dev split (unless given), then train a LoRA on
    `pipe`'s network by Diffusion-DPO until `cfg.steps` or the budget; the network is changed
    in place."""
    from difflab.tune.fit import TuneConfig, _to_tensor
    from difflab.tune.methods import prepare_peft, trainable_count

    start = time.perf_counter()
    pairs = pairs or make_pairs(pipe, cfg, sampling, progress)
    pair_seconds = time.perf_counter() - start
    if log:
        log(f"{len(pairs.prompts)} pairs in {pair_seconds:.0f} s (reward "
            f"{pairs.reward_win.mean():.3f}"
            f" preferred vs {pairs.reward_lose.mean():.3f} rejected)")
    lora = TuneConfig(method="lora", concept="", images=len(pairs.prompts), steps=cfg.steps,
                      lr=cfg.lr, batch_size=cfg.batch_size, rank=cfg.rank, alpha=cfg.alpha,
                      targets=cfg.targets, prior_weight=0.0, seed=cfg.seed)
    torch.manual_seed(cfg.seed)  # peft draws the LoRA initialisation from the global generator
    adaptation = prepare_peft(pipe.net, lora)
    opt = torch.optim.AdamW(adaptation.params, lr=cfg.lr, weight_decay=0.0)
    win, lose = _to_tensor(pairs.win), _to_tensor(pairs.lose)
    losses, preference, steps_done = [], [], 0
    adaptation.net.train()
    for step in range(cfg.steps):
        if time.perf_counter() - start > 60 * cfg.budget_minutes:
            break
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        idx = torch.randint(0, len(win), (cfg.batch_size,), generator=gen)
        loss, prefers = dpo_step_loss(pipe, adaptation, win[idx], lose[idx],
                                      [pairs.prompts[i] for i in idx.tolist()], cfg.beta, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(adaptation.params, 1.0)
        opt.step()
        losses.append(loss.item())
        preference.append(prefers.item())
        steps_done = step + 1
        if log and step % 25 == 0:
            log(f"dpo step {step}: loss {np.mean(losses[-25:]):.4f}, prefers winner "
                f"{np.mean(preference[-25:]):.2f} ({time.perf_counter() - start:.0f} s)")
    adaptation.net.eval()
    seconds = time.perf_counter() - start
    if steps_done == 0:  # an untrained adapter is the base: refuse rather than write one
        raise ConfigError(f"the budget of {cfg.budget_minutes:g} min ran out while making the "
                          f"pairs ({pair_seconds:.0f} s): no training step; raise "
                          "--budget-minutes")
    lora = TuneConfig(**{**asdict(lora), "steps": steps_done})
    return AlignResult(lora, adaptation.delta(), adaptation, trainable_count(adaptation),
                       seconds, losses, cfg, len(pairs.prompts), steps_done, pair_seconds,
                       preference)
