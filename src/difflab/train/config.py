"""The training config: frozen dataclasses loaded from `configs/*.toml` (unknown keys: errors)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from difflab.config import ConfigError, load_toml, parse_override, replace_path
from difflab.runtime.build import DataSection, ModelSection, ProcessSection, TextSection


@dataclass(frozen=True)
class OptimSection:
    """AdamW hyper-parameters and gradient clipping (max global L2 norm; 0 disables)."""

    lr: float = 3e-4
    betas: tuple[float, ...] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    grad_clip: float = 1.0


@dataclass(frozen=True)
class ScheduleSection:
    """Steps, global batch, accumulation and the learning-rate shape."""

    steps: int = 1000
    batch_size: int = 64
    accumulation: int = 1
    warmup_steps: int = 100
    decay: Literal["none", "cosine"] = "none"
    min_lr_ratio: float = 0.0


@dataclass(frozen=True)
class EmaSection:
    """EMA of the weights; the effective decay ramps up as min(decay, (1 + n) / (10 + n))."""

    decay: float = 0.999


@dataclass(frozen=True)
class RunSection:
    """Seed, device, precision, patch masking, logging, checkpoints and fault handling."""

    seed: int = 0
    out_dir: str = "runs/default"
    device: str = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto: bf16 where native
    mask_ratio: float = 0.0
    # conv weights and activations in channels_last (NHWC): 1.34x faster fp32 UNet training
    # steps on an AVX2 CPU (benchmarks/results/precision/train_loop.json)
    channels_last: bool = False
    workers: int = 0
    log_every: int = 10
    ckpt_every: int = 200
    keep_last: int = 3
    sample_every: int = 0
    sample_prompts: tuple[str, ...] = ()
    sample_steps: int = 20
    nonfinite_patience: int = 3
    max_rollbacks: int = 3
    progress: bool = True


@dataclass(frozen=True)
class DebugSection:
    """Fault injection that exercises the real recovery path (tests and drills only)."""

    # Steps whose batch is replaced by NaNs before the first rollback (a transient fault).
    nan_steps: tuple[int, ...] = ()


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run; stored in every checkpoint's config.json."""

    model: ModelSection = field(default_factory=ModelSection)
    process: ProcessSection = field(default_factory=ProcessSection)
    data: DataSection = field(default_factory=DataSection)
    text: TextSection = field(default_factory=TextSection)
    optim: OptimSection = field(default_factory=OptimSection)
    schedule: ScheduleSection = field(default_factory=ScheduleSection)
    ema: EmaSection = field(default_factory=EmaSection)
    run: RunSection = field(default_factory=RunSection)
    debug: DebugSection = field(default_factory=DebugSection)


def _check_range(name: str, value: float, lo: float, hi: float) -> None:
    if not lo <= value <= hi:
        raise ConfigError(f"{name} = {value!r} must lie in [{lo}, {hi}]")


def validate(cfg: TrainConfig) -> TrainConfig:
    """Reject values that type-check but make no sense, naming the key and the valid range."""
    s, r = cfg.schedule, cfg.run
    for name, value in [("schedule.steps", s.steps), ("schedule.batch_size", s.batch_size),
                        ("schedule.accumulation", s.accumulation), ("run.ckpt_every", r.ckpt_every),
                        ("run.keep_last", r.keep_last), ("run.log_every", r.log_every),
                        ("run.nonfinite_patience", r.nonfinite_patience)]:
        if value < 1:
            raise ConfigError(f"{name} = {value!r} must be a positive integer")
    if s.batch_size % s.accumulation:
        raise ConfigError(
            f"schedule.batch_size = {s.batch_size} is not divisible by "
            f"schedule.accumulation = {s.accumulation}"
        )
    _check_range("text.cond_dropout", cfg.text.cond_dropout, 0.0, 1.0)
    _check_range("run.mask_ratio", r.mask_ratio, 0.0, 0.95)
    _check_range("ema.decay", cfg.ema.decay, 0.0, 1.0)
    _check_range("schedule.min_lr_ratio", s.min_lr_ratio, 0.0, 1.0)
    if len(cfg.optim.betas) != 2:
        raise ConfigError(f"optim.betas = {list(cfg.optim.betas)!r} must have two values")
    if s.warmup_steps < 0:
        raise ConfigError(f"schedule.warmup_steps = {s.warmup_steps} must be >= 0")
    return cfg


def load_train_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """Load a TOML training config and apply `key=value` overrides (dotted keys)."""
    cfg = load_toml(TrainConfig, path)
    for text in overrides or []:
        cfg = apply_override(cfg, *parse_override(text))
    return validate(cfg)


def apply_override(cfg: TrainConfig, key: str, value: Any) -> TrainConfig:
    """Set a dotted key; keys inside the free-form tables (`model.overrides.depth`) are allowed."""
    parts = key.split(".")
    free = {("model", "overrides"), ("process", "options"), ("data", "options"),
            ("text", "options")}
    if len(parts) >= 3 and tuple(parts[:2]) in free:
        table = dict(getattr(getattr(cfg, parts[0]), parts[1]))
        table[".".join(parts[2:])] = value
        key, value = ".".join(parts[:2]), table
    try:
        return replace_path(cfg, key, value)
    except ConfigError as e:
        raise ConfigError(f"override {key}={value!r}: {e}") from None
