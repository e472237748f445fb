"""Student folders: a few-step network with its own sampler, steps and folded-in guidance.

A student folder holds `model.safetensors` (the student network, built like its teacher) and a
manifest of kind "student": the teacher's config plus a `distill` section (method, sampler,
steps, the guidance scale folded in, the distillation settings), `base` = the teacher's name or
path and the sha256 of its weights (and of its autoencoder, whose file a latent teacher's student
carries), and metrics (iterations, seconds, teacher evaluations).
`load()` returns a Pipeline whose `sample_defaults` are the student's own sampler and steps,
which `difflab sample` uses unless told otherwise.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from torch import nn

from difflab.config import ConfigError
from difflab.io import load_tensors, save_tensors
from difflab.runtime.artefacts import (
    MANIFEST,
    Manifest,
    load_weights,
    new_folder,
    register_artefact,
    verify,
    write_manifest,
)
from difflab.runtime.build import build_network, spec_of
from difflab.runtime.loaders import WEIGHTS, assemble

KIND = "student"


def sample_defaults(section: dict[str, Any]) -> dict[str, Any]:
    """The SampleConfig fields a student samples with: its sampler and steps, and cfg 1 (the
    teacher's guidance is folded into the weights)."""
    return {"sampler": section["sampler"], "steps": int(section["steps"]), "cfg": 1.0}


def save_student(net: nn.Module, out: str | Path, teacher_config: dict[str, Any],
                 section: dict[str, Any], base: dict[str, str],
                 metrics: dict[str, Any] | None = None,
                 provenance: dict[str, Any] | None = None,
                 extra_files: dict[str, Path] | None = None) -> Manifest:
    """Write a student folder (built beside `out` and renamed into place: whole or absent);
    `extra_files` (name -> source) are copied in: a latent teacher's autoencoder."""
    for key in ("method", "sampler", "steps", "guidance"):
        if key not in section:
            raise ConfigError(f"student section lacks {key!r}; it needs method, sampler, "
                              "steps and guidance")
    with new_folder(out) as tmp:
        tensors = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
        save_tensors(tmp / WEIGHTS, tensors, meta={"kind": KIND})
        for name, source in (extra_files or {}).items():
            shutil.copyfile(source, tmp / name)
        config = {**teacher_config, "distill": dict(section)}
        manifest = write_manifest(tmp, KIND, config, base=base, metrics=metrics,
                                  provenance=provenance)
    return manifest


@register_artefact(KIND)
def load_student(folder: Path, manifest: Manifest, device: str) -> Any:
    """A student folder: its network built from the stored config, sampling by default with
    the student's own sampler and step count."""
    verify(folder, manifest, (WEIGHTS,))
    section = manifest.config.get("distill")
    if not isinstance(section, dict) or not {"sampler", "steps"} <= set(section):
        raise ConfigError(f"{folder / MANIFEST} has no distill section with sampler and steps")
    spec = spec_of(manifest.config, str(folder / MANIFEST))
    net = build_network(spec.model)
    load_weights(net, load_tensors(folder / WEIGHTS), folder / WEIGHTS)
    label = (f"{section['method']} student, {section['sampler']} x{section['steps']}"
             + (f", guidance {section['guidance']:g} folded in" if section.get("guidance", 1.0)
                != 1.0 else ""))
    pipe = assemble(net, spec, folder, manifest, device, labels={"student": label})
    pipe.sample_defaults = sample_defaults(section)
    return pipe
