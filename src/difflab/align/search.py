"""Inference-time search: spend more model evaluations per image to raise a reward.

Both methods draw candidate k of (prompt, seed) from seed `candidate_seeds(seed, n)[k]` (the
first is `seed` itself, so candidate 0 is the plain sample), and return the candidate with the
highest final reward (the first on ties):

- best-of-N: N independent samples, the best kept;
- SMC / Feynman-Kac steering ("A General Framework for Inference-time Scaling and Steering of
  Diffusion Models", Singhal et al., 2025): N particles sampled together; every `interval`
  steps each is weighted by the difference potential exp(lam * (r_t - r_prev)) of the reward r
  of its current x0 prediction, and the particles are resampled (systematic resampling) when
  the weights differ. The product of the potentials telescopes to exp(lam * r(x0)): the
  particles target the base distribution tilted towards high reward.

SMC steps the sampler one step at a time, so it runs one-step samplers only (SMC_SAMPLERS);
resampled copies diverge only through the sampler's noise, so a stochastic sampler
(euler_ancestral, or ddim with eta > 0) is what it is for. Each particle keeps its own noise
generator through resampling, so a run depends only on (prompt, seed, configs).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from difflab.config import ConfigError, from_dict
from difflab.core.samplers import BatchNoise, get_sampler, initial_noise
from difflab.data.grid import to_uint8
from difflab.data.world import PromptSpec
from difflab.limits import check_float, check_int
from difflab.registry import Registry

# reward(images (K, 3, H, W) float in [-1, 1], spec) -> (K,) rewards
Reward = Callable[[Tensor, PromptSpec], np.ndarray]
CANDIDATE_STRIDE = 1_000_000_007  # beyond every suite seed, so candidates reuse none
SMC_SAMPLERS: tuple[str, ...] = ("euler", "euler_ancestral", "ddim")
SEARCHES: Registry = Registry("search method")


def candidate_seeds(seed: int, n: int) -> list[int]:
    """The seeds of a search's n candidates or particles; the first is `seed`."""
    return [seed + k * CANDIDATE_STRIDE for k in range(n)]


def evaluator_potential(images: Tensor, spec: PromptSpec) -> np.ndarray:
    """The shapes evaluator's reward (`difflab.align.rewards.evaluator_reward`) as a potential."""
    from difflab.align.rewards import evaluator_reward

    return evaluator_reward(images, [spec] * len(images))


def net_potential(net: Any) -> Reward:
    """A RewardNet's predicted reward as a potential."""
    def reward(images: Tensor, spec: PromptSpec) -> np.ndarray:
        with torch.no_grad():
            return net.reward(images.float().clamp(-1, 1), [spec] * len(images)).cpu().numpy()
    return reward


@dataclass(frozen=True)
class BestOfConfig:
    """Best-of-N: n independent candidates."""

    n: int = 8

    def __post_init__(self) -> None:
        check_int("bestof n", self.n, 1, 1024)


@dataclass(frozen=True)
class SMCConfig:
    """SMC steering: particles, potential temperature lam, resampling every `interval` steps."""

    particles: int = 8
    lam: float = 10.0
    interval: int = 1

    def __post_init__(self) -> None:
        check_int("smc particles", self.particles, 1, 1024)
        check_float("smc lam", self.lam, 0.0, 1e4)
        check_int("smc interval", self.interval, 1, 10_000)

    @property
    def n(self) -> int:
        return self.particles


@dataclass
class SearchResult:
    """One prompt's search: the chosen image and what it cost."""

    image: np.ndarray  # (H, W, 3) uint8
    reward: float  # the chosen candidate's final reward
    rewards: list[float]  # every candidate's final reward
    nfe: int  # model evaluations (CFG counts once per step, as SampleConfig.nfe)
    reward_calls: int  # images the reward scored
    resamples: int = 0
    trace: list[float] = field(default_factory=list)  # SMC: mean particle reward per step


_CONFIGS = {"bestof": BestOfConfig, "smc": SMCConfig}


def parse_search(text: str) -> tuple[str, Any]:
    """'bestof:n=8' or 'smc:particles=8,lam=10,interval=1' -> (name, config)."""
    from difflab.accel.api import parse_options

    name, _, rest = text.partition(":")
    name = name.strip()
    if name not in _CONFIGS:
        raise ConfigError(f"unknown search {name!r}; valid: {', '.join(_CONFIGS)} "
                          "(e.g. bestof:n=8, smc:particles=8)")
    return name, from_dict(_CONFIGS[name], parse_options(rest), where=name)


def _autocast(pipe: Any, config: Any) -> Any:
    from difflab.runtime.machine import resolve_precision

    dtype = resolve_precision(config.precision, pipe.device).autocast_dtype
    return (torch.autocast(pipe.device.type, dtype=dtype) if dtype is not None
            else contextlib.nullcontext())


