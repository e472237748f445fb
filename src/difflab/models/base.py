"""The model registry, named presets and `build_model`, shared by every architecture file."""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn

from difflab.config import ConfigError, from_dict, to_dict
from difflab.limits import check_float, check_int, get_limits
from difflab.registry import Registry, UnknownNameError

# architecture name ("dit", "mmdit", "unet") -> model class; each class has `config_class`
# and a static `flops_per_image(config, **kwargs)`.
MODELS: Registry[type[nn.Module]] = Registry("model")
# preset name -> config; filled by each architecture file at import time.
PRESETS: dict[str, Any] = {}


def add_presets(presets: dict[str, Any]) -> None:
    """Register named configs; a duplicate name is a programming error."""
    for name, cfg in presets.items():
        if name in PRESETS:
            raise ValueError(f"preset {name!r} is already defined")
        PRESETS[name] = cfg


def model_config(preset_or_config: str | Any, **overrides: Any) -> Any:
    """The config named by a preset (or given), with `overrides` applied and validated."""
    if isinstance(preset_or_config, str):
        if preset_or_config not in PRESETS:
            valid = ", ".join(sorted(PRESETS))
            raise UnknownNameError(f"unknown model preset {preset_or_config!r}; valid: {valid}")
        cfg = PRESETS[preset_or_config]
    else:
        cfg = preset_or_config
    if not dataclasses.is_dataclass(cfg) or not hasattr(cfg, "arch"):
        raise ConfigError(f"expected a preset name or a model config, got {cfg!r}")
    if overrides:
        cfg = from_dict(type(cfg), {**to_dict(cfg), **overrides})
    return cfg


def build_model(preset_or_config: str | Any, **overrides: Any) -> nn.Module:
    """Build a fresh model from a preset name or config, e.g. `build_model("pixart-s")`."""
    cfg = model_config(preset_or_config, **overrides)
    return MODELS.get(cfg.arch)(cfg)


def config_from_dict(arch: str, data: dict[str, Any]) -> Any:
    """Rebuild a model config from `to_dict` output (as stored beside a checkpoint)."""
    return from_dict(MODELS.get(arch).config_class, data)


def flops_per_image(config: Any, **kwargs: Any) -> int:
    """Analytic forward FLOPs (2 per multiply-add, matmuls/convs/attention) for one image."""
    return MODELS.get(config.arch).flops_per_image(config, **kwargs)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def check_choice(name: str, value: Any, valid: tuple) -> None:
    """Raise ConfigError naming `value` and the valid choices when `value` is not one of them."""
    if value not in valid:
        raise ConfigError(f"{name}={value!r} is not valid; valid: {list(valid)}")


def check_divisible(what: str, value: int, by: str, divisor: int) -> None:
    """Raise ConfigError unless `value` is a positive multiple of `divisor`."""
    if divisor <= 0 or value <= 0 or value % divisor:
        raise ConfigError(f"{what}={value} must be a positive multiple of {by}={divisor}")


def check_minimums(cfg: Any, minimums: dict[str, int], positive: tuple[str, ...] = ()) -> None:
    """Raise ConfigError for an int field under its minimum (e.g. depth >= 1), a float field in
    `positive` that is not a finite number > 0, or an input side over the max_image_size limit."""
    for name, lo in minimums.items():
        check_int(name, getattr(cfg, name), lo)
    for name in positive:
        check_float(name, getattr(cfg, name), 0.0, lo_open=True)
    if hasattr(cfg, "input_size"):
        check_int("input_size", cfg.input_size, 1, get_limits().max_image_size,
                  limit="max_image_size")


def presets_table(context_len: int = 32) -> str:
    """A Markdown table of every preset: input, tokens, parameters and analytic GFLOP/image."""
    import torch

    rows = ["| preset | arch | input | tokens | params (M) | GFLOP/img |", "|---" * 6 + "|"]
    for name, cfg in sorted(PRESETS.items()):
        with torch.device("meta"):  # count parameters without allocating them
            params = count_parameters(build_model(cfg))
        tokens = getattr(cfg, "num_tokens", "-")
        gflop = flops_per_image(cfg, context_len=context_len) / 1e9
        rows.append(f"| {name} | {cfg.arch} | {cfg.in_channels}x{cfg.input_size}x{cfg.input_size}"
                    f" | {tokens} | {params / 1e6:.2f} | {gflop:.3f} |")
    return "\n".join(rows)
