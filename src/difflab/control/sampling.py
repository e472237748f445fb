"""Sampling a pipeline under control: latent guidance on attention maps, a ControlNet, or both.

`generate_controlled(pipe, prompts, seeds, config, layouts, guidance=..., control=...)` is what
`difflab sample --layout/--box-guidance/--attend-excite/--control` and the benchmarks call. With
neither, it is `pipe.generate` (same images, bit for bit).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from difflab.config import ConfigError
from difflab.control.guidance import (
    ENERGIES,
    GuidanceConfig,
    Targets,
    sample_euler_latent_guided,
)
from difflab.control.layout import Layout, phrase_token_indices
from difflab.control.probe import apply_attention_probe, token_maps
from difflab.core.samplers import initial_noise
from difflab.data.grid import to_uint8
from difflab.runtime.pipeline import Pipeline, SampleConfig


def text_tokenizer(pipe: Pipeline, what: str = "latent guidance"):
    """(tokenizer, max_length) of the pipeline's transformers text encoder, else ConfigError
    saying that `what` needs one."""
    encoder = getattr(getattr(pipe.conditioner, "cache", None), "encoder", None)
    tokenizer = getattr(encoder, "tokenizer", None)
    if tokenizer is None:
        raise ConfigError(f"{what} needs a text model with a transformers tokenizer "
                          "(e.g. minilm); this model has none")
    return tokenizer, encoder.max_length


def targets(pipe: Pipeline, layouts: Sequence[Layout], cond: dict[str, Tensor],
            resolution: int, subject_words: bool = False) -> Targets:
    """The token selections, box masks at the maps' `resolution` and word mask of a batch."""
    tokenizer, max_length = text_tokenizer(pipe)
    B, K = len(layouts), max(len(lay.phrases) for lay in layouts)
    tokens, boxes = torch.zeros(B, K, max_length), torch.zeros(B, K, resolution, resolution)
    valid = torch.zeros(B, K)
    centres = (torch.arange(resolution, dtype=torch.float32) + 0.5) / resolution
    for b, lay in enumerate(layouts):
        for k, (phrase, (x0, y0, x1, y1)) in enumerate(zip(lay.phrases, lay.boxes, strict=True)):
            idx = phrase_token_indices(tokenizer, lay.prompt, phrase, last_word=subject_words)
            if max(idx) >= max_length:
                raise ConfigError(f"phrase {phrase!r} lies past the text encoder's {max_length} "
                                  f"tokens in {lay.prompt!r}; shorten the prompt")
            tokens[b, k, idx] = 1.0 / len(idx)
            boxes[b, k] = (((centres >= y0) & (centres < y1))[:, None]
                           & ((centres >= x0) & (centres < x1))[None, :]).float()
            valid[b, k] = 1.0
    keep = cond["context_mask"].clone().float().cpu()  # (B, T)
    keep[:, 0] = 0.0  # [CLS]
    last = keep.sum(1).long()  # index of [SEP] (the last real token)
    keep[torch.arange(B), last.clamp(max=keep.shape[1] - 1)] = 0.0
    return Targets(tokens, boxes, valid, keep)


def _energy_fn(pipe: Pipeline, method: str, cond: dict[str, Tensor], layouts: Sequence[Layout]):
    """E(x, sigma): the conditional branch's forward with the probe on, then the energy."""
    model = pipe.process.denoiser(pipe.net)
    energy, cache = ENERGIES.get(method), {}

    def fn(x: Tensor, sigma: Tensor) -> Tensor:
        with apply_attention_probe(pipe.net) as probe:
            model(x, sigma * x.new_ones(x.shape[0]), **cond)
            maps = token_maps(probe)  # (B, T, r, r)
        if "t" not in cache:
            cache["t"] = targets(pipe, layouts, cond, maps.shape[-1],
                                 subject_words=method == "attend-excite")
        return energy(maps, cache["t"])

    return fn


def sample_controlled(pipe: Pipeline, layouts: Sequence[Layout], seeds: Sequence[int],
                      config: SampleConfig, guidance: GuidanceConfig | None = None,
                      control=None) -> Tensor:
    """One batch: float images (B, C, H, W); prompts are the layouts' prompts. `control` is a
    `ControlHandle` already attached to `pipe.net` (its maps are set here)."""
    prompts = [lay.prompt for lay in layouts]
    if control is not None:
        control.set_layouts(layouts, pipe.device)
    if guidance is None:
        return pipe.sample(prompts, list(seeds), config)
    if config.sampler != "euler":
        raise ConfigError(f"latent guidance samples with euler; got sampler {config.sampler!r}")
    with torch.no_grad():
        model, cond = pipe.denoiser(prompts, config)
    sigmas = pipe.sigmas(config).to(pipe.device)
    x = initial_noise(pipe.image_shape, seeds, device=pipe.device) * sigmas[0]
    guided = math.ceil(guidance.fraction * config.steps)
    with torch.no_grad():
        out = sample_euler_latent_guided(
            model, x, sigmas, energy=_energy_fn(pipe, guidance.method, cond, layouts),
            scale=guidance.scale, guided_steps=guided, iterations=guidance.iterations,
            extra_args=cond)
    return out.float()


def generate_controlled(pipe: Pipeline, layouts: Sequence[Layout], seeds: Sequence[int],
                        config: SampleConfig, guidance: GuidanceConfig | None = None,
                        control=None) -> np.ndarray:
    """Images (N, H, W, 3) uint8 for layouts[i] with seeds[i], in batches."""
    if len(layouts) != len(seeds):
        raise ConfigError(f"{len(layouts)} layouts but {len(seeds)} seeds")
    if guidance is not None and config.precision not in ("fp32", "auto"):
        raise ConfigError("latent guidance takes gradients in fp32; use --precision fp32")
    out, bs = [], config.batch_size
    for i in range(0, len(layouts), bs):
        sl = slice(i, i + bs)
        out.append(to_uint8(sample_controlled(pipe, layouts[sl], seeds[sl], config, guidance,
                                              control)))
    return np.concatenate(out)
