"""Tune a loaded base model on a few images of a concept: the loop every method shares.

The loss is the base's own denoising loss (its process's input, target and weighting) on the
concept's images plus, by default, DreamBooth's class-prior preservation loss on images of known
concepts: exact renders of the shapes world, or (`prior_source="base"`, as the paper) the base's
own samples (plain `full` fine-tuning runs without it, as the baseline). Condition dropout is
off by default, so the unconditional branch that guidance subtracts is not retrained on the
concept; `uncond_weight` adds a loss that holds that branch to the frozen base's prediction
(difflab's own addition to the prior loss). Every draw (batch order, sigma, noise, dropout)
comes from a generator seeded by (seed, step).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from difflab.config import ConfigError
from difflab.data.concepts import OBJECT_SIZES
from difflab.limits import check_float, check_int
from difflab.tune.methods import (
    DEFAULT_TARGETS,
    LORA_INITS,
    METHOD_PREPARERS,
    METHODS,
    PEFT_METHODS,
    Adaptation,
    Delta,
    gradient_start,
    parse_rank_pattern,
    trainable_count,
)

# Learning rates chosen on the dev split (benchmarks/results/tune/); 0 in a config means these.
DEFAULT_LR: dict[str, float] = {"lora": 3e-3, "dora": 3e-3, "loha": 3e-3, "lokr": 3e-3,
                                "full": 3e-4, "dreambooth": 3e-4, "custom": 1e-3,
                                "difffit": 3e-3, "sara": 1e-3, "textual": 1e-2}


# Batches whose summed gradient gives lora_init="gradient" its directions (counted in the
# tuning time).
GRADIENT_START_BATCHES = 8

PRIOR_SOURCES: tuple[str, ...] = ("base", "world")
PRIOR_TARGETS: tuple[str, ...] = ("data", "base")
TUNE_PRECISIONS: tuple[str, ...] = ("fp32", "auto", "bf16")
SCHEDULES: tuple[str, ...] = ("constant", "cosine")


def _one_of(what: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ConfigError(f"unknown {what} {value!r}; valid: " + ", ".join(valid))


@dataclass(frozen=True)
class TuneConfig:
    """One tuning run: method, data, schedule and the method's own settings."""

    method: str = "lora"
    concept: str = "star"
    images: int = 12  # training images generated from the shapes world (4-20 is the task)
    # their object sizes (difflab.data.concepts.OBJECT_SIZES): random, or largest-first (every
    # colour of a new shape drawn large before any colour is drawn twice)
    object_sizes: str = "random"
    steps: int = 300
    lr: float = 0.0  # 0 = DEFAULT_LR[method]
    batch_size: int = 8
    rank: int = 4  # LoRA-family rank
    alpha: float = 4.0  # LoRA-family alpha (scale alpha / rank)
    # Other ranks for some targeted layers: "REGEX=RANK;REGEX=RANK" (the first match decides;
    # those layers' alpha keeps the scale alpha / rank); "" = `rank` everywhere
    rank_pattern: str = ""
    dropout: float = 0.0
    # random: peft's start (a random down-projection); principal: the base weight's top right
    # singular vectors (difflab.tune.methods.principal_start), the same for every seed;
    # gradient: the top right singular vectors of the tuning loss's gradient (gradient_start)
    lora_init: str = "random"
    targets: str = DEFAULT_TARGETS  # regular expression on module names (peft methods, SaRA)
    sparsity: float = 0.01  # SaRA: fraction of each targeted weight that trains
    # Class-prior preservation weight; -1 = 0 for plain full fine-tuning, else 1 (on the dev
    # split every method without it forgot 20-70 points of the base suite).
    prior_weight: float = -1.0
    prior_images: int = 42  # images of known concepts for the prior loss
    # world: exact renders of known concepts; base: the base's own samples (DreamBooth's). On
    # the dev split the base's samples (with its mistakes) cost LoRA 14-26 points of the base
    # suite against 1-5 with renders (benchmarks/results/tune/star-dev.jsonl).
    prior_source: str = "world"
    # data: the prior images' denoising target; base: the frozen base's own prediction for the
    # same noisy input (the prior loss then measures drift from the base directly; on dev
    # LoRA kept no more of the base suite with it and learned the concept less: 59% vs 75%)
    prior_target: str = "data"
    cond_dropout: float = 0.0  # 0: the unconditional branch is not retrained on the concept
    # Each batch draws its images without replacement and its noise levels one per stratum of
    # the training density (VDM's low-discrepancy sampler): less gradient noise per step.
    stratified: bool = False
    # A flow base's timestep shift for tuning, in place of the base's own (SD3's shift of the
    # logit-normal density, 2024): > 1 draws noisier inputs, where a shape is decided; 0 = the
    # base's own density
    shift: float = 0.0
    # Weight of a loss that holds the unconditional branch to the frozen base's prediction (on
    # the concept's and the prior's images, empty caption). Guidance multiplies a drift of that
    # branch by (1 - scale): at CFG 3 by -2, on every prompt; 0 = off.
    uncond_weight: float = 0.0
    # Decay of a moving average of the trained tensors; 0 = off (0.99 lost 19 concept points on
    # the dev split).
    ema: float = 0.0
    token: str = ""  # Textual Inversion's pseudo-word; "" = "<concept>"
    # fp32, or auto: bf16 autocast for the forward pass where the CPU computes bf16 natively
    # (difflab.runtime.machine.resolve_precision), fp32 elsewhere; bf16 asks for it anyway
    precision: str = "fp32"
    # Learning rate over the steps: constant, or cosine (half a cosine from lr down to 0)
    schedule: str = "constant"
    seed: int = 0

    def __post_init__(self) -> None:
        _one_of("tuning method", self.method, METHODS)
        check_int("images", self.images, 1, 10_000)
        check_int("steps", self.steps, 1, 1_000_000)
        check_int("batch_size", self.batch_size, 1, 4096)
        check_int("rank", self.rank, 1, 4096)
        check_int("prior_images", self.prior_images, 0, 100_000)
        check_float("lr", self.lr, 0.0, 1.0)
        check_float("alpha", self.alpha, 0.0, 1e6)
        check_float("dropout", self.dropout, 0.0, 0.99)
        check_float("cond_dropout", self.cond_dropout, 0.0, 1.0)
        check_float("uncond_weight", self.uncond_weight, 0.0, 100.0)
        check_float("sparsity", self.sparsity, 1e-6, 1.0)
        if self.shift != 0.0:
            check_float("shift", self.shift, 0.01, 100.0)
        check_float("ema", self.ema, 0.0, 0.99999)
        _one_of("prior_source", self.prior_source, PRIOR_SOURCES)
        _one_of("object sizes", self.object_sizes, OBJECT_SIZES)
        _one_of("prior_target", self.prior_target, PRIOR_TARGETS)
        if self.prior_weight != -1.0:
            check_float("prior_weight", self.prior_weight, 0.0, 100.0)
        _one_of("lora_init", self.lora_init, LORA_INITS)
        _one_of("tuning precision", self.precision, TUNE_PRECISIONS)
        _one_of("learning-rate schedule", self.schedule, SCHEDULES)
        parse_rank_pattern(self.rank_pattern)
        if self.rank_pattern and self.method not in PEFT_METHODS:
            raise ConfigError(f"rank_pattern is for the peft methods, not {self.method}")
        if not isinstance(self.stratified, bool):
            raise ConfigError(f"stratified must be true or false, not {self.stratified!r}")

    @property
    def learning_rate(self) -> float:
        return self.lr or DEFAULT_LR[self.method]

    @property
    def prior(self) -> float:
        """The prior-preservation weight in effect."""
        if self.prior_weight >= 0:
            return self.prior_weight
        return 0.0 if self.method == "full" else 1.0

    @property
    def pseudo_word(self) -> str:
        return self.token or f"<{self.concept}>"


