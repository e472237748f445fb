"""DRaFT-K: reward backpropagation through the last K sampling steps, on a LoRA adapter.

"Directly Fine-Tuning Diffusion Models on Differentiable Rewards" (Clark et al., 2023), DRaFT-K;
"Aligning Text-to-Image Diffusion Models with Reward Backpropagation" (AlignProp, Prabhudesai et
al., 2023). A batch of dev-split prompts is sampled with the base's own sampler, the first
n - K steps without gradients and the last K steps with them (each step checkpointed, so memory
stays one step's activations); the loss is minus the reward net's score of the final image for
the prompt's spec (plus an optional L2 penalty on the LoRA weights that holds the adapter near
the base), and only the LoRA parameters are updated. The adapter goes through difflab's peft
path and is saved like Diffusion-DPO's.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from difflab.align.dpo import check_suites
from difflab.config import ConfigError
from difflab.core.samplers import BatchNoise, get_sampler, initial_noise
from difflab.data.world import PromptSpec
from difflab.limits import check_float, check_int
from difflab.tune.methods import DEFAULT_TARGETS

# training draws dev images k < TRAIN_IMAGES; dev images from there on stay unseen, for
# choosing K, lr and steps
TRAIN_IMAGES = 500
# samplers that step one interval at a time from (x, sigma_i) alone, so a run splits into a
# no-grad head and K checkpointed steps that together equal the plain run
DRAFT_SAMPLERS: tuple[str, ...] = ("euler", "euler_ancestral", "ddim")


@dataclass(frozen=True)
class DraftConfig:
    """A DRaFT-K run: prompts, K, objective, LoRA and budget."""

    suites: tuple[str, ...] = ("binding", "counting", "spatial")
    k: int = 1  # sampling steps the gradient flows through (the last K)
    steps: int = 200  # at most; the budget may stop it sooner
    budget_minutes: float = 20.0
    lr: float = 1e-3
    batch_size: int = 4  # prompts (one dev seed each) per step
    penalty: float = 0.0  # weight of the LoRA parameters' squared L2 norm in the loss
    rank: int = 4
    alpha: float = 4.0
    targets: str = DEFAULT_TARGETS
    seed: int = 0

    def __post_init__(self) -> None:
        check_suites(self.suites)
        check_int("k", self.k, 1, 10_000)
        check_int("steps", self.steps, 1, 1_000_000)
        check_int("batch_size", self.batch_size, 1, 4096)
        check_int("rank", self.rank, 1, 4096)
        check_float("budget_minutes", self.budget_minutes, 0.1, 10_000)
        check_float("lr", self.lr, 0.0, 1.0)
        check_float("penalty", self.penalty, 0.0, 1e6)
        check_float("alpha", self.alpha, 0.0, 1e6)


class _Once:
    """A noise function that draws once from `noise` and then repeats that draw, so a
    checkpointed step recomputes with the noise its forward pass used."""

    def __init__(self, noise: Callable[[Tensor], Tensor]) -> None:
        self.noise, self.z = noise, None

    def __call__(self, like: Tensor) -> Tensor:
        if self.z is None:
            self.z = self.noise(like)
        return self.z.to(like.dtype)


def check_sampling(config: Any, k: int | None = None) -> None:
    """Raise unless `config`'s sampler can be split into steps (and has at least k of them)."""
    if config.sampler not in DRAFT_SAMPLERS:
        raise ConfigError(f"reward backpropagation steps one-step samplers only "
                          f"({', '.join(DRAFT_SAMPLERS)}); got {config.sampler!r}")
    if config.bottleneck:
        raise ConfigError("reward backpropagation does not run with Bottleneck Sampling")
    if k is not None and k > config.steps:
        raise ConfigError(f"k = {k} exceeds the sampler's {config.steps} steps")


def sample_last_k(model: Any, x: Tensor, sigmas: Tensor, k: int, sampler: Callable,
                  cond: dict[str, Tensor], noise: Callable[[Tensor], Tensor],
                  options: dict[str, Any] | None = None) -> Tensor:
    """Sample from x at sigmas[0]: steps 0..n-k-1 without gradients, the last k with them, each
    under torch.utils.checkpoint (DRaFT-K, Clark et al., 2023); k = n differentiates all."""
    n, options = len(sigmas) - 1, options or {}
    with torch.no_grad():
        x = sampler(model, x, sigmas[:n - k + 1], extra_args=cond, noise=noise, **options)
    for i in range(n - k, n):
        once = _Once(noise)

        def step(x: Tensor, i: int = i, once: _Once = once) -> Tensor:
            return sampler(model, x, sigmas[i:i + 2], extra_args=cond, noise=once, **options)

        x = checkpoint(step, x, use_reentrant=False)
    return x


