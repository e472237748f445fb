"""`QuantConfig` (round-trips to TOML) and `QUANTIZERS`, the registry of named recipes."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from torch import Tensor, nn

from difflab.config import ConfigError, from_dict, to_dict
from difflab.quant.calibrate import RANGE_METHODS
from difflab.quant.formats import get_format
from difflab.registry import Registry

# a calibration run: executes the model (e.g. the sampler on a few prompts) and returns its
# output images, or None when only the activations matter
CalibrationRun = Callable[[nn.Module], Tensor | None]


@dataclass(frozen=True)
class QuantConfig:
    """Which layers get which number formats, how ranges are calibrated, and how it runs."""

    weight_format: str = "int8"  # a FORMATS name, or "none" to keep float weights
    weight_granularity: Literal["tensor", "channel", "group"] = "channel"
    weight_group_size: int = 64
    weight_symmetric: bool = True
    act_format: str = "int8"  # "none" keeps float activations (weight-only quantization)
    act_granularity: Literal["tensor", "token"] = "token"
    act_symmetric: bool = True
    act_dynamic: bool = True  # scales from each input (True) or from calibration (False)
    calibration: str = "minmax"  # a RANGE_METHODS name, for static activation scales
    timestep_aware: bool = True  # calibrate on every step of the trajectory, not the last
    timestep_groups: int = 1  # static activation scales per group of sampling steps
    samples_per_call: int = 4096
    smooth_alpha: float | None = None  # SmoothQuant migration strength; None = off
    lowrank_rank: int = 0  # SVDQuant low-rank branch rank; 0 = off
    lowrank_dtype: Literal["float32", "bfloat16", "float16"] = "bfloat16"
    include: tuple[str, ...] = ("*",)  # fnmatch patterns, or "re:<regex>", on module names
    exclude: tuple[str, ...] = ()
    layer_weight_format: tuple[str, ...] = ()  # "pattern=format" overrides (mixed precision)
    act_split: tuple[str, ...] = ()  # "pattern=channel" shortcut splits (Q-Diffusion)
    # real: int8 kernels (refused where they are slow); auto: real where this machine's int8
    # GEMMs are fast (VNNI/AMX or CUDA), else simulated with a one-line notice
    execution: Literal["simulated", "real", "auto"] = "simulated"

    def __post_init__(self) -> None:
        for fmt in (self.weight_format, self.act_format,
                    *(v for _, v in self.weight_format_overrides())):
            get_format(fmt)  # raises UnknownNameError listing the valid formats
        RANGE_METHODS.get(self.calibration)
        self.splits()
        if self.timestep_groups < 1:
            raise ConfigError(f"timestep_groups={self.timestep_groups} must be >= 1")
        if self.smooth_alpha is not None and not 0.0 <= self.smooth_alpha <= 1.0:
            raise ConfigError(f"smooth_alpha={self.smooth_alpha} must be in [0, 1]")
        if self.lowrank_rank < 0:
            raise ConfigError(f"lowrank_rank={self.lowrank_rank} must be >= 0")
        for name in ("weight_group_size", "samples_per_call"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)} must be >= 1")
        if self.act_granularity == "token" and not self.act_dynamic:
            raise ConfigError("act_granularity='token' needs act_dynamic=true (a scale per "
                              "token is computed from each input); use 'tensor' for static")
        if self.execution in ("real", "auto"):
            self._check_real()

    def _check_real(self) -> None:
        """The real int8 kernel path covers W8A8 symmetric int8 only."""
        wanted = {"weight_format": "int8", "weight_granularity": "channel",
                  "weight_symmetric": True, "act_format": "int8", "act_symmetric": True,
                  "lowrank_rank": 0, "layer_weight_format": (), "act_split": ()}
        for key, value in wanted.items():
            if getattr(self, key) != value:
                raise ConfigError(
                    f"execution='real' runs int8 W8A8 kernels and needs {key}={value!r}, got "
                    f"{getattr(self, key)!r}; use execution='simulated' for other formats"
                )

    @property
    def needs_calibration(self) -> bool:
        """True when quantize() must run the model: static scales or smoothing."""
        static = self.act_format != "none" and not self.act_dynamic
        return static or self.smooth_alpha is not None

    def weight_format_overrides(self) -> list[tuple[str, str]]:
        return [_pair(item, "layer_weight_format") for item in self.layer_weight_format]

    def splits(self) -> list[tuple[str, int]]:
        out = []
        for item in self.act_split:
            pattern, value = _pair(item, "act_split")
            if not value.isdigit() or int(value) <= 0:
                raise ConfigError(f"act_split entry {item!r}: the split must be a positive int")
            out.append((pattern, int(value)))
        return out

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QuantConfig:
        return from_dict(cls, data)

    def replace(self, **changes: Any) -> QuantConfig:
        return dataclasses.replace(self, **changes)


def _pair(item: str, key: str) -> tuple[str, str]:
    if "=" not in item:
        raise ConfigError(f"{key} entry {item!r} must look like 'pattern=value'")
    pattern, value = item.rsplit("=", 1)
    return pattern.strip(), value.strip()


# a recipe builds a config, possibly by measuring the model (mixed precision)
Recipe = Callable[[nn.Module, CalibrationRun | None], QuantConfig]
QUANTIZERS: Registry[Recipe] = Registry("quantizer")


def register_quantizer(name: str) -> Callable[[Recipe], Recipe]:
    """Register a named recipe `(model, run) -> QuantConfig`."""
    return QUANTIZERS.register(name)


def _fixed(name: str, doc: str, **fields: Any) -> None:
    def recipe(model: nn.Module, run: CalibrationRun | None = None) -> QuantConfig:
        return QuantConfig(**fields)

    recipe.__doc__ = doc
    register_quantizer(name)(recipe)


_fixed("w8a8", "int8 weights per channel, int8 per-token activations, simulated "
       "(ViDiT-Q, 2024).")
_fixed("w8a8_real", "int8 W8A8 through torch._int_mm, dynamic per-token activation scales.",
       execution="real")
# Static int8 activation ranges are min-max: on the demo UNet MSE-optimal clipping cut rare
# large activations that matter (w8a8_static PSNR to bf16, Euler: 22.2 dB with "mse", 39.0 dB
# with "minmax", 44.4 dB dynamic per-token; benchmarks/results/quant_euler).
_fixed("w8a8_static", "int8 W8A8 with static activation scales calibrated over all steps "
       "(Q-Diffusion, 2023).", act_granularity="tensor", act_dynamic=False,
       calibration="minmax", timestep_groups=4)
_fixed("w4a8_static", "int4 weights, int8 static per-tensor activation scales calibrated over "
       "the whole trajectory (Q-Diffusion's W4A8, 2023).", weight_format="int4",
       act_granularity="tensor", act_dynamic=False, calibration="minmax")
_fixed("w4a8", "int4 weights per channel, int8 per-token activations (MixDQ, 2024).",
       weight_format="int4")
_fixed("w4a4", "int4 weights and per-token activations, no outlier handling.",
       weight_format="int4", act_format="int4")
_fixed("w4a4_svd", "SVDQuant: smoothing, a rank-32 16-bit branch, int4 residual ("
       "'SVDQuant: Absorbing Outliers by Low-Rank Components...', 2024).",
       weight_format="int4", act_format="int4", smooth_alpha=0.5, lowrank_rank=32)
_fixed("fp8", "fp8 e4m3 weights and activations ('Low-Bitwidth Floating Point "
       "Quantization...', 2023).", weight_format="fp8_e4m3", act_format="fp8_e4m3")
_fixed("fp4", "fp4 e2m1 weights, fp8 e4m3 activations (FP4DiT, 2025).",
       weight_format="fp4_e2m1", act_format="fp8_e4m3")