@dataclass
class TuneResult:
    """A finished tuning run: the change, the adaptation it came from and what it cost."""

    config: TuneConfig
    delta: Delta
    adaptation: Adaptation
    trainable: int
    seconds: float
    losses: list[float] = field(default_factory=list)


def lr_factor(schedule: str, step: int, steps: int) -> float:
    """The learning rate of step `step` of `steps`, as a share of the configured one."""
    if schedule == "cosine":  # SGDR (2017) without restarts: half a cosine down to 0
        return 0.5 * (1 + math.cos(math.pi * step / steps))
    return 1.0


def _to_tensor(images: np.ndarray) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1


class _Conditioning:
    """Captions -> network kwargs: through the pipeline's cache, or with gradients into the
    new token's embedding for Textual Inversion."""

    def __init__(self, pipe: Any, cfg: TuneConfig) -> None:
        self.pipe, self.cfg = pipe, cfg
        self.encoder = getattr(getattr(pipe.conditioner, "cache", None), "encoder", None)
        if self.encoder is None:
            raise ConfigError("tuning needs a text-conditioned base (its prompts name the "
                              f"concept); this one is {pipe.conditioner.describe()}")

    def __call__(self, captions: list[str]) -> dict[str, Tensor]:
        if self.cfg.method != "textual":
            return self.pipe.condition(captions)
        return self.encoder.forward_states(captions).network_kwargs()


