"""CLI glue: `difflab quantize CHECKPOINT (--recipe NAME | --config FILE) --out DIR`: a quantized
artefact that `difflab.runtime.load` (and so `difflab sample DIR`) loads back."""

from __future__ import annotations

from pathlib import Path

from difflab.config import ConfigError, load_toml
from difflab.quant.config import QUANTIZERS, QuantConfig


def quantize_checkpoint(checkpoint: str | Path, out: str | Path, *, recipe: str | None = None,
                        config: str | Path | None = None, calib_steps: int = 10) -> dict:
    """Load a float checkpoint, quantize it by recipe name or TOML config (calibrated over
    sampling runs), save it to `out` as a quantized artefact; returns the size report."""
    from difflab.runtime import load
    from difflab.runtime.quantized import quantize_pipeline, save_quantized_pipeline

    file_config = check_recipe_or_config(recipe, config)  # before the model is loaded
    pipe = load(checkpoint)
    handle = quantize_pipeline(pipe, file_config or recipe, calib_steps=calib_steps)
    return save_quantized_pipeline(pipe, handle, out)


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
