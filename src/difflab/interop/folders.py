"""diffusers folders: load one as a Pipeline, export a native checkpoint to one, import one.

Layout (diffusers' pipeline folders, the components difflab uses):
    FOLDER/transformer/ or FOLDER/unet/   config.json + diffusion_pytorch_model.safetensors
    FOLDER/scheduler/scheduler_config.json     the beta table / flow shift and prediction type
    FOLDER/text_encoder/, FOLDER/tokenizer/    a transformers text encoder (optional)
    FOLDER/difflab.json                        written by `export_diffusers` (optional)

`difflab.runtime.load(FOLDER)` reads such a folder as artefact kind "diffusers" (so `difflab
sample`, `difflab eval` and `difflab bench` take it): the network is the wrapped diffusers model,
the process comes from the scheduler config, and the text encoder from difflab.json's [text]
section (a difflab export) or from text_encoder/ + tokenizer/. difflab's pipeline samples pixels:
a latent model (VAE) is refused here and sampled through `difflab.interop.wrap` directly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from difflab.config import ConfigError, MissingFileError, from_dict, to_dict
from difflab.runtime.artefacts import (
    MANIFEST,
    Manifest,
    base_of,
    new_folder,
    read_manifest,
    register_artefact,
    resolve,
    verify,
    write_manifest,
)
from difflab.runtime.build import DataSection, TextSection, build_text, class_names
from difflab.runtime.conditioning import make_conditioner
from difflab.runtime.pipeline import Pipeline

KIND = "diffusers"
MODEL_FOLDERS = ("transformer", "unet")
SCHEDULER_CONFIG = "scheduler/scheduler_config.json"
BASE_PRESETS = {"dit": "pixart-tiny", "mmdit": "mmdit-tiny"}  # every field is overridden


def is_diffusers_folder(folder: str | Path) -> bool:
    """True for a diffusers pipeline folder (model_index.json, or a transformer/ or unet/
    model folder beside a scheduler/)."""
    folder = Path(folder)
    return (folder / "model_index.json").is_file() or (
        any((folder / m / "config.json").is_file() for m in MODEL_FOLDERS)
        and (folder / SCHEDULER_CONFIG).is_file())


def _json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise MissingFileError(f"{path} is missing")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path} is not valid JSON ({e})") from None


def model_folder(folder: Path) -> Path:
    """The folder of the denoising model: transformer/ or unet/."""
    for name in MODEL_FOLDERS:
        if (folder / name / "config.json").is_file():
            return folder / name
    raise MissingFileError(f"{folder} has no diffusers denoising model (transformer/ or unet/ "
                           "with a config.json)")


def load_diffusers_model(folder: str | Path) -> nn.Module:
    """The diffusers denoising model of a pipeline folder, from local files only."""
    from difflab.interop import require_diffusers

    diffusers = require_diffusers()
    path = model_folder(Path(folder))
    name = _json(path / "config.json").get("_class_name", "")
    cls = getattr(diffusers, str(name), None)
    if cls is None or not isinstance(cls, type) or not issubclass(cls, nn.Module):
        raise ConfigError(f"{path / 'config.json'}: _class_name {name!r} is not a diffusers "
                          "model class")
    return cls.from_pretrained(path, local_files_only=True).eval()


def _text_section(folder: Path, manifest: Manifest) -> TextSection:
    """difflab.json's [text] section, else the folder's text_encoder/ (+ tokenizer/)."""
    if "text" in manifest.config:
        return from_dict(TextSection, dict(manifest.config["text"]), "text")
    encoder = folder / "text_encoder"
    if (encoder / "config.json").is_file():
        tokenizer = folder / "tokenizer"
        options = {"tokenizer": str(tokenizer)} if tokenizer.is_dir() else {}
        return TextSection(encoder=str(encoder), options=options)
    raise ConfigError(f"{folder} names no text encoder: it has no text_encoder/ folder and no "
                      f"{MANIFEST} with a [text] section (difflab's export writes one)")


def _conditioner(net: nn.Module, folder: Path, manifest: Manifest) -> Any:
    """Class labels for DiT, else text states whose width must fit the model's."""
    num_classes = getattr(net, "num_classes", 0)
    if num_classes:
        data = from_dict(DataSection, dict(manifest.config.get("data", {})), "data")
        return make_conditioner(None, class_names(data, num_classes))
    encoder = build_text(_text_section(folder, manifest))
    if encoder is None:
        raise ConfigError(f"{folder}: a text-conditioned model needs a text encoder, not 'none'")
    # difflab's encoders pool their own token states, so a pooled input has their width too
    wanted = {net.text_dim, getattr(net, "pooled_dim", net.text_dim)}
    if wanted != {encoder.dim}:
        raise ConfigError(f"{folder}: the text encoder gives {encoder.dim}-d states but the "
                          f"model takes {'- and '.join(map(str, sorted(wanted)))}-d ones")
    return make_conditioner(encoder)


