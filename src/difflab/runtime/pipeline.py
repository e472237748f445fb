"""The sampling pipeline: a saved model's network, process and conditioner -> images.

`difflab.runtime.load(path)` builds one from any artefact; `Pipeline.generate(prompts, seeds,
SampleConfig(...))` is what `difflab sample`, `difflab eval`, the demo and the bench call.
Image b depends only on (prompts[b], seeds[b], config): the initial noise and every stochastic
sampler draw come from one generator per sample (`BatchNoise`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from difflab.accel.bottleneck import BottleneckConfig, sample_bottleneck, stage_steps
from difflab.config import ConfigError, from_dict
from difflab.core.guidance import cfg as classifier_free_guidance
from difflab.core.samplers import BatchNoise, count_nfe, get_sampler, initial_noise
from difflab.core.schedules import SCHEDULES, get_sigmas
from difflab.data.grid import to_uint8
from difflab.limits import check_float, check_int, check_prompt, get_limits
from difflab.runtime.machine import PRECISIONS, resolve_precision


@dataclass(frozen=True)
class SampleConfig:
    """How to sample: solver, steps, schedule, guidance and precision."""

    sampler: str = "euler"
    steps: int = 20
    cfg: float = 1.0
    schedule: str = ""  # "" = the process's default schedule
    schedule_options: dict[str, float] = field(default_factory=dict)
    sampler_options: dict[str, float] = field(default_factory=dict)  # e.g. eta
    guidance_interval: tuple[float, ...] = ()  # (sigma_lo, sigma_hi); () = every step
    guidance_rescale: float = 0.0
    negative_prompt: str = ""
    precision: str = "auto"  # auto: bf16 where the device computes it natively, else fp32
    batch_size: int = 32
    # Bottleneck Sampling stages (difflab.accel.bottleneck.BottleneckConfig fields:
    # scales, fractions, shifts); {} = every step at full resolution
    bottleneck: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        get_sampler(self.sampler)  # raises with the valid names
        lim = get_limits()
        check_int("steps", self.steps, 1, lim.max_sample_steps, limit="max_sample_steps")
        check_float("cfg", self.cfg, 0.0, lim.max_guidance, limit="max_guidance")
        check_float("guidance_rescale", self.guidance_rescale, 0.0, 1.0)
        check_prompt("negative_prompt", self.negative_prompt, allow_empty=True)
        if self.precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {self.precision!r}; valid: "
                              + ", ".join(PRECISIONS))
        if self.guidance_interval and len(self.guidance_interval) != 2:
            raise ConfigError(f"guidance_interval must be (lo, hi), got {self.guidance_interval}")
        if self.guidance_interval and not 0 <= self.guidance_interval[0] \
                <= self.guidance_interval[1]:
            raise ConfigError(f"guidance_interval = {self.guidance_interval} must be (lo, hi) "
                              "with 0 <= lo <= hi")
        check_int("batch_size", self.batch_size, 1, lim.max_batch_size, limit="max_batch_size")
        if self.schedule:
            SCHEDULES.get(self.schedule)  # raises with the valid names
        for table in ("sampler_options", "schedule_options"):
            for key, value in getattr(self, table).items():
                check_float(f"{table}.{key}", value)
        if self.bottleneck:
            stages = self.bottleneck_config()
            stage_steps(self.steps, stages.fractions)  # raises if too few steps for the stages

    def bottleneck_config(self) -> BottleneckConfig | None:
        """The Bottleneck Sampling stages, or None when sampling at full resolution only."""
        return from_dict(BottleneckConfig, dict(self.bottleneck), where="bottleneck") \
            if self.bottleneck else None

    @property
    def nfe(self) -> int:
        """Network evaluations per image (a CFG step is one batched forward of 2 rows)."""
        return count_nfe(self.sampler, self.steps)


def sample_config(data: dict[str, Any]) -> SampleConfig:
    """A SampleConfig from a dict (e.g. a bench point), rejecting unknown keys."""
    return from_dict(SampleConfig, data)


class Pipeline:
    """A trained denoising network with its process and conditioner, ready to sample."""

    def __init__(self, net: nn.Module, process: Any, conditioner: Any,
                 image_shape: tuple[int, int, int], *, source: str = "",
                 config: dict[str, Any] | None = None, kind: str = "",
                 labels: dict[str, str] | None = None,
                 autoencoder: nn.Module | None = None) -> None:
        self.net = net.eval()
        # latent diffusion: the network denoises latents, which this decodes to pixels
        self.autoencoder = autoencoder.eval() if autoencoder is not None else None
        self.process = process
        self.conditioner = conditioner  # difflab.runtime.conditioning: text, class or none
        self.image_shape = image_shape  # (C, H, W) of what the network denoises
        self.source = source  # the folder it was loaded from
        self.config = config or {}  # the stored config that made it (sections as dicts)
        self.kind = kind  # the artefact kind it was loaded from
        self.labels = dict(labels or {})  # e.g. {"quantization": "... (simulated)"}
        # SampleConfig fields this artefact samples with unless told otherwise (a distilled
        # student's own sampler and steps); {} = SampleConfig's defaults
        self.sample_defaults: dict[str, Any] = {}

    def describe(self) -> str:
        """What this pipeline is, one fact per line: source, network, conditioning, labels."""
        from difflab.quant.storage import model_bytes

        preset = self.config.get("model", {}).get("preset", "")
        rows = {"source": self.source or "(in memory)", "kind": self.kind or "-",
                "network": f"{type(self.net).__name__} {preset}".strip(),
                "weights": f"{model_bytes(self.net):,} bytes",
                "process": type(self.process).__name__,
                "conditioning": self.conditioner.describe(),
                "image": "x".join(map(str, self.pixel_shape)), **self.labels}
        if self.autoencoder is not None:
            rows["latents"] = "x".join(map(str, self.image_shape)) + " (decoded by the " \
                f"autoencoder, f = {self.autoencoder.config.downsample_factor})"
        width = max(map(len, rows))
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows.items())

    def default_config(self, **given: Any) -> SampleConfig:
        """A SampleConfig from the fields `given` (None = not given), then this artefact's
        `sample_defaults`, then SampleConfig's own defaults."""
        fields = {**self.sample_defaults, **{k: v for k, v in given.items() if v is not None}}
        return sample_config(fields)

    @property
    def pixel_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images `sample` returns: `image_shape`, or its decoded size."""
        if self.autoencoder is None:
            return self.image_shape
        f = self.autoencoder.config.downsample_factor
        _, h, w = self.image_shape
        return (self.autoencoder.config.in_channels, h * f, w * f)

    def decode(self, x: Tensor) -> Tensor:
        """Pixels from what the network denoised: latents through the decoder (fp32), else x."""
        if self.autoencoder is None:
            return x
        return self.autoencoder.decode_latents(x.float())

    @torch.no_grad()
    def encode(self, x: Tensor) -> Tensor:
        """What the network denoises for pixel images x (B, C, H, W) in [-1, 1]: the scaled
        posterior mean of a latent model's autoencoder (the inverse of `decode`), else x."""
        if self.autoencoder is None:
            return x
        if tuple(x.shape[1:]) != self.pixel_shape:
            raise ConfigError(f"images are {'x'.join(map(str, x.shape[1:]))}; this latent model "
                              f"encodes {'x'.join(map(str, self.pixel_shape))}")
        ae = self.autoencoder
        return ae.encode(x.float().to(self.device)).mean * ae.scale_factor

    @property
    def device(self) -> torch.device:
        # a network quantized throughout keeps its weights as buffers (codes and scales)
        tensors = itertools.chain(self.net.parameters(), self.net.buffers())
        return next(tensors, torch.empty(0)).device

    def condition(self, prompts: Sequence[str]) -> dict[str, Tensor]:
        """The network's conditioning kwargs for `prompts` (text states, class labels or none)."""
        return self.conditioner.kwargs(prompts, self.device)

    def sigmas(self, config: SampleConfig) -> Tensor:
        """The sampling schedule: the process's default, or a named one."""
        if not config.schedule:
            return self.process.default_schedule(config.steps)
        return get_sigmas(config.schedule, config.steps, **config.schedule_options)

    def denoiser(self, prompts: Sequence[str], config: SampleConfig) -> tuple[Any, dict]:
        """(denoiser, extra_args) for a batch of prompts, with guidance when cfg != 1."""
        model = self.process.denoiser(self.net)
        cond = self.condition(prompts)
        if config.cfg == 1.0:
            return model, cond
        uncond = self.conditioner.null(config.negative_prompt, len(prompts), self.device)
        interval = tuple(config.guidance_interval) or None
        guided = classifier_free_guidance(model, config.cfg, uncond, interval=interval,
                                          rescale=config.guidance_rescale)
        return guided, cond

    @torch.no_grad()
    def sample(self, prompts: Sequence[str], seeds: Sequence[int], config: SampleConfig,
               callback: Callable[[dict], None] | None = None) -> Tensor:
        """One batch: float images (B, C, H, W) in about [-1, 1] (latents decoded)."""
        if len(prompts) != len(seeds):
            raise ConfigError(f"{len(prompts)} prompts but {len(seeds)} seeds")
        model, cond = self.denoiser(prompts, config)
        sigmas = self.sigmas(config).to(self.device)
        x = initial_noise(self.image_shape, seeds, device=self.device) * sigmas[0]
        # stochastic samplers draw from generators seeded apart from the initial noise
        noise = BatchNoise([s + 1_000_003 for s in seeds])
        sampler = get_sampler(config.sampler)
        autocast = resolve_precision(config.precision, self.device).autocast(self.device)
        stages = config.bottleneck_config()
        with autocast:
            if stages is None:
                out = sampler(model, x, sigmas, extra_args=cond, callback=callback, noise=noise,
                              **config.sampler_options)
            else:
                out = sample_bottleneck(sampler, model, x, sigmas, stages, extra_args=cond,
                                        callback=callback, noise=noise, **config.sampler_options)
        return self.decode(out.float())

    def generate(self, prompts: Sequence[str], seeds: Sequence[int],
                 config: SampleConfig | None = None, progress: bool = False) -> np.ndarray:
        """Images (N, H, W, 3) uint8 for prompts[i] with seeds[i], in batches."""
        config = config or SampleConfig()
        if len(prompts) != len(seeds):
            raise ConfigError(f"{len(prompts)} prompts but {len(seeds)} seeds")
        bs = config.batch_size
        batches = range(math.ceil(len(prompts) / bs))
        if progress:
            from tqdm import tqdm

            resolve_precision(config.precision, self.device)  # its warning before the bar
            batches = tqdm(batches, desc=f"{config.sampler} x{config.steps}", unit="batch")
        out = []
        for i in batches:
            sl = slice(i * bs, (i + 1) * bs)
            out.append(to_uint8(self.sample(prompts[sl], seeds[sl], config)))
        return np.concatenate(out) if out else np.zeros((0, *self.pixel_shape[1:], 3), np.uint8)


def calibration_run(pipe: Pipeline, prompts: Sequence[str], config: SampleConfig,
                    seed: int = 0) -> Callable[[nn.Module], Tensor]:
    """A function that samples `prompts` with `model` in place of the pipeline's network:
    what timestep-aware quantizer calibration runs (activations from every step)."""
    def run(model: nn.Module) -> Tensor:
        original, pipe.net = pipe.net, model
        try:
            return pipe.sample(list(prompts), [seed + i for i in range(len(prompts))], config)
        finally:
            pipe.net = original

    return run
