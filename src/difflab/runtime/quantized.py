"""Quantized artefacts: quantize a pipeline's network (calibrated over sampling trajectories),
save it as a "quantized" folder, and load such a folder back into a Pipeline.

A quantized folder holds model.safetensors (codes, scales and the float layers), quant.json (the
per-layer layout), a latent model's autoencoder.safetensors (copied from the base) and
difflab.json (kind "quantized", the base checkpoint's path and hashes, the base config with the
QuantConfig under "quant").
"""

from __future__ import annotations

import copy
import dataclasses
import shutil
from pathlib import Path
from typing import Any

from torch import nn

from difflab.config import ConfigError, from_dict, to_dict
from difflab.quant.config import QUANTIZERS, QuantConfig
from difflab.quant.storage import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    load_quantized,
    save_quantized,
    size_report,
)
from difflab.quant.transform import QuantHandle, quantize
from difflab.runtime.artefacts import (
    MANIFEST,
    Manifest,
    base_of,
    register_artefact,
    verify,
    write_manifest,
)
from difflab.runtime.build import build_model, spec_of
from difflab.runtime.latent import carried_autoencoder
from difflab.runtime.loaders import assemble
from difflab.runtime.pipeline import Pipeline, SampleConfig, calibration_run

KIND = "quantized"


def quantize_pipeline(pipe: Pipeline, recipe: str | QuantConfig, *, calib_steps: int = 10,
                      overrides: dict[str, Any] | None = None,
                      net: nn.Module | None = None) -> QuantHandle:
    """Quantize `net` (default: the pipeline's own network, in place) by a recipe name or a
    QuantConfig, with `overrides` of QuantConfig fields; calibration samples the conditioner's
    example prompts with `calib_steps` Euler steps (no guidance)."""
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(QuantConfig)})
    if unknown:  # raise before any calibration work
        raise ConfigError(f"unknown QuantConfig fields {unknown}; valid: "
                          + ", ".join(f.name for f in dataclasses.fields(QuantConfig)))
    net = pipe.net if net is None else net
    prompts = pipe.conditioner.example_prompts()
    run = calibration_run(pipe, prompts, SampleConfig(steps=calib_steps))
    config = recipe if isinstance(recipe, QuantConfig) else QUANTIZERS.get(recipe)(net, run)
    if overrides:
        config = from_dict(QuantConfig, {**to_dict(config), **overrides}, where="quant")
    return quantize(net, config, run)


def quantized_copy(pipe: Pipeline, recipe: str | QuantConfig, **kwargs: Any) -> nn.Module:
    """A deep copy of the pipeline's network, quantized by `quantize_pipeline`."""
    net = copy.deepcopy(pipe.net)
    quantize_pipeline(pipe, recipe, net=net, **kwargs)
    return net


def save_quantized_pipeline(pipe: Pipeline, handle: QuantHandle, out: str | Path) -> dict:
    """Write the quantized network and its manifest to `out`; returns the size report."""
    if pipe.kind != "checkpoint":
        raise ConfigError(f"quantize a float checkpoint; {pipe.source or 'this pipeline'} is "
                          f"a {pipe.kind or 'in-memory'} model")
    out = Path(out)
    carried = carried_autoencoder(pipe.source)  # a latent model's decoder travels with it
    save_quantized(handle, out)
    for name, path in carried.items():
        shutil.copyfile(path, out / name)
    report = {**size_report(handle), "execution": handle.execution,
              "layers": len(handle.layers), "skipped": len(handle.skipped)}
    config = {**pipe.config, "quant": handle.config.to_dict()}
    write_manifest(out, KIND, config, base=base_of(pipe.source), metrics=report,
                   files=(WEIGHTS_FILE, CONFIG_FILE, *carried))
    return {**report, "out": str(out)}


def execution_label(handle: QuantHandle) -> str:
    """How the quantized network runs, said plainly (simulated claims no speed)."""
    cfg = handle.config
    what = f"weights {cfg.weight_format}, activations {cfg.act_format}, {len(handle.layers)} layers"
    if handle.execution == "real":
        return f"{what}; real integer kernels"
    return f"{what}; simulated (float emulation of the number formats: no speed-up)"


@register_artefact(KIND)
def load_quantized_artefact(folder: Path, manifest: Manifest, device: str) -> Pipeline:
    """Build the float network from the base config, apply the stored quantization layout and
    load the saved codes and scales (no calibration run)."""
    verify(folder, manifest, (WEIGHTS_FILE, CONFIG_FILE))
    spec = spec_of(manifest.config, str(folder / MANIFEST))
    net, _ = build_model(spec)
    handle = load_quantized(net, folder)
    return assemble(net, spec, folder, manifest, device,
                    labels={"quantization": execution_label(handle)})
