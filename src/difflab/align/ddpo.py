"""DDPO: policy-gradient tuning of a LoRA adapter against the shapes evaluator's reward.

"Training Diffusion Models with Reinforcement Learning" (Black et al., 2023), DDPO_IS: sampling
is a Markov chain of Gaussian transitions, so each taken step has an exact log-probability under
the network; the evaluator's reward of the final image, normalised per prompt over its group of
images, weights a PPO-clipped importance ratio of those log-probabilities at a subset of the
steps. The chain is the demo's own sampler, Euler ancestral (= DDIM with eta 1,
`difflab.core.samplers.ddim_step`): given x_t at sigma, it is x' = alpha' D + c_down eps_hat +
c_up z with z ~ N(0, I), i.e. x' ~ N(alpha' D + c_down eps_hat, c_up^2 I) with D and eps_hat
functions of x_t alone; the last step (to sigma = 0) adds no noise and is not trained. As in
DDPO's code the log-probability is the per-dimension mean of the Gaussian log-density. An
optional KL term to the base (the net with its LoRA off; for two Gaussians with the same
variance it is ||mu - mu_base||^2 / (2 c_up^2), DPOK, Fan et al., 2023) holds the adapter near
the base. The adapter goes through difflab's peft path and is saved like Diffusion-DPO's.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from difflab.align.dpo import check_suites
from difflab.config import ConfigError
from difflab.core.samplers import BatchNoise, initial_noise
from difflab.data.world import PromptSpec
from difflab.limits import check_float, check_int
from difflab.tune.methods import DEFAULT_TARGETS

# training draws dev images k < TRAIN_IMAGES, as DRaFT does; later dev images stay unseen
TRAIN_IMAGES = 500
ADV_CLIP = 5.0  # DDPO's bound on the normalised advantage
SAMPLER = "euler_ancestral"  # the one chain whose steps are written down here


@dataclass(frozen=True)
class DdpoConfig:
    """A DDPO run: prompts and groups, PPO objective, LoRA and budget."""

    suites: tuple[str, ...] = ("binding", "counting", "spatial")
    group: int = 4  # images per prompt, normalised against each other
    prompts: int = 4  # prompts per iteration
    iterations: int = 100  # at most; the budget may stop it sooner
    train_steps: int = 6  # sampler steps per iteration trained on (of the stochastic ones)
    inner: int = 1  # optimisation passes over each iteration's samples
    clip: float = 1e-4  # PPO clip range of the importance ratio (DDPO's)
    kl: float = 0.0  # weight of the KL to the base's transition
    budget_minutes: float = 15.0
    lr: float = 3e-4
    rank: int = 4
    alpha: float = 4.0
    targets: str = DEFAULT_TARGETS
    seed: int = 0

    def __post_init__(self) -> None:
        check_suites(self.suites)
        check_int("group", self.group, 2, 256)
        check_int("prompts", self.prompts, 1, 1024)
        check_int("iterations", self.iterations, 1, 1_000_000)
        check_int("train_steps", self.train_steps, 1, 10_000)
        check_int("inner", self.inner, 1, 100)
        check_int("rank", self.rank, 1, 4096)
        check_float("clip", self.clip, 0.0, 10.0)
        check_float("kl", self.kl, 0.0, 1e6)
        check_float("budget_minutes", self.budget_minutes, 0.1, 10_000)
        check_float("lr", self.lr, 0.0, 1.0)
        check_float("alpha", self.alpha, 0.0, 1e6)


def check_chain(config: Any) -> None:
    """Raise unless `config` samples with the Gaussian chain written down here."""
    if config.sampler != SAMPLER or config.sampler_options.get("eta", 1.0) != 1.0:
        raise ConfigError(f"policy-gradient tuning needs the {SAMPLER} sampler (eta 1), whose "
                          f"steps are Gaussian; got {config.sampler!r}")
    if config.bottleneck:
        raise ConfigError("policy-gradient tuning does not run with Bottleneck Sampling")
    if config.steps < 2:
        raise ConfigError("policy-gradient tuning needs at least 2 sampler steps (the last "
                          "adds no noise)")


def transition(model: Any, x: Tensor, denoised: Tensor, sigma: Tensor, sigma_next: Tensor
               ) -> tuple[Tensor, Tensor]:
    """(mean, std) of the Euler ancestral step from x at sigma to sigma_next (> 0): what
    `ddim_step` with eta 1 draws as mean + std * z."""
    alpha, alpha_next = model.alpha(sigma), model.alpha(sigma_next)
    eps = (x - alpha * denoised) / sigma
    ratio = (sigma_next * alpha) / (sigma * alpha_next)
    std = torch.minimum(sigma_next, sigma_next * (1 - ratio**2).clamp(min=0).sqrt())
    c_down = (sigma_next**2 - std**2).sqrt()
    return alpha_next * denoised + c_down * eps, std


def gaussian_logprob(x: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """(B,) per-dimension mean of log N(x; mean, std^2 I)."""
    d = (x.float() - mean.float()) / std
    return (-0.5 * d.pow(2) - torch.log(std) - 0.5 * math.log(2 * math.pi)).flatten(1).mean(1)


def step_logprob(model: Any, cond: dict[str, Tensor], x: Tensor, x_next: Tensor,
                 sigma: Tensor, sigma_next: Tensor) -> tuple[Tensor, Tensor]:
    """(log-prob (B,), mean) of the step x -> x_next under `model` (with gradients)."""
    denoised = model(x, sigma * x.new_ones(x.shape[0]), **cond)
    mean, std = transition(model, x, denoised, sigma, sigma_next)
    return gaussian_logprob(x_next, mean, std), mean


@dataclass
class Trajectory:
    """One sampled batch: states x_0..x_n (x_n the image), the log-probs of the n - 1
    stochastic steps (n - 1, B), the schedule, and the denoiser and its conditioning."""

    states: list[Tensor]
    logprobs: Tensor
    sigmas: Tensor
    model: Any
    cond: dict[str, Tensor]


@torch.no_grad()
def sample_trajectory(pipe: Any, prompts: Sequence[str], seeds: Sequence[int], config: Any
                      ) -> Trajectory:
    """Sample like `Pipeline.sample` (same initial and step noise for the seeds), recording
    every state and the log-prob of every stochastic step. In float32 throughout: under CPU
    autocast the same step's log-prob differs by ~1e-3 between a no-grad and a grad pass,
    larger than DDPO's clip range."""
    model, cond = pipe.denoiser(list(prompts), config)
    sigmas = pipe.sigmas(config).to(pipe.device)
    x = initial_noise(pipe.image_shape, seeds, device=pipe.device) * sigmas[0]
    noise = BatchNoise([s + 1_000_003 for s in seeds])
    states, logprobs = [x], []
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * x.new_ones(x.shape[0]), **cond)
        if sigmas[i + 1] == 0:
            x = denoised  # the last step: alpha(0) = 1, no noise
        else:
            mean, std = transition(model, x, denoised, sigmas[i], sigmas[i + 1])
            x = mean + std * noise(x)
            logprobs.append(gaussian_logprob(x, mean, std))
        states.append(x)
    return Trajectory(states, torch.stack(logprobs), sigmas, model, cond)


