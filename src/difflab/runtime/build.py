"""What a model is made of, and how to build it: the network, process, data and text sections of
a config (shared with the trainer's `TrainConfig`) and one builder per part.

Nothing here imports `difflab.train`: sampling a saved model needs only these sections.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from difflab.config import ConfigError, from_dict
from difflab.limits import check_float, check_int, get_limits
from difflab.registry import Registry
from difflab.runtime.latent import LatentSection


@dataclass(frozen=True)
class ModelSection:
    """Which network: a preset of `difflab.models.PRESETS` plus keyword overrides."""

    preset: str = "dit-tiny"
    overrides: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.preset, str) or not self.preset:
            raise ConfigError(f"model.preset = {self.preset!r} must name a model preset")


@dataclass(frozen=True)
class ProcessSection:
    """Which forward process (`difflab.core.processes.PROCESSES`) and its options."""

    name: str = "flow"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DataSection:
    """Which data set (`shapes`, `digits`, `folder`) and its config fields."""

    name: str = "shapes"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TextSection:
    """Text conditioning: encoder name ("none": class labels or unconditional), CFG dropout."""

    encoder: str = "minilm"
    max_length: int = 32
    options: dict[str, Any] = field(default_factory=dict)
    cond_dropout: float = 0.1

    def __post_init__(self) -> None:
        check_int("text.max_length", self.max_length, 2, get_limits().max_text_tokens,
                  limit="max_text_tokens")  # 2: a start and an end token
        check_float("text.cond_dropout", self.cond_dropout, 0.0, 1.0)


@dataclass(frozen=True)
class ModelSpec:
    """The sections of a stored config that decide how a saved model samples."""

    model: ModelSection = field(default_factory=ModelSection)
    process: ProcessSection = field(default_factory=ProcessSection)
    data: DataSection = field(default_factory=DataSection)
    text: TextSection = field(default_factory=TextSection)
    latent: LatentSection = field(default_factory=LatentSection)


SPEC_SECTIONS = ("model", "process", "data", "text", "latent")


def spec_of(config: dict[str, Any], where: str = "config") -> ModelSpec:
    """The ModelSpec inside a stored config dict (other sections, e.g. optim, are ignored)."""
    if not isinstance(config, dict) or "model" not in config:
        raise ConfigError(f"{where} has no [model] section; it does not describe a difflab model")
    return from_dict(ModelSpec, {k: config[k] for k in SPEC_SECTIONS if k in config}, where)


def build_network(model: ModelSection, seed: int | None = None) -> nn.Module:
    """The network `model.preset` + `model.overrides` names, initialised from `seed` (None:
    from a forked RNG, for networks whose weights are loaded next)."""
    from difflab.models import build_model

    if seed is not None:
        torch.manual_seed(seed)
        return build_model(model.preset, **model.overrides)
    with torch.random.fork_rng(devices=[]):
        return build_model(model.preset, **model.overrides)


def build_process(process: ProcessSection) -> Any:
    """The forward process `process.name` with `process.options` (a frozen dataclass)."""
    from difflab.core.processes import PROCESSES

    return from_dict(PROCESSES.get(process.name), process.options, "process.options")


def build_text(text: TextSection) -> Any | None:
    """The text encoder (frozen, or trainable like "learned") or None for label/unconditional
    models."""
    if text.encoder == "none":
        return None
    from difflab.text.base import build_text_encoder

    return build_text_encoder(text.encoder, max_length=text.max_length, **text.options)


TEXT_MODULE = "text_encoder"  # where a trainable encoder lives inside the network


def attach_text(net: nn.Module, encoder: Any | None) -> Any | None:
    """Make a trainable encoder the network's submodule `text_encoder`, so that it is optimised,
    averaged (EMA), saved and loaded with the network; return the encoder the model conditions
    on (the network's own copy when it has one, else `encoder`)."""
    want = getattr(getattr(net, "config", None), "context_dim", 0)
    width = getattr(encoder, "dim", want)
    if encoder is not None and want and width != want:
        raise ConfigError(f"text encoder {getattr(encoder, 'name', '?')!r} gives {width}-wide "
                          f"token states but the model's context_dim is {want}; set "
                          f"text.options.dim = {want} or model.overrides.context_dim = {width}")
    if getattr(encoder, "trainable", False):
        net.add_module(TEXT_MODULE, encoder)
    return getattr(net, TEXT_MODULE, None) or encoder


def build_model(spec: Any) -> tuple[nn.Module, Any | None]:
    """(network, text encoder) of a stored model, the encoder attached where it is trainable:
    what every loader builds before reading the weights. `spec`: a ModelSpec or a TrainConfig."""
    net = build_network(spec.model)
    return net, attach_text(net, build_text(spec.text))


# data set name -> function of its options giving the class names of its labels 0..K-1
CLASS_NAMES: Registry[Callable[[dict[str, Any]], tuple[str, ...]]] = Registry("class names")


@CLASS_NAMES.register("digits")
def _digit_names(options: dict[str, Any]) -> tuple[str, ...]:
    return tuple(str(i) for i in range(10))


@CLASS_NAMES.register("shapes")
def _shape_names(options: dict[str, Any]) -> tuple[str, ...]:
    from difflab.data.captions import a_noun
    from difflab.data.shapes_dataset import ALL_PAIRS

    return tuple(a_noun(shape, color) for shape, color in ALL_PAIRS)


def class_names(data: DataSection, num_classes: int) -> tuple[str, ...]:
    """The names of labels 0..num_classes-1: the data set's own, else the indices as strings."""
    names = CLASS_NAMES.get(data.name)(dict(data.options)) if data.name in CLASS_NAMES else ()
    if len(names) != num_classes:
        names = tuple(str(i) for i in range(num_classes))
    return names