def _textual(pipe: Any, cfg: TuneConfig) -> Adaptation:
    """An Image is Worth One Word: Personalizing Text-to-Image Generation using Textual Inversion
    (2022): one new token embedding in front of the frozen text encoder; the network is frozen."""
    from difflab.text.hf import HFTextEncoder, add_token

    encoder = pipe.conditioner.encoder
    if not isinstance(encoder, HFTextEncoder):
        raise ConfigError("Textual Inversion needs a transformers text encoder (e.g. minilm)")
    token = cfg.pseudo_word
    token_id = add_token(encoder, token, init_word="shape")
    table = encoder.model.get_input_embeddings().weight
    table.requires_grad_(True)
    row = torch.zeros(table.shape[0], 1)
    row[token_id] = 1.0
    table.register_hook(lambda g: g * row)
    table._difflab_trainable = table.shape[1]  # type: ignore[attr-defined]
    pipe.net.requires_grad_(False)
    return Adaptation(pipe.net, [table], lambda: Delta(tokens={token: table[token_id].detach()
                                                               .clone()}), token=token)


def prior_set(pipe: Any, n: int, seed: int, source: str = "base",
              progress: bool = True) -> tuple[np.ndarray, list]:
    """The class-prior images of `n` single-object prompts of known concepts (the world's
    training pairs, in suite order): DreamBooth's (the base's own samples, demo sampling
    settings) or exact renders of the shapes world."""
    from difflab.data.suites import load_suite

    specs = [load_suite("single")[i % len(load_suite("single"))] for i in range(n)]
    seeds = [seed + 7_000_000 + i for i in range(n)]
    if source == "world":
        from difflab.data.shapes import render_specs

        return render_specs(specs, seeds, pipe.pixel_shape[1]), [s.text for s in specs]
    from difflab.demo import DEMO_SAMPLING

    prompts = [s.text for s in specs]
    return pipe.generate(prompts, seeds, DEMO_SAMPLING, progress=progress), prompts