def group_advantages(rewards: np.ndarray, group: int) -> np.ndarray:
    """(G * P,) rewards, image-major (row k * P + p) -> per-prompt normalised advantages:
    (r - mean) / std over each prompt's group, 0 where the group scored alike, clipped."""
    r = rewards.reshape(group, -1).astype(np.float64)
    std = r.std(0)
    adv = np.where(std > 1e-8, (r - r.mean(0)) / np.where(std > 1e-8, std, 1.0), 0.0)
    return np.clip(adv, -ADV_CLIP, ADV_CLIP).reshape(-1)


def ppo_loss(logp: Tensor, logp_old: Tensor, adv: Tensor, clip: float) -> Tensor:
    """DDPO's clipped surrogate (PPO, Schulman et al., 2017): mean of
    max(-A r, -A clip(r, 1 - c, 1 + c)) with r = exp(logp - logp_old)."""
    ratio = torch.exp(logp - logp_old)
    return torch.maximum(-adv * ratio, -adv * ratio.clamp(1 - clip, 1 + clip)).mean()


def kl_to_base(mean: Tensor, mean_base: Tensor, std: Tensor) -> Tensor:
    """(B,) per-dimension mean KL between N(mean, std^2) and N(mean_base, std^2)."""
    return ((mean.float() - mean_base.float()) / std).pow(2).flatten(1).mean(1) / 2


