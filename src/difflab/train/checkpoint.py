"""Checkpoint folders: safetensors + JSON written atomically, a `latest` pointer, never pickle.

A checkpoint `step_000200/` holds
  model.safetensors        EMA weights (what sampling loads)
  train_state.safetensors  raw weights, EMA, optimiser state tensors, torch RNG states
  config.json              the exact TrainConfig (difflab.config.to_dict)
  state.json               step, numpy/python RNG states, data position, loss tail, optimiser
                           hyper-parameters and anything else that is not a tensor
  difflab.json             the artefact manifest (kind "checkpoint", config, sha256 of each
                           file): what `difflab.runtime.load` reads, with model.safetensors
It is written as `.tmp-step_000200/`, renamed into place only when complete, and then the
run folder's `latest` file is atomically pointed at it.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from difflab.config import (
    ConfigError,
    MissingFileError,
    StorageError,
    from_dict,
    read_text_file,
    storage_error,
    to_dict,
)
from difflab.io import atomic_write, load_tensors, save_tensors, write_json
from difflab.runtime.artefacts import load_weights, write_manifest
from difflab.runtime.build import build_model
from difflab.train.config import TrainConfig

FORMAT_VERSION = 1
FILES = ("model.safetensors", "train_state.safetensors", "config.json", "state.json")
LATEST = "latest"


def optimizer_to_flat(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimiser state_dict into tensors (`optim/<param>/<key>`) and JSON."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, entry in sd["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim/{idx}/{key}"] = value
            else:
                scalars.setdefault(str(idx), {})[key] = value
    groups = [{k: list(v) if isinstance(v, tuple) else v for k, v in g.items()}
              for g in sd["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def optimizer_from_flat(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                        meta: dict) -> None:
    """Inverse of `optimizer_to_flat`: rebuild the state_dict and load it into `opt`."""
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optim/"):
            _, idx, key = name.split("/", 2)
            state.setdefault(int(idx), {})[key] = value
    for idx, entry in meta["scalars"].items():
        state.setdefault(int(idx), {}).update(entry)
    groups = [{k: tuple(v) if k == "betas" else v for k, v in g.items()}
              for g in meta["param_groups"]]
    opt.load_state_dict({"state": state, "param_groups": groups})


def step_dir_name(step: int) -> str:
    return f"step_{step:06d}"


def save_checkpoint(run_dir: str | Path, step: int, *, weights: dict[str, torch.Tensor],
                    ema: dict[str, torch.Tensor], train_tensors: dict[str, torch.Tensor],
                    config: TrainConfig, state: dict, keep_last: int,
                    extra_files: dict[str, Path] | None = None) -> Path:
    """Write a complete checkpoint folder, point `latest` at it, keep the last `keep_last`;
    `extra_files` (name -> source) are copied in and hashed too (a latent model's autoencoder).

    A failed write (disk full, permission denied) removes the partial folder and raises a
    StorageError saying so; the previous checkpoint and `latest` stay as they were."""
    run_dir = Path(run_dir)
    final = run_dir / step_dir_name(step)
    tmp = run_dir / f".tmp-{final.name}"
    try:
        _write_folder(tmp, step, weights, ema, train_tensors, config, state, extra_files or {})
    except (StorageError, OSError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        cause = e if isinstance(e, StorageError) else storage_error(e, str(tmp))
        last = _pointer(run_dir)
        kept = f"the last good checkpoint {last} is intact" if last else "no checkpoint yet"
        raise StorageError(f"checkpoint {final.name} not saved: {cause}; {kept}; fix that and "
                           "rerun with --resume") from e
    _install(run_dir, tmp, final)
    _prune(run_dir, keep_last, keep=final.name)
    return final


def _write_folder(tmp: Path, step: int, weights: dict[str, torch.Tensor],
                  ema: dict[str, torch.Tensor], train_tensors: dict[str, torch.Tensor],
                  config: TrainConfig, state: dict, extra_files: dict[str, Path]) -> None:
    """Write every file of a checkpoint into the fresh folder `tmp`."""
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, source in extra_files.items():
        shutil.copyfile(source, tmp / name)
    save_tensors(tmp / "model.safetensors", ema, meta={"step": step, "weights": "ema"})
    flat = {f"model/{k}": v for k, v in weights.items()}
    flat.update({f"ema/{k}": v for k, v in ema.items()})
    flat.update(train_tensors)
    save_tensors(tmp / "train_state.safetensors", flat, meta={"step": step})
    write_json(tmp / "config.json", to_dict(config))
    write_json(tmp / "state.json", {"format": FORMAT_VERSION, "step": step, **state})
    tail = state.get("loss_tail") or []
    metrics = {"step": step, **({"train_loss": tail[-1][1]} if tail else {})}
    write_manifest(tmp, "checkpoint", to_dict(config), metrics=metrics)


def _install(run_dir: Path, tmp: Path, final: Path) -> None:
    """Rename the complete folder `tmp` to `final` and point `latest` at it."""
    if final.exists():  # a re-save after a rollback: move the old one aside first
        _remove(final)
    os.replace(tmp, final)  # atomic on POSIX: the folder appears complete or not at all
    _fsync_dir(run_dir)
    atomic_write(run_dir / LATEST, lambda p: p.write_text(final.name + "\n"))


def _pointer(run_dir: Path) -> str | None:
    """The folder name `latest` holds, or None."""
    try:
        return (run_dir / LATEST).read_text().strip() or None
    except OSError:
        return None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _prune(run_dir: Path, keep_last: int, keep: str) -> None:
    steps = sorted(p for p in run_dir.glob("step_*") if p.is_dir())
    for old in steps[:-keep_last]:
        if old.name != keep:
            _remove(old)
    for stray in [*run_dir.glob(".tmp-step_*"), *run_dir.glob(".old-step_*")]:  # a crash's
        shutil.rmtree(stray, ignore_errors=True)


def _remove(folder: Path) -> None:
    """Delete a checkpoint folder: renamed aside first, so that a kill never leaves half of one
    under its own name."""
    aside = folder.parent / f".old-{folder.name}"
    shutil.rmtree(aside, ignore_errors=True)
    os.replace(folder, aside)
    shutil.rmtree(aside)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The folder `latest` points to, or None when the run has no checkpoint yet.

    Should `latest` name a folder that is gone (a kill while an older copy of the same step was
    being replaced after a rollback), the newest complete `step_*` folder is used instead."""
    name = _pointer(Path(run_dir))
    if name is None:
        return None
    target = Path(run_dir) / name
    if not target.is_dir():
        complete = [p for p in sorted(Path(run_dir).glob("step_*"))
                    if p.is_dir() and all((p / f).is_file() for f in FILES)]
        if complete:
            return complete[-1]
    check_folder(target)
    return target


def resolve(path: str | Path) -> Path:
    """A checkpoint folder, or a run folder (then the checkpoint `latest` points to)."""
    p = Path(path)
    if not p.exists():
        raise MissingFileError(f"checkpoint not found: {p}")
    if (p / LATEST).is_file():
        return latest_checkpoint(p)  # type: ignore[return-value]
    check_folder(p)
    return p


def check_folder(path: Path) -> None:
    """Raise FileNotFoundError naming every file a checkpoint folder lacks."""
    if not path.is_dir():
        raise MissingFileError(f"checkpoint folder not found: {path}")
    missing = [f for f in FILES if not (path / f).is_file()]
    if missing:
        raise MissingFileError(
            f"{path} is not a complete checkpoint: missing {', '.join(missing)} "
            f"(a checkpoint holds {', '.join(FILES)})"
        )


def read_state(path: Path) -> tuple[TrainConfig, dict, dict[str, torch.Tensor]]:
    """The config, state.json and train_state tensors of a checkpoint folder."""
    check_folder(path)
    config = config_of(path)
    state = _read_json(path / "state.json")
    if state.get("format") != FORMAT_VERSION:
        raise ConfigError(f"{path}: checkpoint format {state.get('format')!r}, "
                          f"this difflab reads format {FORMAT_VERSION}")
    if not isinstance(state.get("step"), int) or isinstance(state["step"], bool):
        raise ConfigError(f"{path}/state.json has no step count; the checkpoint is damaged")
    return config, state, load_tensors(path / "train_state.safetensors")


def config_of(path: Path) -> TrainConfig:
    """The TrainConfig stored in a checkpoint folder."""
    try:
        return from_dict(TrainConfig, _read_json(path / "config.json"))
    except ConfigError as e:
        raise ConfigError(f"{path}/config.json does not describe a difflab run: {e}") from None


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object from a checkpoint file; damaged or non-UTF-8 content is a ConfigError."""
    try:
        data = json.loads(read_text_file(path, "checkpoint file"))
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path} is not valid JSON ({e}); the checkpoint is damaged") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} holds {type(data).__name__}, not a JSON object; "
                          "the checkpoint is damaged")
    return data


# What a resume must share with its checkpoint ("section" or "section.key" entries of the config).
RESUME_KEYS = ("model", "process", "data", "text", "latent")


def check_same_run(saved: TrainConfig, wanted: TrainConfig, path: Path,
                   keys: tuple[str, ...] = RESUME_KEYS) -> None:
    """Raise naming every entry of `keys` on which the checkpoint's config and `wanted` differ."""
    a, b = _entries(saved, keys), _entries(wanted, keys)
    diffs = [f"{k}: checkpoint {a.get(k)!r} vs config {b.get(k)!r}"
             for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    if diffs:
        raise ConfigError(f"checkpoint {path} was made by another model/config: "
                          + "; ".join(diffs))


def _entries(config: TrainConfig, keys: tuple[str, ...]) -> dict[str, Any]:
    """The `keys` entries of a config, flattened to "section.key" -> value."""
    data = to_dict(config)
    flat = {}
    for entry in keys:
        sec, _, key = entry.partition(".")
        items = {key: data[sec][key]} if key else data[sec]
        flat.update({f"{sec}.{k}": v for k, v in items.items()})
    return flat


@dataclass
class LoadedCheckpoint:
    """What `load_checkpoint` returns: config, model (EMA weights loaded), raw weights, step."""

    config: TrainConfig
    model: nn.Module
    ema_state: dict[str, torch.Tensor]
    raw_state: dict[str, torch.Tensor]
    step: int
    path: Path


def load_checkpoint(path: str | Path, build: Callable[[TrainConfig], nn.Module] | None = None,
                    device: str | torch.device = "cpu") -> LoadedCheckpoint:
    """Validate a checkpoint (or run) folder and build its model with the EMA weights loaded."""
    folder = resolve(path)
    config, state, tensors = read_state(folder)
    model = build(config) if build is not None else build_model(config)[0]
    ema = load_tensors(folder / "model.safetensors")
    load_weights(model, ema, folder / "model.safetensors")
    raw = {k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")}
    return LoadedCheckpoint(config, model.to(device).eval(), ema, raw, state["step"], folder)