def tune(pipe: Any, cfg: TuneConfig, images: np.ndarray, captions: Sequence[str],
         progress: bool = True) -> TuneResult:
    """Train `cfg.method` on `pipe` (its network is changed in place) with `images` (N, H, W, 3)
    uint8 and their captions; returns the change and its cost."""
    if len(images) != len(captions) or len(images) == 0:
        raise ConfigError(f"{len(images)} images but {len(captions)} captions")
    if tuple(images.shape[1:3]) != tuple(pipe.pixel_shape[1:]):
        raise ConfigError(f"images are {images.shape[1]}x{images.shape[2]}; the base draws "
                          f"{pipe.pixel_shape[1]}x{pipe.pixel_shape[2]}")
    if cfg.shift and not hasattr(pipe.process, "shift"):
        raise ConfigError(f"shift is for flow bases; this base's process is "
                          f"{pipe.process.kind!r}")
    torch.manual_seed(cfg.seed)  # adapter initialisation (peft draws from the global generator)
    prior = (prior_set(pipe, cfg.prior_images, cfg.seed, cfg.prior_source, progress)
             if cfg.prior > 0 else None)
    condition = _Conditioning(pipe, cfg)
    teacher = None
    if (prior is not None and cfg.prior_target == "base") or cfg.uncond_weight > 0:
        teacher = copy.deepcopy(pipe.net).eval().requires_grad_(False)
    if cfg.method == "textual":
        adaptation = _textual(pipe, cfg)
        captions = [c.replace(cfg.concept, cfg.pseudo_word) for c in captions]
    else:
        adaptation = METHOD_PREPARERS.get(cfg.method)(pipe.net, cfg)
    opt = torch.optim.AdamW(adaptation.params, lr=cfg.learning_rate, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: lr_factor(cfg.schedule, step, cfg.steps))
    # what the network denoises: the images, or a latent base's latents of them
    x_all = pipe.encode(_to_tensor(images)).cpu()
    px = pipe.encode(_to_tensor(prior[0])).cpu() if prior is not None else None
    ux = torch.cat([x_all, px]) if px is not None else x_all  # the unconditional loss's images
    start, losses = time.perf_counter(), []
    steps = range(cfg.steps)
    if progress:
        from tqdm import tqdm

        steps = tqdm(steps, desc=f"tune {cfg.method}", unit="step")
    shadow = [p.detach().clone() for p in adaptation.params] if cfg.ema > 0 else None
    adaptation.net.train()
    autocast = _autocast(pipe, cfg.precision)
    prior_teacher = teacher if cfg.prior_target == "base" else None

    def tuning_loss(gen: torch.Generator) -> Tensor:
        with autocast:
            loss = _loss(pipe, adaptation, condition, x_all, list(captions), cfg, gen)
            if px is not None:
                loss = loss + cfg.prior * _loss(pipe, adaptation, condition, px, prior[1], cfg,
                                                gen, prior_teacher)
            if cfg.uncond_weight > 0:
                loss = loss + cfg.uncond_weight * _loss(pipe, adaptation, condition, ux,
                                                        [""] * len(ux), cfg, gen, teacher)
        return loss

    if cfg.lora_init == "gradient":  # its own draws, apart from the steps'
        gradient_start(adaptation.net, lambda k: tuning_loss(
            torch.Generator().manual_seed(2**62 + cfg.seed * 1_000_003 + k)),
            GRADIENT_START_BATCHES)
    for step in steps:
        loss = tuning_loss(torch.Generator().manual_seed(cfg.seed * 1_000_003 + step))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(adaptation.params, 1.0)
        opt.step()
        schedule.step()
        if shadow is not None:  # warmed-up decay, as the trainer's EMA
            decay = min(cfg.ema, (1 + step) / (10 + step))
            for s, p in zip(shadow, adaptation.params, strict=True):
                s.lerp_(p.detach(), 1 - decay)
        losses.append(loss.item())
        if progress and step % 20 == 0:
            steps.set_postfix(loss=f"{loss.item():.4f}")
    if shadow is not None:
        with torch.no_grad():
            for s, p in zip(shadow, adaptation.params, strict=True):
                p.copy_(s)
    adaptation.net.eval()
    seconds = time.perf_counter() - start
    return TuneResult(cfg, adaptation.delta(), adaptation, trainable_count(adaptation), seconds,
                      losses)


def _autocast(pipe: Any, precision: str) -> Any:
    """The forward passes' autocast for `precision` (a no-op context for fp32)."""
    from difflab.runtime.machine import resolve_precision

    return resolve_precision(precision, pipe.device).autocast(pipe.device)


def _loss(pipe: Any, adaptation: Adaptation, condition: _Conditioning, x: Tensor,
          captions: list[str], cfg: TuneConfig, gen: torch.Generator,
          teacher: torch.nn.Module | None = None) -> Tensor:
    """The base's weighted denoising loss on a batch drawn from `x` (with replacement, or
    stratified); with a `teacher`, its prediction replaces the process's target."""
    if cfg.stratified:  # every image once before any twice; one noise level per stratum
        idx = torch.randperm(len(x), generator=gen).repeat(-(-cfg.batch_size // len(x)))
        idx = idx[: cfg.batch_size]
    else:
        idx = torch.randint(0, len(x), (cfg.batch_size,), generator=gen)
    x0 = x[idx]
    drop = torch.rand(cfg.batch_size, generator=gen) < cfg.cond_dropout
    texts = ["" if d else captions[i] for i, d in zip(idx.tolist(), drop.tolist(), strict=True)]
    density = replace(pipe.process, shift=cfg.shift) if cfg.shift else pipe.process
    sigma = (density.stratified_sigma if cfg.stratified
             else density.sample_sigma)(cfg.batch_size, generator=gen)
    noise = torch.randn(x0.shape, generator=gen)
    x_in, t = pipe.process.net_input(x0, noise, sigma)
    kwargs = condition(texts)
    out = adaptation.net(x_in, t, **kwargs)
    if teacher is None:
        target = pipe.process.target(x0, noise, sigma)
    else:
        with torch.no_grad():
            target = teacher(x_in, t, **{k: v.detach() if isinstance(v, Tensor) else v
                                             for k, v in kwargs.items()})
    err = (out.float() - target.float()).pow(2).flatten(1).mean(1)
    return (pipe.process.loss_weight(sigma).float() * err).mean()
