"""SPO: step-aware preference optimisation of a LoRA adapter, ranked by the shapes evaluator.

"Aesthetic Post-Training Diffusion Models from Generic Preferences with Step-by-step Preference
Optimization" (SPO; Liang et al., 2024). At a few sampled steps of each trajectory, k candidate
next states are drawn from the same x_t by the current network's Gaussian transition (the
demo's Euler ancestral step, `difflab.align.ddpo.transition`), a step-aware reward scores each,
and the best and worst candidate form a preference pair at that step; the loss is the DPO loss
on the step's log-probabilities against the base (the net with its LoRA off):
-log sigmoid(beta ((log p(w) - log p_ref(w)) - (log p(l) - log p_ref(l)))). The trajectory then
continues from a candidate drawn at random, as in the paper.

Variant built here: the paper's step-aware preference model is a network trained on noisy
images; here the step-aware reward is the shapes evaluator's reward of the network's prediction
of x0 from each candidate (one extra model call per candidate), which needs no learned model.
Log-probabilities are per-dimension means, as in DDPO's and SPO's code, and computed in float32.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from difflab.align.ddpo import (
    TRAIN_IMAGES,
    check_chain,
    gaussian_logprob,
    train_steps_of,
    transition,
)
from difflab.align.dpo import check_suites
from difflab.config import ConfigError
from difflab.core.samplers import BatchNoise, initial_noise
from difflab.data.world import PromptSpec
from difflab.limits import check_float, check_int
from difflab.tune.methods import DEFAULT_TARGETS


@dataclass(frozen=True)
class SpoConfig:
    """An SPO run: prompts, candidates per step, DPO objective, LoRA and budget."""

    suites: tuple[str, ...] = ("binding", "counting", "spatial")
    candidates: int = 4  # next states drawn from each x_t at a compared step
    prompts: int = 8  # prompts (one dev image each) per iteration
    iterations: int = 100  # at most; the budget may stop it sooner
    train_steps: int = 6  # compared steps per trajectory (of the stochastic ones)
    beta: float = 10.0  # DPO's KL weight (the paper's)
    budget_minutes: float = 15.0
    lr: float = 1e-3
    rank: int = 4
    alpha: float = 4.0
    targets: str = DEFAULT_TARGETS
    seed: int = 0

    def __post_init__(self) -> None:
        check_suites(self.suites)
        check_int("candidates", self.candidates, 2, 256)
        check_int("prompts", self.prompts, 1, 1024)
        check_int("iterations", self.iterations, 1, 1_000_000)
        check_int("train_steps", self.train_steps, 1, 10_000)
        check_int("rank", self.rank, 1, 4096)
        check_float("beta", self.beta, 0.0, 1e7)
        check_float("budget_minutes", self.budget_minutes, 0.1, 10_000)
        check_float("lr", self.lr, 0.0, 1.0)
        check_float("alpha", self.alpha, 0.0, 1e6)


def spo_loss(lp_w: Tensor, lp_l: Tensor, ref_w: Tensor, ref_l: Tensor, beta: float) -> Tensor:
    """(B,) SPO's step-wise DPO loss from the log-probs of the preferred (w) and rejected (l)
    next states under the tuned and reference transitions."""
    return -F.logsigmoid(beta * ((lp_w - ref_w) - (lp_l - ref_l)))


@dataclass
class StepPairs:
    """Preference pairs at one step i: x_t (B, ...), preferred and rejected next states, and
    which rows have a pair (their candidates did not all score alike)."""

    i: int
    x: Tensor
    win: Tensor
    lose: Tensor
    keep: Tensor  # (B,) bool


@torch.no_grad()
def collect_step_pairs(pipe: Any, specs: Sequence[PromptSpec], seeds: Sequence[int],
                       config: Any, k: int, steps: Sequence[int], gen: torch.Generator,
                       score: Callable[[Tensor, list[PromptSpec]], np.ndarray] | None = None
                       ) -> tuple[list[StepPairs], Tensor, Any, dict, Tensor]:
    """Sample one trajectory per (spec, seed); at each step in `steps` draw k candidates from
    x_t and pair the best with the worst by `score` (default: the evaluator reward) of the
    network's x0 prediction from each. (pairs, final images, model, cond, sigmas)."""
    from difflab.align.rewards import evaluator_reward

    score = score or evaluator_reward
    texts = [s.text for s in specs]
    model, cond = pipe.denoiser(texts, config)
    model_k, cond_k = pipe.denoiser([t for t in texts for _ in range(k)], config)
    sigmas = pipe.sigmas(config).to(pipe.device)
    x = initial_noise(pipe.image_shape, seeds, device=pipe.device) * sigmas[0]
    noise = BatchNoise([s + 1_000_003 for s in seeds])
    b, pairs = len(specs), []
    rows_k = [s for s in specs for _ in range(k)]
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * x.new_ones(b), **cond)
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        mean, std = transition(model, x, denoised, sigmas[i], sigmas[i + 1])
        if i not in steps:
            x = mean + std * noise(x)
            continue
        z = torch.randn((b * k, *x.shape[1:]), generator=gen).to(x)
        cands = mean.repeat_interleave(k, 0) + std * z  # row p * k + j
        x0 = model_k(cands, sigmas[i + 1] * cands.new_ones(b * k), **cond_k)
        r = torch.as_tensor(score(x0.float().clamp(-1, 1), rows_k)).reshape(b, k)
        best, worst = r.argmax(1), r.argmin(1)
        cands = cands.reshape(b, k, *x.shape[1:])
        ar = torch.arange(b)
        pairs.append(StepPairs(i, x, cands[ar, best], cands[ar, worst],
                               r.max(1).values > r.min(1).values))
        x = cands[ar, torch.randint(0, k, (b,), generator=gen)]
    return pairs, x, model, cond, sigmas


