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

import functools
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
    # SMC: mean particle reward per step; reno: the reward net's score per iterate
    trace: list[float] = field(default_factory=list)
    candidates: np.ndarray | None = None  # (K, H, W, 3) uint8: every final candidate
    backward: int = 0  # backward passes through the model (noise optimisation)


_CONFIGS = {"bestof": BestOfConfig, "smc": SMCConfig}


def parse_search(text: str) -> tuple[str, Any]:
    """'bestof:n=8', 'smc:particles=8,lam=10,interval=1' or 'reno:iters=4,lr=5' ->
    (name, config)."""
    from difflab.accel.api import parse_options

    name, _, rest = text.partition(":")
    name = name.strip()
    if name not in _CONFIGS:
        raise ConfigError(f"unknown search {name!r}; valid: {', '.join(_CONFIGS)} "
                          "(e.g. bestof:n=8, smc:particles=8, reno:iters=4)")
    return name, from_dict(_CONFIGS[name], parse_options(rest), where=name)


def _autocast(pipe: Any, config: Any) -> Any:
    from difflab.runtime.machine import resolve_precision

    return resolve_precision(config.precision, pipe.device).autocast(pipe.device)


def _rows(prompts: Sequence[str], seeds: Sequence[int], n: int) -> tuple[list[str], list[int]]:
    """Prompt p's candidate k sits at row p * n + k."""
    return ([p for p in prompts for _ in range(n)],
            [s for seed in seeds for s in candidate_seeds(seed, n)])