def draft_loss(pipe: Any, reward_net: Any, specs: Sequence[PromptSpec], seeds: Sequence[int],
               config: Any, k: int, params: Sequence[Tensor] = (), penalty: float = 0.0
               ) -> tuple[Tensor, Tensor]:
    """(loss, rewards (B,)): minus the mean reward-net score of the images sampled from
    `seeds` with gradients through the last k steps, plus penalty * sum ||param||^2."""
    from difflab.align.search import _autocast

    model, cond = pipe.denoiser([s.text for s in specs], config)
    sigmas = pipe.sigmas(config).to(pipe.device)
    x = initial_noise(pipe.image_shape, seeds, device=pipe.device) * sigmas[0]
    noise = BatchNoise([s + 1_000_003 for s in seeds])  # as Pipeline.sample draws it
    with _autocast(pipe, config):
        x0 = sample_last_k(model, x, sigmas, k, get_sampler(config.sampler), cond, noise,
                           config.sampler_options)
    rewards = reward_net.reward(x0.float().clamp(-1, 1), specs)
    loss = -rewards.mean()
    if penalty:
        loss = loss + penalty * sum(p.float().pow(2).sum() for p in params)
    return loss, rewards.detach()


@dataclass
class DraftResult:
    """A finished run: what save_adapter writes, and its reward curve."""

    config: Any  # the LoRA's TuneConfig (what adapter folders record under "tune")
    delta: Any
    adaptation: Any
    trainable: int
    seconds: float
    losses: list[float]
    align: DraftConfig
    steps_done: int
    rewards: list[float] = field(default_factory=list)  # per step: the batch's mean reward


def _batch(specs: Sequence[PromptSpec], cfg: DraftConfig, step: int
           ) -> tuple[list[PromptSpec], list[int]]:
    """Step `step`'s prompts and dev-split seeds, drawn from the run's seed."""
    from difflab.data.suites import suite_seeds

    gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
    idx = torch.randint(0, len(specs), (cfg.batch_size,), generator=gen).tolist()
    images = torch.randint(0, TRAIN_IMAGES, (cfg.batch_size,), generator=gen).tolist()
    rows = [specs[i] for i in idx]
    return rows, [suite_seeds(s, 1, k, "dev")[0] for s, k in zip(rows, images, strict=True)]


def align_draft(pipe: Any, reward_net: Any, cfg: DraftConfig, sampling: Any,
                log: Callable[[str], None] | None = None) -> DraftResult:
    """Train a LoRA on `pipe`'s network by DRaFT-K against `reward_net` on dev-split prompts of
    `cfg.suites` until `cfg.steps` or the budget; the network is changed in place."""
    from difflab.data.suites import load_suite
    from difflab.tune.fit import TuneConfig
    from difflab.tune.methods import prepare_peft, trainable_count

    check_sampling(sampling, cfg.k)
    start = time.perf_counter()
    specs = [s for name in cfg.suites for s in load_suite(name)]
    lora = TuneConfig(method="lora", concept="", images=len(specs), steps=cfg.steps, lr=cfg.lr,
                      batch_size=cfg.batch_size, rank=cfg.rank, alpha=cfg.alpha,
                      targets=cfg.targets, prior_weight=0.0, seed=cfg.seed)
    torch.manual_seed(cfg.seed)  # peft draws the LoRA initialisation from the global generator
    adaptation = prepare_peft(pipe.net, lora)
    reward_net.requires_grad_(False)
    opt = torch.optim.AdamW(adaptation.params, lr=cfg.lr, weight_decay=0.0)
    losses, rewards, steps_done = [], [], 0
    adaptation.net.eval()  # no dropout: a checkpointed step must recompute what it ran
    for step in range(cfg.steps):
        if time.perf_counter() - start > 60 * cfg.budget_minutes:
            break
        rows, seeds = _batch(specs, cfg, step)
        loss, r = draft_loss(pipe, reward_net, rows, seeds, sampling, cfg.k,
                             adaptation.params, cfg.penalty)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(adaptation.params, 1.0)
        opt.step()
        losses.append(loss.item())
        rewards.append(r.mean().item())
        steps_done = step + 1
        if log and step % 10 == 0:
            log(f"draft step {step}: reward {np.mean(rewards[-10:]):.3f}, loss "
                f"{np.mean(losses[-10:]):.4f} ({time.perf_counter() - start:.0f} s)")
    seconds = time.perf_counter() - start
    lora = TuneConfig(**{**asdict(lora), "steps": max(steps_done, 1)})
    return DraftResult(lora, adaptation.delta(), adaptation, trainable_count(adaptation),
                       seconds, losses, cfg, steps_done, rewards)


def save_draft(result: DraftResult, out: Any, base: dict[str, str], sampling: Any,
               reward_net: str) -> None:
    """Write a DRaFT run as an adapter folder (kind `adapter`, what `load` and `--adapter`
    read), with its reward curve and the reward net it climbed."""
    from difflab.tune.adapters import save_adapter

    r = result.rewards
    curve = [round(float(np.mean(r[i:i + 10])), 4) for i in range(0, len(r), 10)]
    save_adapter(result, out, base, {"steps_done": result.steps_done, "reward_curve": curve},
                 sections={"align": {"method": "draft", **asdict(result.align),
                                     "reward_net": str(reward_net),
                                     "sampling": asdict(sampling)}})