def spo_pass(adaptation: Any, pairs: Sequence[StepPairs], model: Any, cond: dict,
             sigmas: Tensor, beta: float) -> tuple[float, float, int]:
    """Accumulate the gradient of the mean SPO loss over the kept pairs of every step;
    (loss, share of pairs the tuned transition already prefers correctly, pairs)."""
    n = sum(int(p.keep.sum()) for p in pairs)
    total = prefers = 0.0
    for p in pairs:
        if not p.keep.any():
            continue
        x, s, s_next = p.x, sigmas[p.i], sigmas[p.i + 1]
        denoised = model(x, s * x.new_ones(x.shape[0]), **cond)
        mean, std = transition(model, x, denoised, s, s_next)
        with torch.no_grad(), adaptation.peft_model.disable_adapter():
            ref = model(x, s * x.new_ones(x.shape[0]), **cond)
            mean_ref, _ = transition(model, x, ref, s, s_next)
        m = p.keep
        lw, ll = gaussian_logprob(p.win[m], mean[m], std), gaussian_logprob(p.lose[m], mean[m], std)
        rw = gaussian_logprob(p.win[m], mean_ref[m], std)
        rl = gaussian_logprob(p.lose[m], mean_ref[m], std)
        loss = spo_loss(lw, ll, rw, rl, beta)
        (loss.sum() / n).backward()
        total += loss.sum().item() / n
        prefers += ((lw - rw) > (ll - rl)).float().sum().item() / n
    return total, prefers, n


@dataclass
class SpoResult:
    """A finished run: what save_adapter writes, and its curves."""

    config: Any  # the LoRA's TuneConfig
    delta: Any
    adaptation: Any
    trainable: int
    seconds: float
    losses: list[float]
    align: SpoConfig
    steps_done: int  # iterations
    rewards: list[float] = field(default_factory=list)  # per iteration: final images' reward
    pairs: list[int] = field(default_factory=list)  # per iteration: step pairs trained on


