"""What a run trains (`Parts`) and how a TrainConfig builds it: data set, sample grids, and the
network, process and text encoder from `difflab.runtime.build`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from difflab.config import ConfigError
from difflab.data.sets import DATASETS
from difflab.runtime.build import TEXT_MODULE, attach_text, build_network, build_process, build_text
from difflab.runtime.latent import (
    AE_WEIGHTS,
    autoencoder_file,
    check_latent_network,
    latent_shape,
    read_autoencoder,
)
from difflab.train.config import TrainConfig


@dataclass
class Parts:
    """What a run trains: the network, the process, the data set and an optional text encoder."""

    net: nn.Module
    process: Any
    dataset: Sequence[dict]
    text_encoder: Any | None = None
    null_class: int | None = None  # the label meaning "no class" (CFG dropout for labels)
    sample_grid: Callable[[nn.Module, int], Any] | None = None  # (ema_net, step) -> saved path
    autoencoder: nn.Module | None = None  # latent diffusion: encodes each batch (frozen)
    autoencoder_file: Path | None = None  # its weights, copied into every checkpoint

    def extra_files(self) -> dict[str, Path]:
        """Files a checkpoint carries besides its own: a latent model's autoencoder."""
        return {AE_WEIGHTS: self.autoencoder_file} if self.autoencoder_file else {}


def build_parts(cfg: TrainConfig) -> Parts:
    """Everything `run_training` needs, built from the config alone."""
    net = build_network(cfg.model, seed=cfg.run.seed)
    dataset = DATASETS.get(cfg.data.name)(dict(cfg.data.options))
    text = attach_text(net, build_text(cfg.text))
    num_classes = getattr(getattr(net, "config", None), "num_classes", 0)
    process = build_process(cfg.process)
    parts = Parts(net=net, process=process, dataset=dataset, text_encoder=text,
                  null_class=num_classes or None)
    if cfg.latent.autoencoder:
        parts.autoencoder_file = autoencoder_file(cfg.latent.autoencoder)
        parts.autoencoder = read_autoencoder(parts.autoencoder_file)
        image = tuple(dataset[0]["image"].shape)  # (C, H, W)
        check_latent_network(net.config, latent_shape(parts.autoencoder.config, image))
    if cfg.run.sample_every and cfg.run.sample_prompts:
        parts.sample_grid = _grid_writer(cfg, parts, num_classes)
    return parts


def _grid_writer(cfg: TrainConfig, parts: Parts,
                 num_classes: int) -> Callable[[nn.Module, int], Path]:
    """A function that samples `run.sample_prompts` (seed i for prompt i, Euler, fp32) through
    the sampling pipeline and saves a grid; the prompts are checked now, not mid-run."""
    from difflab.data.grid import make_grid
    from difflab.runtime.build import class_names
    from difflab.runtime.conditioning import make_conditioner
    from difflab.runtime.pipeline import Pipeline, SampleConfig

    process, text, dataset = parts.process, parts.text_encoder, parts.dataset
    prompts = list(cfg.run.sample_prompts)
    names = class_names(cfg.data, num_classes) if num_classes else ()
    conditioner = make_conditioner(text, names)
    try:
        conditioner.kwargs(prompts, torch.device("cpu"))
    except ConfigError as e:
        raise ConfigError(f"run.sample_prompts: {e}") from None
    shape = tuple(dataset[0]["image"].shape)  # (C, H, W)
    if parts.autoencoder is not None:  # the network denoises latents; the pipeline decodes
        shape = latent_shape(parts.autoencoder.config, shape)
    config = SampleConfig(steps=cfg.run.sample_steps, precision="fp32", batch_size=len(prompts))

    def write(net: nn.Module, step: int) -> Path:
        own = getattr(net, TEXT_MODULE, None)  # a trainable encoder: the EMA copy's own
        pipe = Pipeline(net, process, make_conditioner(own, names) if own else conditioner, shape,
                        autoencoder=parts.autoencoder)
        images = pipe.generate(prompts, list(range(len(prompts))), config)
        path = Path(cfg.run.out_dir) / "samples" / f"step_{step:06d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        make_grid(images, labels=prompts).save(path)
        return path

    return write