@SEARCHES.register("bestof")
@torch.no_grad()
def search_bestof(pipe: Any, prompt: str, spec: PromptSpec, seed: int, config: Any,
                  opts: BestOfConfig, reward: Reward) -> SearchResult:
    """Best-of-N: the highest-reward of N independent samples (rejection sampling by score)."""
    x = pipe.sample([prompt] * opts.n, candidate_seeds(seed, opts.n), config)
    r = np.asarray(reward(x, spec), np.float64)
    best = int(np.argmax(r))
    return SearchResult(to_uint8(x[best])[0], float(r[best]), r.tolist(), opts.n * config.nfe,
                        opts.n)


def systematic_resample(weights: Tensor, generator: torch.Generator) -> Tensor:
    """Indices (K,) drawn by systematic resampling ("Novel approach to nonlinear/non-Gaussian
    Bayesian state estimation", Gordon et al., 1993; Kitagawa, 1996) from normalised weights."""
    k = len(weights)
    positions = (torch.rand((), generator=generator, dtype=torch.float64)
                 + torch.arange(k, dtype=torch.float64)) / k
    cdf = torch.cumsum(weights.double(), 0)
    cdf[-1] = 1.0
    return torch.searchsorted(cdf, positions, right=True).clamp(max=k - 1)


@SEARCHES.register("smc")
@torch.no_grad()
def search_smc(pipe: Any, prompt: str, spec: PromptSpec, seed: int, config: Any,
               opts: SMCConfig, reward: Reward) -> SearchResult:
    """Feynman-Kac steering (Singhal et al., 2025) with the difference potential."""
    if config.sampler not in SMC_SAMPLERS:
        raise ConfigError(f"smc steps one-step samplers only ({', '.join(SMC_SAMPLERS)}); got "
                          f"{config.sampler!r}")
    if config.bottleneck:
        raise ConfigError("smc does not run with Bottleneck Sampling; drop --bottleneck")
    k = opts.particles
    seeds = candidate_seeds(seed, k)
    model, cond = pipe.denoiser([prompt] * k, config)
    sigmas = pipe.sigmas(config).to(pipe.device)
    # the same initial noise and per-particle sampler noise as Pipeline.sample
    x = initial_noise(pipe.image_shape, seeds, device=pipe.device) * sigmas[0]
    noise = BatchNoise([s + 1_000_003 for s in seeds])
    sampler = get_sampler(config.sampler)
    resampler = torch.Generator().manual_seed(seed)
    log_w, r_prev = torch.zeros(k, dtype=torch.float64), torch.zeros(k, dtype=torch.float64)
    n, calls, resamples, trace = len(sigmas) - 1, 0, 0, []
    seen: dict[str, Tensor] = {}
    with _autocast(pipe, config):
        for i in range(n):
            x = sampler(model, x, sigmas[i:i + 2], extra_args=cond, noise=noise,
                        callback=seen.update, **config.sampler_options)
            if i == n - 1 or (i + 1) % opts.interval:
                continue
            r = torch.as_tensor(reward(seen["denoised"].float(), spec), dtype=torch.float64)
            calls += k
            trace.append(float(r.mean()))
            log_w += opts.lam * (r - r_prev)  # the difference potential of the x0 prediction
            r_prev = r
            if torch.all(log_w == log_w[0]):  # equal weights: resampling would change nothing
                continue
            idx = systematic_resample(torch.softmax(log_w, 0), resampler)
            x, r_prev = x[idx], r_prev[idx]
            log_w = torch.zeros(k, dtype=torch.float64)
            resamples += 1
    x = x.float()
    final = np.asarray(reward(x, spec), np.float64)
    best = int(np.argmax(final))
    return SearchResult(to_uint8(x[best])[0], float(final[best]), final.tolist(),
                        k * config.nfe, calls + k, resamples, trace)


def search(pipe: Any, prompts: Sequence[str], seeds: Sequence[int], config: Any, name: str,
           opts: Any, reward: Reward | None = None,
           specs: Sequence[PromptSpec] | None = None, progress: bool = False
           ) -> tuple[np.ndarray, list[SearchResult]]:
    """Search each prompt with its seed: images (N, H, W, 3) uint8 and each search's result.
    `specs` default to the prompts parsed by the suites' templates; `reward` to the evaluator."""
    from difflab.align.rewards import parse_prompt

    if len(prompts) != len(seeds):
        raise ConfigError(f"{len(prompts)} prompts but {len(seeds)} seeds")
    specs = [parse_prompt(p) for p in prompts] if specs is None else list(specs)
    method = SEARCHES.get(name)
    reward = reward or evaluator_potential
    items = range(len(prompts))
    if progress:
        from tqdm import tqdm

        items = tqdm(items, desc=name, unit="prompt")
    results = [method(pipe, prompts[i], specs[i], seeds[i], config, opts, reward)
               for i in items]
    images = np.stack([r.image for r in results]) if results else np.zeros(
        (0, *pipe.image_shape[1:], 3), np.uint8)
    return images, results