@register_artefact(KIND)
def load_diffusers_folder(folder: Path, manifest: Manifest, device: str) -> Pipeline:
    """A Pipeline over a diffusers folder: wrapped model, scheduler's process, text encoder."""
    from difflab.interop.networks import wrap
    from difflab.interop.schedulers import process_from_scheduler

    verify(folder, manifest, list(manifest.files))
    net = wrap(load_diffusers_model(folder))
    shape = net.input_shape
    if shape[0] != 3:
        raise ConfigError(f"{folder}: the model denoises {shape[0]}-channel latents; difflab's "
                          "pipeline samples pixel models (3 channels) and has no VAE decode: "
                          "sample it with difflab.interop.wrap and a sampler directly")
    process = process_from_scheduler(_json(folder / SCHEDULER_CONFIG))
    return Pipeline(net.to(device).eval(), process, _conditioner(net, folder, manifest), shape,
                    source=str(folder), config=manifest.config, kind=KIND,
                    labels={"diffusers": type(net.model).__name__})


def scheduler_from_process(process: Any) -> Any:
    """The diffusers scheduler with `process`'s noise table and prediction: Euler (trailing
    spacing, difflab's default for VP) or flow-matching Euler; EDM and continuous VP have none."""
    from difflab.core.processes import FlowProcess, VPProcess
    from difflab.interop.schedulers import build_scheduler

    if isinstance(process, FlowProcess):
        return build_scheduler({"_class_name": "FlowMatchEulerDiscreteScheduler",
                                "shift": process.shift})
    if not isinstance(process, VPProcess) or not process.discrete:
        raise ConfigError(f"{type(process).__name__} ({to_dict(process)}) has no diffusers "
                          "scheduler; exportable: discrete VP and rectified flow")
    predictions = {"eps": "epsilon", "v": "v_prediction", "x0": "sample"}
    if process.schedule == "cosine":
        betas: dict[str, Any] = {"beta_schedule": "squaredcos_cap_v2"}
    else:
        b0, b1 = process.beta_range()
        betas = {"beta_schedule": process.schedule, "beta_start": b0, "beta_end": b1}
    return build_scheduler({"_class_name": "EulerDiscreteScheduler",
                            "num_train_timesteps": process.num_timesteps,
                            "prediction_type": predictions[process.prediction],
                            "timestep_spacing": "trailing", **betas})


def _relative_files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                  if p.is_file() and p.name != MANIFEST)


def export_diffusers(source: str | Path, out: str | Path, *,
                     provenance: dict[str, Any] | None = None) -> Manifest:
    """Write a native checkpoint (run, checkpoint folder or shipped name) as a diffusers folder
    `out`: transformer/, scheduler/ and a difflab.json (kind "diffusers", the source's config,
    every file's hash), built beside `out` and renamed into place."""
    from difflab.interop.convert import to_diffusers
    from difflab.runtime import load

    pipe = load(source)
    if pipe.kind != "checkpoint":
        raise ConfigError(f"{pipe.source}: export takes a float training checkpoint, not a "
                          f"{pipe.kind!r} artefact")
    model = to_diffusers(pipe.net.float())
    scheduler = scheduler_from_process(pipe.process)
    with new_folder(out) as tmp:
        model.save_pretrained(tmp / "transformer", safe_serialization=True)
        scheduler.save_pretrained(tmp / "scheduler")
        return write_manifest(tmp, KIND, pipe.config, base=base_of(pipe.source),
                              files=_relative_files(tmp), provenance=provenance)


def import_diffusers(folder: str | Path, out: str | Path, *, text: str = "",
                     provenance: dict[str, Any] | None = None) -> Manifest:
    """Write a diffusers folder whose model has a native counterpart (PixArt, SD3: see
    `convert`) as a native checkpoint `out` (model.safetensors + difflab.json), with the
    scheduler's process; `text` names the text encoder where the folder does not."""
    from difflab.interop.convert import from_diffusers, native_fields
    from difflab.interop.schedulers import process_from_scheduler
    from difflab.io import save_tensors

    folder = resolve(folder)
    manifest = read_manifest(folder)
    if manifest.kind != KIND:
        raise ConfigError(f"{folder} is a {manifest.kind!r} artefact, not a diffusers folder")
    net = from_diffusers(load_diffusers_model(folder))
    process = process_from_scheduler(_json(folder / SCHEDULER_CONFIG))
    if text:
        section = TextSection(encoder=text)
    else:
        section = _text_section(folder, manifest)
    config = {"model": {"preset": BASE_PRESETS[net.config.arch],
                        "overrides": native_fields(net.config)},
              "process": {"name": process.kind, "options": to_dict(process)},
              "data": dict(manifest.config.get("data", {"name": "shapes", "options": {}})),
              "text": to_dict(section)}
    with new_folder(out) as tmp:
        save_tensors(tmp / "model.safetensors", net.state_dict())
        return write_manifest(tmp, "checkpoint", config, provenance=provenance)