def _pick(x: Tensor, final: np.ndarray, n: int, **info: Any) -> list[SearchResult]:
    """Each prompt's highest-reward candidate (the first on ties)."""
    out, images = [], to_uint8(x)
    for p in range(len(final) // n):
        r = final[p * n:(p + 1) * n]
        best = int(np.argmax(r))
        out.append(SearchResult(images[p * n + best], float(r[best]), r.tolist(),
                                candidates=images[p * n:(p + 1) * n],
                                **{k: v[p] if isinstance(v, list) else v
                                   for k, v in info.items()}))
    return out


@SEARCHES.register("bestof")
@torch.no_grad()
def search_bestof(pipe: Any, prompts: Sequence[str], specs: Sequence[PromptSpec],
                  seeds: Sequence[int], config: Any, opts: BestOfConfig,
                  reward: Reward) -> list[SearchResult]:
    """Best-of-N: the highest-reward of N independent samples (rejection sampling by score)."""
    n = opts.n
    rows, row_seeds = _rows(prompts, seeds, n)
    x = pipe.sample(rows, row_seeds, config)
    final = np.concatenate([np.asarray(reward(x[p * n:(p + 1) * n], spec), np.float64)
                            for p, spec in enumerate(specs)])
    return _pick(x, final, n, nfe=n * config.nfe, reward_calls=n)


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
def search_smc(pipe: Any, prompts: Sequence[str], specs: Sequence[PromptSpec],
               seeds: Sequence[int], config: Any, opts: SMCConfig,
               reward: Reward) -> list[SearchResult]:
    """Feynman-Kac steering (Singhal et al., 2025) with the difference potential; the prompts'
    particle sets run as one batch and resample within themselves."""
    if config.sampler not in SMC_SAMPLERS:
        raise ConfigError(f"smc steps one-step samplers only ({', '.join(SMC_SAMPLERS)}); got "
                          f"{config.sampler!r}")
    if config.bottleneck:
        raise ConfigError("smc does not run with Bottleneck Sampling; drop --bottleneck")
    k, n_prompts = opts.particles, len(prompts)
    rows, row_seeds = _rows(prompts, seeds, k)
    model, cond = pipe.denoiser(rows, config)
    sigmas = pipe.sigmas(config).to(pipe.device)
    # the same initial noise and per-particle sampler noise as Pipeline.sample
    x = initial_noise(pipe.image_shape, row_seeds, device=pipe.device) * sigmas[0]
    noise = BatchNoise([s + 1_000_003 for s in row_seeds])
    sampler = get_sampler(config.sampler)
    resamplers = [torch.Generator().manual_seed(seed) for seed in seeds]
    log_w = torch.zeros(n_prompts, k, dtype=torch.float64)
    r_prev = torch.zeros(n_prompts, k, dtype=torch.float64)
    n, calls, resamples, traces = len(sigmas) - 1, 0, [0] * n_prompts, []
    seen: dict[str, Tensor] = {}
    with _autocast(pipe, config):
        for i in range(n):
            x = sampler(model, x, sigmas[i:i + 2], extra_args=cond, noise=noise,
                        callback=seen.update, **config.sampler_options)
            if i == n - 1 or (i + 1) % opts.interval:
                continue
            x0 = seen["denoised"].float()
            r = torch.stack([torch.as_tensor(reward(x0[p * k:(p + 1) * k], spec),
                                             dtype=torch.float64)
                             for p, spec in enumerate(specs)])  # (P, K)
            calls += k
            traces.append(r.mean(1).tolist())
            log_w += opts.lam * (r - r_prev)  # the difference potential of the x0 prediction
            r_prev = r
            idx = torch.arange(n_prompts * k)
            for p in range(n_prompts):
                if torch.all(log_w[p] == log_w[p, 0]):  # equal weights: nothing would change
                    continue
                local = systematic_resample(torch.softmax(log_w[p], 0), resamplers[p])
                idx[p * k:(p + 1) * k] = p * k + local
                r_prev[p], log_w[p] = r_prev[p, local], 0.0
                resamples[p] += 1
            x = x[idx]
    x = x.float()
    final = np.concatenate([np.asarray(reward(x[p * k:(p + 1) * k], spec), np.float64)
                            for p, spec in enumerate(specs)])
    trace = [[t[p] for t in traces] for p in range(n_prompts)]
    return _pick(x, final, k, nfe=k * config.nfe, reward_calls=calls + k, resamples=resamples,
                 trace=trace)


def search(pipe: Any, prompts: Sequence[str], seeds: Sequence[int], config: Any, name: str,
           opts: Any, reward: Reward | None = None,
           specs: Sequence[PromptSpec] | None = None, progress: bool = False,
           reward_net: Any = None) -> tuple[np.ndarray, list[SearchResult]]:
    """Search each prompt with its seed: images (N, H, W, 3) uint8 and each search's result.
    `specs` default to the prompts parsed by the suites' templates; `reward` to the evaluator.
    `reward_net` is what reno climbs by gradient (its pick is still by `reward`)."""
    from difflab.align.rewards import parse_prompt

    if len(prompts) != len(seeds):
        raise ConfigError(f"{len(prompts)} prompts but {len(seeds)} seeds")
    specs = [parse_prompt(p) for p in prompts] if specs is None else list(specs)
    method = SEARCHES.get(name)
    if name == "reno":
        method = functools.partial(method, net=reward_net)
    reward = reward or evaluator_potential
    chunk = max(1, config.batch_size // opts.n)  # prompts per batch of candidates
    items = range(0, len(prompts), chunk)
    if progress:
        from tqdm import tqdm

        items = tqdm(items, desc=name, unit="batch")
    results = []
    for i in items:
        sl = slice(i, i + chunk)
        results += method(pipe, prompts[sl], specs[sl], seeds[sl], config, opts, reward)
    images = np.stack([r.image for r in results]) if results else np.zeros(
        (0, *pipe.image_shape[1:], 3), np.uint8)
    return images, results


def _register_reno() -> None:
    """ReNO lives in its own module (it imports this one); its search is registered here."""
    from difflab.align.reno import RenoConfig, search_reno

    _CONFIGS["reno"] = RenoConfig
    SEARCHES.register("reno")(search_reno)


_register_reno()
