"""The training config: frozen dataclasses loaded from `configs/*.toml` (unknown keys: errors)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from difflab.config import ConfigError, from_dict, parse_override, read_toml, replace_path
from difflab.limits import check_float, check_int, check_prompt, check_seed, get_limits
from difflab.runtime.build import DataSection, ModelSection, ProcessSection, TextSection
from difflab.runtime.latent import LatentSection


@dataclass(frozen=True)
class OptimSection:
    """AdamW hyper-parameters and gradient clipping (max global L2 norm; 0 disables)."""

    lr: float = 3e-4
    betas: tuple[float, ...] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    grad_clip: float = 1.0

    def __post_init__(self) -> None:
        check_float("optim.lr", self.lr, 0.0, 1.0, lo_open=True)
        if len(self.betas) != 2:
            raise ConfigError(f"optim.betas = {list(self.betas)!r} must have two values")
        for i, beta in enumerate(self.betas):
            check_float(f"optim.betas[{i}]", beta, 0.0, 1.0)
            if beta == 1.0:
                raise ConfigError(f"optim.betas[{i}] = 1.0 must be below 1 (valid: [0, 1))")
        check_float("optim.eps", self.eps, 0.0, 1.0, lo_open=True)
        check_float("optim.weight_decay", self.weight_decay, 0.0)
        check_float("optim.grad_clip", self.grad_clip, 0.0)  # 0 disables clipping


@dataclass(frozen=True)
class ScheduleSection:
    """Steps, global batch, accumulation and the learning-rate shape."""

    steps: int = 1000
    batch_size: int = 64
    accumulation: int = 1
    warmup_steps: int = 100
    decay: Literal["none", "cosine"] = "none"
    min_lr_ratio: float = 0.0

    def __post_init__(self) -> None:
        lim = get_limits()
        check_int("schedule.steps", self.steps, 1, lim.max_train_steps, limit="max_train_steps")
        check_int("schedule.batch_size", self.batch_size, 1, lim.max_batch_size,
                  limit="max_batch_size")
        check_int("schedule.accumulation", self.accumulation, 1, self.batch_size)
        if self.batch_size % self.accumulation:
            raise ConfigError(
                f"schedule.batch_size = {self.batch_size} is not divisible by "
                f"schedule.accumulation = {self.accumulation}"
            )
        check_int("schedule.warmup_steps", self.warmup_steps, 0)
        check_float("schedule.min_lr_ratio", self.min_lr_ratio, 0.0, 1.0)


@dataclass(frozen=True)
class EmaSection:
    """EMA of the weights; the effective decay ramps up as min(decay, (1 + n) / (10 + n))."""

    decay: float = 0.999

    def __post_init__(self) -> None:
        check_float("ema.decay", self.decay, 0.0, 1.0)


DEVICES = ("auto", "cpu", "cuda")  # what train.distributed.pick_device understands


@dataclass(frozen=True)
class RunSection:
    """Seed, device, precision, patch masking, logging, checkpoints and fault handling."""

    seed: int = 0
    out_dir: str = "runs/default"
    device: str = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto: bf16 where native
    mask_ratio: float = 0.0
    # conv weights and activations in channels_last (NHWC); measured no faster for the demo
    # UNet in fp32 on an AVX2 CPU (benchmarks/results/precision/train_loop*.json)
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

    def __post_init__(self) -> None:
        check_seed("run.seed", self.seed)
        if self.device not in DEVICES:
            raise ConfigError(f"run.device = {self.device!r} is not one of {list(DEVICES)}")
        if not self.out_dir.strip():
            raise ConfigError("run.out_dir is empty; name a run folder")
        check_float("run.mask_ratio", self.mask_ratio, 0.0, 0.95)
        for name in ("workers", "sample_every", "max_rollbacks"):
            check_int(f"run.{name}", getattr(self, name), 0)
        for name in ("log_every", "ckpt_every", "keep_last", "nonfinite_patience"):
            check_int(f"run.{name}", getattr(self, name), 1)
        check_int("run.sample_steps", self.sample_steps, 1, get_limits().max_sample_steps,
                  limit="max_sample_steps")
        for i, prompt in enumerate(self.sample_prompts):
            check_prompt(f"run.sample_prompts[{i}]", prompt)


@dataclass(frozen=True)
class DebugSection:
    """Fault injection that exercises the real recovery path (tests and drills only)."""

    # Steps whose batch is replaced by NaNs before the first rollback (a transient fault).
    nan_steps: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        for i, step in enumerate(self.nan_steps):
            check_int(f"debug.nan_steps[{i}]", step, 0)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run; stored in every checkpoint's config.json."""

    model: ModelSection = field(default_factory=ModelSection)
    process: ProcessSection = field(default_factory=ProcessSection)
    data: DataSection = field(default_factory=DataSection)
    text: TextSection = field(default_factory=TextSection)
    latent: LatentSection = field(default_factory=LatentSection)
    optim: OptimSection = field(default_factory=OptimSection)
    schedule: ScheduleSection = field(default_factory=ScheduleSection)
    ema: EmaSection = field(default_factory=EmaSection)
    run: RunSection = field(default_factory=RunSection)
    debug: DebugSection = field(default_factory=DebugSection)


def validate(cfg: TrainConfig) -> TrainConfig:
    """Check what spans sections or names registries: the model preset and its overrides, the
    process and its options, the data set and text encoder names. Each section checks its own
    ranges on construction; this runs before anything is built, in microseconds."""
    from difflab.core.processes import PROCESSES
    from difflab.data.sets import DATASETS
    from difflab.models.base import model_config
    from difflab.text.base import TEXT_ENCODERS

    try:
        model_config(cfg.model.preset, **cfg.model.overrides)
    except ConfigError as e:  # name the key as the config spells it
        field = str(e).split(" ", 1)[0]
        where = "model.overrides." if field in cfg.model.overrides else \
            f"model (preset {cfg.model.preset!r}): "
        raise ConfigError(f"{where}{e}") from None
    from_dict(PROCESSES.get(cfg.process.name), dict(cfg.process.options), "process.options")
    DATASETS.get(cfg.data.name)
    enc = cfg.text.encoder
    if enc != "none" and enc not in TEXT_ENCODERS and not Path(enc).is_dir():
        TEXT_ENCODERS.get(enc)  # raises naming the valid encoders
    return cfg


def load_train_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """Load a TOML training config and apply `key=value` overrides (dotted keys)."""
    data = read_toml(path, "config file")
    if not data and not overrides:  # all defaults is never meant: likely the wrong file
        raise ConfigError(f"config file {path} sets nothing; start from configs/tiny.toml")
    cfg = from_dict(TrainConfig, data)
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