def train_steps_of(n_stochastic: int, count: int, gen: torch.Generator) -> list[int]:
    """`count` distinct stochastic step indices (all if fewer), drawn from gen."""
    return sorted(torch.randperm(n_stochastic, generator=gen)[:count].tolist())


def ppo_pass(pipe: Any, adaptation: Any, traj: Trajectory, adv: Tensor, steps: Sequence[int],
             clip: float, kl: float, config: Any) -> tuple[float, float, float]:
    """One pass over `steps` of `traj`: accumulate the gradient of the clipped surrogate (plus
    kl * KL to the base), averaged over the steps; (loss, mean |ratio - 1|, KL). Float32,
    as the trajectory was sampled."""
    total = clipped = kls = 0.0
    for i in steps:
        x, x_next = traj.states[i], traj.states[i + 1]
        logp, mean = step_logprob(traj.model, traj.cond, x, x_next, traj.sigmas[i],
                                  traj.sigmas[i + 1])
        loss = ppo_loss(logp, traj.logprobs[i], adv, clip)
        if kl:
            with torch.no_grad(), adaptation.peft_model.disable_adapter():
                denoised = traj.model(x, traj.sigmas[i] * x.new_ones(x.shape[0]), **traj.cond)
                mean_base, std = transition(traj.model, x, denoised, traj.sigmas[i],
                                            traj.sigmas[i + 1])
            k = kl_to_base(mean, mean_base, std).mean()
            loss = loss + kl * k
            kls += k.item() / len(steps)
        (loss / len(steps)).backward()
        total += loss.item() / len(steps)
        clipped += (logp.detach() - traj.logprobs[i]).exp().sub(1).abs().mean().item() \
            / len(steps)
    return total, clipped, kls


@dataclass
class DdpoResult:
    """A finished run: what save_adapter writes, and its reward curve."""

    config: Any  # the LoRA's TuneConfig (what adapter folders record under "tune")
    delta: Any
    adaptation: Any
    trainable: int
    seconds: float
    losses: list[float]
    align: DdpoConfig
    steps_done: int  # iterations
    rewards: list[float] = field(default_factory=list)  # per iteration: mean evaluator reward
    kls: list[float] = field(default_factory=list)


def _batch(specs: Sequence[PromptSpec], cfg: DdpoConfig, it: int
           ) -> tuple[list[PromptSpec], list[int]]:
    """Iteration `it`'s rows, image-major (row k * P + p): cfg.prompts dev prompts, each with
    cfg.group consecutive dev images from a drawn start."""
    from difflab.data.suites import suite_seeds

    gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + it)
    idx = torch.randint(0, len(specs), (cfg.prompts,), generator=gen).tolist()
    first = torch.randint(0, TRAIN_IMAGES - cfg.group + 1, (cfg.prompts,), generator=gen)
    chosen = [specs[i] for i in idx]
    seeds = [suite_seeds(s, cfg.group, int(f), "dev") for s, f in zip(chosen, first, strict=True)]
    return ([s for _ in range(cfg.group) for s in chosen],
            [seeds[p][k] for k in range(cfg.group) for p in range(cfg.prompts)])


