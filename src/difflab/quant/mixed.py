"""Mixed precision: per-layer sensitivity on the model's output, then an exact bit allocation
under a size budget (multiple-choice knapsack by dynamic programming), as in MixDQ / ViDiT-Q.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from difflab.config import ConfigError
from difflab.quant.config import CalibrationRun, QuantConfig, register_quantizer
from difflab.quant.formats import get_format
from difflab.quant.transform import quantize, select_layers


def exact_pattern(name: str) -> str:
    """An include pattern matching exactly the module called `name`."""
    return "re:" + re.escape(name)


def weight_bytes(module: nn.Module, bits: int) -> int:
    """Stored size of a layer's weight at `bits` plus one fp32 scale per output channel."""
    w = module.weight
    return math.ceil(w.numel() * bits / 8) + 4 * w.shape[0]


@torch.no_grad()
def layer_sensitivity(model: nn.Module, run: Callable[[nn.Module], Tensor],
                      formats: Sequence[str], base: QuantConfig | None = None,
                      ) -> dict[str, dict[str, float]]:
    """Output MSE against full precision when only one layer's weight is quantized to each
    format ("MixDQ: Memory-Efficient Few-Step Text-to-Image Diffusion...", 2024).

    `run(model)` must be deterministic (fixed seeds); it is called 1 + layers * formats times.
    """
    base = base or QuantConfig(act_format="none")
    reference = run(model).float()
    out: dict[str, dict[str, float]] = {}
    for name in select_layers(model, base.include, base.exclude):
        out[name] = {}
        for fmt in formats:
            cfg = base.replace(include=(exact_pattern(name),), exclude=(), weight_format=fmt,
                               layer_weight_format=())
            handle = quantize(model, cfg)
            try:
                out[name][fmt] = float((run(model).float() - reference).square().mean())
            finally:
                handle.remove()
    return out


def allocate_formats(errors: dict[str, dict[str, float]], sizes: dict[str, dict[str, int]],
                     budget: int, max_units: int = 20000) -> dict[str, str]:
    """Pick one format per layer minimising the summed error with total size <= budget.

    Multiple-choice knapsack by dynamic programming over the size axis in units of
    ceil(budget / max_units) bytes; sizes are rounded up to whole units, so the answer always
    fits the budget and is exactly optimal when sizes are multiples of the unit.
    """
    names = list(errors)
    unit = max(1, math.ceil(budget / max_units))
    cap = budget // unit
    need = sum(min(sizes[n].values()) for n in names)
    if need > budget:
        raise ConfigError(f"size budget {budget} bytes is below the smallest allocation "
                          f"({need} bytes)")
    best = np.zeros(cap + 1)  # best[c]: least error of the layers so far within c units
    choices = []
    for n in names:
        options = list(errors[n])
        new = np.full(cap + 1, np.inf)
        pick = np.full(cap + 1, -1)
        for k, fmt in enumerate(options):
            w = math.ceil(sizes[n][fmt] / unit)
            if w > cap:
                continue
            cand = np.full(cap + 1, np.inf)
            cand[w:] = best[: cap + 1 - w] + errors[n][fmt]
            better = cand < new
            new[better], pick[better] = cand[better], k
        choices.append((n, options, pick))
        best = new
    if not np.isfinite(best[cap]):
        raise ConfigError(f"size budget {budget} bytes cannot fit every layer at the unit of "
                          f"{unit} bytes; raise the budget or max_units")
    chosen, c = {}, cap
    for n, options, pick in reversed(choices):  # walk the table back from the full budget
        k = int(pick[c])
        chosen[n] = options[k]
        c -= math.ceil(sizes[n][options[k]] / unit)
    return {n: chosen[n] for n in names}


def mixed_config(model: nn.Module, run: Callable[[nn.Module], Tensor],
                 formats: Sequence[str] = ("int4", "int8"), budget: int | None = None,
                 base: QuantConfig | None = None) -> QuantConfig:
    """A config with a per-layer weight format from sensitivity + knapsack; the default budget is
    halfway between all layers at the smallest and at the largest format."""
    base = base or QuantConfig()
    layers = select_layers(model, base.include, base.exclude)
    errors = layer_sensitivity(model, run, formats, base.replace(act_format="none"))
    sizes = {n: {f: weight_bytes(layers[n], get_format(f).bits) for f in formats}
             for n in layers}
    if budget is None:
        lo = sum(min(s.values()) for s in sizes.values())
        hi = sum(max(s.values()) for s in sizes.values())
        budget = (lo + hi) // 2
    chosen = allocate_formats(errors, sizes, budget)
    return base.replace(layer_weight_format=tuple(
        f"{exact_pattern(n)}={fmt}" for n, fmt in chosen.items()))


@register_quantizer("mixed")
def recipe_mixed(model: nn.Module, run: CalibrationRun | None = None) -> QuantConfig:
    """int4/int8 weights by sensitivity under a 6-bit-average budget, int8 per-token
    activations (MixDQ, 2024; ViDiT-Q, 2024)."""
    if run is None:
        raise ConfigError("recipe 'mixed' measures layer sensitivity: pass a calibration run "
                          "that returns the model's output (e.g. sampled images)")

    def checked(m: nn.Module) -> Tensor:
        y = run(m)
        if not isinstance(y, Tensor):
            raise ConfigError("recipe 'mixed' needs the calibration run to return a tensor")
        return y

    return mixed_config(model, checked)
