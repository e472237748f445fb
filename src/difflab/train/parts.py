"""Build what a TrainConfig names: network, process, data set, text encoder, sample grids."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from difflab.config import ConfigError, from_dict
from difflab.registry import Registry
from difflab.train.config import TrainConfig
from difflab.train.trainer import Parts

DATASETS: Registry[Callable[[dict[str, Any]], Any]] = Registry("data set")


@DATASETS.register("shapes")
def _shapes(options: dict[str, Any]) -> Any:
    from difflab.data.shapes_dataset import ShapesConfig, ShapesDataset

    return ShapesDataset(from_dict(ShapesConfig, options, "data.options"))


@DATASETS.register("digits")
def _digits(options: dict[str, Any]) -> Any:
    from difflab.data.digits import DigitsDataset

    return DigitsDataset(**_kwargs(DigitsDataset, options))


@DATASETS.register("folder")
def _folder(options: dict[str, Any]) -> Any:
    from difflab.data.folder import ImageFolderDataset

    return ImageFolderDataset(**_kwargs(ImageFolderDataset, options))


def _kwargs(cls: type, options: dict[str, Any]) -> dict[str, Any]:
    """`options` checked against `cls`'s constructor: unknown or missing ones raise ConfigError."""
    import inspect

    params = [n for n in inspect.signature(cls).parameters if n != "self"]
    try:
        inspect.signature(cls).bind(**options)
    except TypeError as e:
        raise ConfigError(f"data.options for {cls.__name__}: {e}; valid: {', '.join(params)}") \
            from None
    return options


def build_network(cfg: TrainConfig) -> nn.Module:
    """The network `model.preset` + `model.overrides` names, initialised from `run.seed`."""
    from difflab.models import build_model

    torch.manual_seed(cfg.run.seed)
    return build_model(cfg.model.preset, **cfg.model.overrides)


def build_process(cfg: TrainConfig) -> Any:
    """The forward process `process.name` with `process.options` (a frozen dataclass)."""
    from difflab.core.processes import PROCESSES

    return from_dict(PROCESSES.get(cfg.process.name), cfg.process.options, "process.options")


def build_text(cfg: TrainConfig) -> Any | None:
    """A frozen text encoder (its embeddings are cached) or None for label/unconditional runs."""
    if cfg.text.encoder == "none":
        return None
    from difflab.text.base import build_text_encoder

    encoder = build_text_encoder(cfg.text.encoder, max_length=cfg.text.max_length,
                                 **cfg.text.options)
    if getattr(encoder, "trainable", False):
        raise ConfigError(f"text.encoder = {cfg.text.encoder!r} is trainable; the trainer caches "
                          "embeddings and supports frozen encoders only (e.g. 'minilm')")
    return encoder


def build_parts(cfg: TrainConfig) -> Parts:
    """Everything `run_training` needs, built from the config alone."""
    net = build_network(cfg)
    dataset = DATASETS.get(cfg.data.name)(dict(cfg.data.options))
    text = build_text(cfg)
    num_classes = getattr(getattr(net, "config", None), "num_classes", 0)
    process = build_process(cfg)
    parts = Parts(net=net, process=process, dataset=dataset, text_encoder=text,
                  null_class=num_classes or None)
    if cfg.run.sample_every and cfg.run.sample_prompts:
        parts.sample_grid = _grid_writer(cfg, process, text, dataset)
    return parts


def _grid_writer(cfg: TrainConfig, process: Any, text: Any | None,
                 dataset: Any) -> Callable[[nn.Module, int], Path]:
    """A function that samples `run.sample_prompts` (seed i for prompt i) and saves a grid."""
    from difflab.core.samplers import initial_noise, sample_euler
    from difflab.data.grid import make_grid, to_uint8

    prompts = list(cfg.run.sample_prompts)
    shape = tuple(dataset[0]["image"].shape)  # (C, H, W)

    @torch.no_grad()
    def write(net: nn.Module, step: int) -> Path:
        device = next(net.parameters()).device
        cond: dict[str, torch.Tensor] = {}
        if text is not None:
            tokens, mask, pooled = text.encode(prompts)
            cond = {"context": tokens.to(device), "context_mask": mask.to(device),
                    "pooled": pooled.to(device)}
        sigmas = process.default_schedule(cfg.run.sample_steps).to(device)
        x = initial_noise(shape, range(len(prompts)), device=device) * sigmas[0]
        images = sample_euler(process.denoiser(net), x, sigmas, extra_args=cond)
        path = Path(cfg.run.out_dir) / "samples" / f"step_{step:06d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        make_grid(to_uint8(images), labels=prompts).save(path)
        return path

    return write