def align_ddpo(pipe: Any, cfg: DdpoConfig, sampling: Any, progress: bool = True,
               log: Callable[[str], None] | None = None) -> DdpoResult:
    """Train a LoRA on `pipe`'s network by DDPO against the evaluator reward on dev-split
    prompts of `cfg.suites` until `cfg.iterations` or the budget; the net is changed in place."""
    from difflab.align.rewards import evaluator_reward
    from difflab.data.suites import load_suite
    from difflab.tune.fit import TuneConfig
    from difflab.tune.methods import prepare_peft, trainable_count

    check_chain(sampling)
    start = time.perf_counter()
    specs = [s for name in cfg.suites for s in load_suite(name)]
    lora = TuneConfig(method="lora", concept="", images=len(specs), steps=cfg.iterations,
                      lr=cfg.lr, batch_size=cfg.prompts * cfg.group, rank=cfg.rank,
                      alpha=cfg.alpha, targets=cfg.targets, prior_weight=0.0, seed=cfg.seed)
    torch.manual_seed(cfg.seed)  # peft draws the LoRA initialisation from the global generator
    adaptation = prepare_peft(pipe.net, lora)
    opt = torch.optim.AdamW(adaptation.params, lr=cfg.lr, weight_decay=0.0)
    adaptation.net.eval()  # no dropout: the recomputed log-prob must be the sampled one
    losses, rewards, kls, done = [], [], [], 0
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.iterations, desc="ddpo", unit="it")
    for it in range(cfg.iterations):
        if time.perf_counter() - start > 60 * cfg.budget_minutes:
            break
        rows, seeds = _batch(specs, cfg, it)
        traj = sample_trajectory(pipe, [s.text for s in rows], seeds, sampling)
        reward = evaluator_reward(traj.states[-1].float().clamp(-1, 1), rows)
        adv = torch.as_tensor(group_advantages(reward, cfg.group), dtype=torch.float32)
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + it + 7)
        for _ in range(cfg.inner):
            steps = train_steps_of(len(traj.logprobs), cfg.train_steps, gen)
            opt.zero_grad(set_to_none=True)
            loss, moved, kl = ppo_pass(pipe, adaptation, traj, adv, steps, cfg.clip, cfg.kl,
                                       sampling)
            torch.nn.utils.clip_grad_norm_(adaptation.params, 1.0)
            opt.step()
        losses.append(loss)
        rewards.append(float(reward.mean()))
        kls.append(kl)
        done = it + 1
        if bar is not None:
            bar.update(1)
            bar.set_postfix(reward=f"{rewards[-1]:.3f}", mean10=f"{np.mean(rewards[-10:]):.3f}")
        if log and it % 10 == 0:
            log(f"ddpo iteration {it}: reward {np.mean(rewards[-10:]):.3f} (mean of last 10), "
                f"|ratio - 1| {moved:.2e}, kl {kl:.2e} ({time.perf_counter() - start:.0f} s)")
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - start
    if done == 0:
        raise ConfigError(f"the budget of {cfg.budget_minutes:g} min ran out before the first "
                          "iteration; raise --budget-minutes")
    lora = TuneConfig(**{**asdict(lora), "steps": done})
    return DdpoResult(lora, adaptation.delta(), adaptation, trainable_count(adaptation),
                      seconds, losses, cfg, done, rewards, kls)


def save_policy_run(result: Any, out: Any, base: dict[str, str], sampling: Any,
                    method: str, extra: dict[str, Any] | None = None) -> None:
    """Write a DDPO or SPO run as an adapter folder (kind `adapter`, what `load` and
    `--adapter` read), with its reward curve (mean of every 5 iterations)."""
    from difflab.tune.adapters import save_adapter

    r = result.rewards
    curve = [round(float(np.mean(r[i:i + 5])), 4) for i in range(0, len(r), 5)]
    save_adapter(result, out, base, {"iterations": result.steps_done, "reward_curve": curve,
                                     **(extra or {})},
                 sections={"align": {"method": method, **asdict(result.align),
                                     "sampling": asdict(sampling)}})
