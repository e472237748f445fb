"""CLI glue: `difflab quantize CHECKPOINT (--recipe NAME | --config FILE) --out DIR`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from torch import nn

from difflab.config import ConfigError, MissingFileError, load_toml
from difflab.quant.config import QUANTIZERS, CalibrationRun, QuantConfig
from difflab.quant.storage import save_quantized, size_report
from difflab.quant.transform import quantize


def quantize_checkpoint(checkpoint: str | Path, out: str | Path, *,
                        load_model: Callable[[str], nn.Module], recipe: str | None = None,
                        config: str | Path | None = None,
                        calibrate: CalibrationRun | None = None) -> dict:
    """Load a float model, quantize it by recipe name or TOML config, save it to `out`; returns
    the size report with the execution label."""
    file_config = check_recipe_or_config(recipe, config)
    if not Path(checkpoint).exists():
        raise MissingFileError(f"checkpoint not found: {checkpoint}")
    model = load_model(str(checkpoint))
    cfg = file_config or QUANTIZERS.get(recipe)(model, calibrate)
    handle = quantize(model, cfg, calibrate)
    save_quantized(handle, out)
    return {**size_report(handle), "execution": handle.execution, "layers": len(handle.layers),
            "skipped": len(handle.skipped), "out": str(out)}


def check_recipe_or_config(recipe: str | None, config: str | Path | None) -> QuantConfig | None:
    """Check that exactly one of a known recipe name or a valid QuantConfig TOML file is given;
    returns the file's config (None for a recipe). Runs before any model loads."""
    if (recipe is None) == (config is None):
        raise ConfigError("give exactly one of a recipe name or a config file; valid recipes: "
                          + ", ".join(QUANTIZERS.names()))
    if recipe is not None:
        QUANTIZERS.get(recipe)
        return None
    return load_toml(QuantConfig, config, what="quant config file")


def format_report(report: dict) -> str:
    """Two lines for the terminal: what was written and how big it is."""
    return (f"wrote {report['out']}: {report['layers']} layers quantized "
            f"({report['execution']}), {report['skipped']} kept in float\n"
            f"size {report['bytes']:,} B = fp32/{report['vs_fp32']:.2f} = "
            f"bf16/{report['vs_bf16']:.2f}")


def recipes_table() -> str:
    """One line per named recipe with its docstring."""
    return "\n".join(f"{name:12s} {(QUANTIZERS.get(name).__doc__ or '').strip()}"
                     for name in QUANTIZERS.names())