def _batch(specs: Sequence[PromptSpec], cfg: SpoConfig, it: int
           ) -> tuple[list[PromptSpec], list[int], torch.Generator]:
    """Iteration `it`'s prompts, dev seeds and candidate generator, drawn from the run seed."""
    from difflab.data.suites import suite_seeds

    gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + it)
    idx = torch.randint(0, len(specs), (cfg.prompts,), generator=gen).tolist()
    images = torch.randint(0, TRAIN_IMAGES, (cfg.prompts,), generator=gen).tolist()
    rows = [specs[i] for i in idx]
    return rows, [suite_seeds(s, 1, k, "dev")[0] for s, k in zip(rows, images, strict=True)], gen


def align_spo(pipe: Any, cfg: SpoConfig, sampling: Any, progress: bool = True,
              log: Callable[[str], None] | None = None) -> SpoResult:
    """Train a LoRA on `pipe`'s network by SPO on dev-split prompts of `cfg.suites` until
    `cfg.iterations` or the budget; the network is changed in place."""
    from difflab.align.rewards import evaluator_reward
    from difflab.data.suites import load_suite
    from difflab.tune.fit import TuneConfig
    from difflab.tune.methods import prepare_peft, trainable_count

    check_chain(sampling)
    start = time.perf_counter()
    specs = [s for name in cfg.suites for s in load_suite(name)]
    lora = TuneConfig(method="lora", concept="", images=len(specs), steps=cfg.iterations,
                      lr=cfg.lr, batch_size=cfg.prompts, rank=cfg.rank, alpha=cfg.alpha,
                      targets=cfg.targets, prior_weight=0.0, seed=cfg.seed)
    torch.manual_seed(cfg.seed)  # peft draws the LoRA initialisation from the global generator
    adaptation = prepare_peft(pipe.net, lora)
    opt = torch.optim.AdamW(adaptation.params, lr=cfg.lr, weight_decay=0.0)
    adaptation.net.eval()
    losses, rewards, counts, done = [], [], [], 0
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.iterations, desc="spo", unit="it")
    n_stochastic = sampling.steps - 1
    for it in range(cfg.iterations):
        if time.perf_counter() - start > 60 * cfg.budget_minutes:
            break
        rows, seeds, gen = _batch(specs, cfg, it)
        steps = train_steps_of(n_stochastic, cfg.train_steps, gen)
        pairs, image, model, cond, sigmas = collect_step_pairs(
            pipe, rows, seeds, sampling, cfg.candidates, steps, gen)
        opt.zero_grad(set_to_none=True)
        loss, prefers, n = spo_pass(adaptation, pairs, model, cond, sigmas, cfg.beta)
        if n:
            torch.nn.utils.clip_grad_norm_(adaptation.params, 1.0)
            opt.step()
        losses.append(loss)
        rewards.append(float(evaluator_reward(image.float().clamp(-1, 1), rows).mean()))
        counts.append(n)
        done = it + 1
        if bar is not None:
            bar.update(1)
            bar.set_postfix(reward=f"{rewards[-1]:.3f}", mean10=f"{np.mean(rewards[-10:]):.3f}",
                            pairs=n)
        if log and it % 10 == 0:
            log(f"spo iteration {it}: reward {np.mean(rewards[-10:]):.3f} (mean of last 10), "
                f"{n} step pairs, prefers winner {prefers:.2f} "
                f"({time.perf_counter() - start:.0f} s)")
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - start
    if done == 0:
        raise ConfigError(f"the budget of {cfg.budget_minutes:g} min ran out before the first "
                          "iteration; raise --budget-minutes")
    lora = TuneConfig(**{**asdict(lora), "steps": done})
    return SpoResult(lora, adaptation.delta(), adaptation, trainable_count(adaptation),
                     seconds, losses, cfg, done, rewards, counts)
