"""`quantize(model, QuantConfig) -> QuantHandle`: swap selected Linear/Conv2d modules for quantized
ones (simulated or real int8), calibrating on a user-supplied run; `handle.remove()` undoes it.
"""

from __future__ import annotations

import fnmatch
import os
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from difflab.config import ConfigError
from difflab.quant.calibrate import RANGE_METHODS, ActivationObserver
from difflab.quant.config import QUANTIZERS, CalibrationRun, QuantConfig
from difflab.quant.formats import get_format
from difflab.quant.kernels import Int8Linear
from difflab.quant.modules import ActQuantizer, QuantConv2d, QuantLinear, WeightSpec
from difflab.quant.outliers import smooth_scales

QUANTIZABLE = (nn.Linear, nn.Conv2d)


def _match(name: str, pattern: str) -> bool:
    if pattern.startswith("re:"):
        return re.fullmatch(pattern[3:], name) is not None
    return fnmatch.fnmatchcase(name, pattern)


def _first(name: str, pairs: Iterable[tuple[str, object]]) -> object | None:
    return next((value for pattern, value in pairs if _match(name, pattern)), None)


def select_layers(model: nn.Module, include: Iterable[str] = ("*",),
                  exclude: Iterable[str] = ()) -> dict[str, nn.Module]:
    """Linear/Conv2d modules whose `named_modules()` name matches an include pattern and no
    exclude pattern (fnmatch, or "re:<regex>" for a full-match regex)."""
    include, exclude = list(include), list(exclude)
    # a trainable text encoder inside the network (`text_encoder.*`) is not the denoiser: its
    # attention reads its projection weights directly, so it stays in float
    chosen = {
        name: m for name, m in model.named_modules()
        if isinstance(m, QUANTIZABLE) and not name.startswith("text_encoder.")
        and any(_match(name, p) for p in include)
        and not any(_match(name, p) for p in exclude)
    }
    if not chosen:
        names = [n for n, m in model.named_modules() if isinstance(m, QUANTIZABLE)][:8]
        raise ConfigError(f"include={include} exclude={exclude} select no Linear/Conv2d "
                          f"module; some valid names: {names}")
    return chosen


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def _channel_dim(module: nn.Module) -> int:
    return 1 if isinstance(module, nn.Conv2d) else -1


def _observe(model: nn.Module, layers: dict[str, nn.Module], cfg: QuantConfig,
             run: CalibrationRun, smooth: dict[str, Tensor]) -> dict[str, ActivationObserver]:
    """Run `run(model)` once with hooks recording each layer's (smoothed) input."""
    observers, hooks = {}, []
    for name, m in layers.items():
        split = _first(name, cfg.splits())
        obs = ActivationObserver(_channel_dim(m), split, cfg.samples_per_call,
                                 only_last_step=not cfg.timestep_aware)
        s = smooth.get(name)

        def hook(mod, args, obs=obs, s=s, cd=_channel_dim(m)):
            x = args[0]
            if s is not None:
                shape = [1] * x.dim()
                shape[cd] = -1
                x = x / s.view(shape)
            obs.record(x)

        observers[name] = obs
        hooks.append(m.register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            run(model)
    finally:
        for h in hooks:
            h.remove()
    return observers


def _smoothing(model: nn.Module, layers: dict[str, nn.Module], cfg: QuantConfig,
               run: CalibrationRun) -> dict[str, Tensor]:
    """Per-layer SmoothQuant factors from one calibration pass (grouped convs are skipped)."""
    eligible = {n: m for n, m in layers.items() if getattr(m, "groups", 1) == 1}
    observers = _observe(model, eligible, cfg, run, {})
    return {n: smooth_scales(observers[n].channel_absmax, m.weight, cfg.smooth_alpha)
            for n, m in eligible.items() if observers[n].channel_absmax is not None}


def _build(name: str, m: nn.Module, cfg: QuantConfig, obs: ActivationObserver | None,
           smooth: Tensor | None) -> nn.Module:
    """The quantized replacement of one layer."""
    fmt_a = get_format(cfg.act_format)
    act = ActQuantizer(fmt_a, cfg.act_granularity, cfg.act_symmetric, cfg.act_dynamic,
                       _channel_dim(m), _first(name, cfg.splits()), cfg.timestep_groups)
    if fmt_a is not None and not cfg.act_dynamic and obs is not None:
        lo, hi = obs.ranges(RANGE_METHODS.get(cfg.calibration), fmt_a, cfg.act_symmetric,
                            cfg.timestep_groups)
        act.set_ranges(lo, hi)
    if cfg.execution == "real":
        return Int8Linear(m, act, smooth)
    fmt_w = get_format(_first(name, cfg.weight_format_overrides()) or cfg.weight_format)
    spec = WeightSpec(fmt_w, cfg.weight_granularity, cfg.weight_group_size,
                      cfg.weight_symmetric)
    if isinstance(m, nn.Conv2d):
        return QuantConv2d(m, spec, act, smooth)
    return QuantLinear(m, spec, act, smooth, cfg.lowrank_rank, cfg.lowrank_dtype)


def _weight_format(m: nn.Module) -> str:
    if m.execution == "real":
        return "int8"
    return "float" if m.spec.fmt is None else m.spec.fmt.name


@dataclass
class QuantHandle:
    """What `quantize` changed: the replaced modules and how; `remove()` restores them."""

    model: nn.Module
    config: QuantConfig
    layers: dict[str, nn.Module] = field(default_factory=dict)
    originals: dict[str, nn.Module] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # name -> why it stayed float

    @property
    def execution(self) -> str:
        """"real" when every quantized layer runs integer kernels, else "simulated"."""
        kinds = {m.execution for m in self.layers.values()}
        return "real" if kinds == {"real"} else "simulated"

    def remove(self) -> None:
        """Put the original module objects back (bit-identical outputs)."""
        for name, original in self.originals.items():
            _set_module(self.model, name, original)
        self.layers.clear()
        self.originals.clear()

    def summary(self) -> list[dict]:
        """One row per quantized layer: name, type, weight/act format, bytes, execution."""
        cfg = self.config
        return [{"layer": n, "type": type(self.originals[n]).__name__,
                 "weight": _weight_format(m),
                 "act": cfg.act_format if cfg.act_format == "none" else
                 f"{cfg.act_format}/{'dynamic' if cfg.act_dynamic else 'static'}",
                 "bytes": m.storage_bytes(), "execution": m.execution}
                for n, m in self.layers.items()]


def resolve_execution(config: QuantConfig, device: torch.device) -> QuantConfig:
    """Real int8 kernels only where they are fast on `device`: `auto` falls back to simulated
    with one line; `real` is refused there (DIFFLAB_ALLOW_SLOW_INT8=1 runs it anyway, e.g. to
    test its numerics)."""
    from difflab.runtime import machine  # not at import: difflab.runtime imports quant

    if config.execution == "simulated":
        return config
    slow = machine.int8_kernels(device)
    if not slow or os.environ.get("DIFFLAB_ALLOW_SLOW_INT8") == "1":
        return config.replace(execution="real")
    if config.execution == "auto":
        print(f"int8: {slow}; running W8A8 simulated (labelled simulated, never timed as real)",
              file=sys.stderr)
        return config.replace(execution="simulated")
    raise ConfigError(f"real int8 execution asked for, but {slow}; use a simulated recipe "
                      "(e.g. w8a8), execution='auto', or DIFFLAB_ALLOW_SLOW_INT8=1 to run the "
                      "slow kernels anyway")


def plan(model: nn.Module, config: QuantConfig) -> tuple[QuantHandle, dict[str, nn.Module]]:
    """An empty handle and the layers `config` will replace (convs stay float when real)."""
    layers = select_layers(model, config.include, config.exclude)
    config = resolve_execution(config, next(model.parameters()).device)
    handle = QuantHandle(model, config)
    if config.execution == "real":
        for name in [n for n, m in layers.items() if not isinstance(m, nn.Linear)]:
            handle.skipped[name] = "real int8 kernels cover nn.Linear only; kept in float"
            del layers[name]
    return handle, layers


def quantize(model: nn.Module, config: QuantConfig | str,
             calibrate: CalibrationRun | None = None) -> QuantHandle:
    """Quantize `model` in place by config or recipe name ("Q-Diffusion", 2023, calibration;
    "SVDQuant", 2024, outliers); `calibrate(model)` runs it (e.g. a few sampler runs)."""
    if isinstance(config, str):
        config = QUANTIZERS.get(config)(model, calibrate)
    handle, layers = plan(model, config)
    if config.needs_calibration and calibrate is None:
        raise ConfigError("this config needs a calibration run (static activation scales or "
                          "smooth_alpha): pass calibrate=lambda model: <run the sampler>")
    smooth = _smoothing(model, layers, config, calibrate) if config.smooth_alpha is not None \
        else {}
    observers = {}
    if config.act_format != "none" and not config.act_dynamic:
        observers = _observe(model, layers, config, calibrate, smooth)
    return apply_layers(handle, layers, observers, smooth)


def apply_layers(handle: QuantHandle, layers: dict[str, nn.Module],
                 observers: dict[str, ActivationObserver], smooth: dict[str, Tensor]
                 ) -> QuantHandle:
    """Build and swap in the quantized layers (stats given; used by loading too)."""
    model, config = handle.model, handle.config
    for name, m in layers.items():
        q = _build(name, m, config, observers.get(name), smooth.get(name))
        q.to(next(m.parameters()).device)
        _set_module(model, name, q)
        handle.layers[name], handle.originals[name] = q, m
    return handle


def dequantize(handle: QuantHandle) -> nn.Module:
    """Restore the float model (the original modules, bit for bit) and return it."""
    handle.remove()
    return handle.model
