"""Artefacts: folders of safetensors files with a `difflab.json` manifest, and `load()`.

A manifest records the artefact's kind ("checkpoint", "quantized", ...), the format version,
the config that made it, the base checkpoint it derives from (path and sha256 of its
model.safetensors, and of its autoencoder for a latent model) where it has one, metrics where
known, and the sha256 of every file beside it.
`load(path_or_name)` reads the manifest, checks the files it needs against their hashes, and
hands the folder to the loader registered for the kind (`@register_artefact("kind")`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from difflab.config import ConfigError
from difflab.io import write_json
from difflab.registry import Registry

MANIFEST = "difflab.json"
FORMAT_VERSION = 1  # bump when a manifest field changes meaning; loaders refuse newer ones
LATEST = "latest"  # a run folder's pointer to its newest checkpoint folder
ASSETS = Path(__file__).resolve().parents[1] / "assets" / "models"  # shipped models by name


@dataclass(frozen=True)
class Manifest:
    """What `difflab.json` holds (see the module docstring)."""

    kind: str
    config: dict[str, Any]
    files: dict[str, str]  # file name -> sha256 hex digest
    format: int = FORMAT_VERSION
    base: dict[str, str] | None = None  # {"path": ..., "sha256": ...} of a base checkpoint
    metrics: dict[str, Any] = field(default_factory=dict)
    difflab: str = ""  # the version that wrote it
    provenance: dict[str, Any] = field(default_factory=dict)  # command, machine, date, commit


def sha256_file(path: str | Path) -> str:
    """sha256 hex digest of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def base_of(checkpoint: str | Path) -> dict[str, str]:
    """The manifest's `base` entry for a checkpoint folder: its absolute path and the hash of its
    model.safetensors (what identifies the base wherever it is copied)."""
    folder = Path(checkpoint).resolve()
    return {"path": str(folder), "sha256": sha256_file(folder / "model.safetensors"),
            **autoencoder_of(folder)}


def autoencoder_of(folder: Path) -> dict[str, str]:
    """{"autoencoder": sha256} of the autoencoder a latent checkpoint carries, else {}."""
    path = folder / "autoencoder.safetensors"  # difflab.runtime.latent.AE_WEIGHTS
    return {"autoencoder": sha256_file(path)} if path.is_file() else {}


def write_manifest(folder: str | Path, kind: str, config: dict[str, Any], *,
                   base: dict[str, str] | None = None, metrics: dict[str, Any] | None = None,
                   files: Iterable[str] | None = None,
                   provenance: dict[str, Any] | None = None) -> Manifest:
    """Hash `files` (default: every visible file of `folder`) and write `folder/difflab.json`."""
    from difflab import __version__

    folder = Path(folder)
    if files is None:
        files = sorted(p.name for p in folder.iterdir()
                       if p.is_file() and p.name != MANIFEST and not p.name.startswith("."))
    manifest = Manifest(kind=kind, config=config, base=base, metrics=dict(metrics or {}),
                        files={name: sha256_file(folder / name) for name in files},
                        difflab=__version__, provenance=dict(provenance or {}))
    write_json(folder / MANIFEST, asdict(manifest))
    return manifest


def read_manifest(folder: str | Path) -> Manifest:
    """The manifest of an artefact folder; an older checkpoint folder without one (it has
    config.json beside model.safetensors) reads as a checkpoint with no hashes to check, and a
    diffusers pipeline folder as kind "diffusers" (`difflab.interop.folders`)."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        from difflab.interop.folders import KIND, is_diffusers_folder

        if is_diffusers_folder(folder):  # written by diffusers: nothing to hash-check
            return Manifest(kind=KIND, config={}, files={})
        legacy = folder / "config.json"
        if legacy.is_file() and (folder / "model.safetensors").is_file():
            return Manifest(kind="checkpoint", config=_json(legacy), files={})
        raise ConfigError(f"{folder} is not a difflab artefact: it has no {MANIFEST} (nor the "
                          "config.json and model.safetensors of an older checkpoint)")
    data = _json(path)
    version = data.get("format")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ConfigError(f"{path}: format {version!r} is newer than this difflab reads "
                          f"(format <= {FORMAT_VERSION}); upgrade difflab to load it")
    known = set(Manifest.__dataclass_fields__)
    try:
        return Manifest(**{k: v for k, v in data.items() if k in known})
    except TypeError as e:
        raise ConfigError(f"{path} is not a valid manifest: {e}") from None


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path} is not valid JSON ({e}); the file is damaged") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} holds {type(data).__name__}, not a JSON object")
    return data


def verify(folder: Path, manifest: Manifest, names: Iterable[str]) -> None:
    """Raise ConfigError unless each named file exists and matches its manifest hash, and every
    other file the manifest lists that is present matches too (a damaged file means a damaged
    folder; a listed file that is absent, e.g. the training state, is not needed to load).
    Files an older, hash-less manifest does not list are only checked to exist."""
    needed = list(names)
    for name in needed:
        if not (folder / name).is_file():
            raise ConfigError(f"{folder} is incomplete: {name} is missing")
    present = [n for n in manifest.files if n not in needed and (folder / n).is_file()]
    for name in [*needed, *present]:
        want = manifest.files.get(name)
        if want is not None and sha256_file(folder / name) != want:
            raise ConfigError(f"{folder / name} does not match {MANIFEST} (sha256 differs): the "
                              "file is truncated, damaged or was replaced; copy the folder again")


def load_weights(model: nn.Module, tensors: dict[str, torch.Tensor], source: Path) -> None:
    """Load a state dict, turning missing/unexpected keys or shape mismatches into ConfigError."""
    own = model.state_dict()
    missing = sorted(set(own) - set(tensors))
    extra = sorted(set(tensors) - set(own))
    shapes = [f"{k}: {tuple(tensors[k].shape)} vs model {tuple(v.shape)}"
              for k, v in own.items() if k in tensors and tensors[k].shape != v.shape]
    if missing or extra or shapes:
        raise ConfigError(
            f"{source} does not fit this model: missing {missing[:5]}, unexpected {extra[:5]}, "
            f"shape mismatches {shapes[:5]}"
        )
    model.load_state_dict(tensors)


# kind -> loader(folder, manifest, device) -> Pipeline
ArtefactLoader = Callable[[Path, Manifest, str], Any]
ARTEFACTS: Registry[ArtefactLoader] = Registry("artefact kind")


def register_artefact(kind: str) -> Callable[[ArtefactLoader], ArtefactLoader]:
    """Register the loader of an artefact kind: `@register_artefact("adapter")`."""
    return ARTEFACTS.register(kind)


def shipped_models() -> list[str]:
    """Names `load()` accepts besides paths: the model folders shipped inside the package."""
    return sorted(p.name for p in ASSETS.iterdir() if p.is_dir()) if ASSETS.is_dir() else []


def resolve(path_or_name: str | Path) -> Path:
    """The artefact folder a path or name means: a folder, a run folder's latest checkpoint, or
    a shipped model's folder."""
    p = Path(path_or_name)
    if not p.exists() and str(path_or_name) in shipped_models():
        p = ASSETS / str(path_or_name)
    if not p.exists():
        known = ", ".join(shipped_models()) or "none are shipped with this install"
        raise ConfigError(f"no artefact at {str(path_or_name)!r}: not a folder, and not a "
                          f"shipped model name (known names: {known})")
    if (p / LATEST).is_file():  # a run folder: its newest checkpoint
        p = p / (p / LATEST).read_text().strip()
    if not p.is_dir():
        raise ConfigError(f"{p} is not an artefact folder (a checkpoint, run or quantized "
                          "folder holding difflab.json)")
    return p


def load(path_or_name: str | Path, device: str = "cpu") -> Any:
    """A ready `Pipeline` from any artefact difflab writes (run, checkpoint, quantized, ...)
    or a shipped model's name."""
    folder = resolve(path_or_name)
    manifest = read_manifest(folder)
    if manifest.kind not in ARTEFACTS:
        raise ConfigError(f"{folder / MANIFEST}: unknown artefact kind {manifest.kind!r}; this "
                          f"difflab loads: {', '.join(ARTEFACTS.names())}")
    return ARTEFACTS.get(manifest.kind)(folder, manifest, device)


@contextlib.contextmanager
def new_folder(out: str | Path) -> Iterator[Path]:
    """A temporary folder beside `out` to fill; renamed to `out` when the block ends without
    error, else removed: `out` is whole or absent. `out` must not exist or be empty."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out} exists and is not an empty folder; choose a new --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp makes 0700; artefacts are read by others
    try:
        yield tmp
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def export_model(source: str | Path, out: str | Path, *, metrics: dict[str, Any] | None = None,
                 provenance: dict[str, Any] | None = None) -> Manifest:
    """Write a checkpoint's network alone (model.safetensors + manifest; no training state) to
    a new folder `out`, built beside it and renamed into place, so `out` is whole or absent."""
    folder = resolve(source)
    manifest = read_manifest(folder)
    if manifest.kind != "checkpoint":
        raise ConfigError(f"{folder} is a {manifest.kind!r} artefact; export takes a training "
                          "checkpoint or run folder")
    # a latent model's autoencoder travels with its network (difflab.runtime.latent)
    names = [n for n in ("model.safetensors", "autoencoder.safetensors")
             if n == "model.safetensors" or (folder / n).is_file()]
    verify(folder, manifest, names)
    with new_folder(out) as tmp:
        for name in names:
            shutil.copyfile(folder / name, tmp / name)
        written = write_manifest(tmp, "checkpoint", manifest.config,
                                 metrics={**manifest.metrics, **(metrics or {})},
                                 provenance={**manifest.provenance, **(provenance or {})})
    return written


def result_summary(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(headline metrics, provenance) of a result file written by `difflab eval --out` or the
    demo: accuracies with intervals, FD, split, sampling settings; command, machine, date."""
    if not Path(path).is_file():
        raise ConfigError(f"metrics file not found: {path} (a metrics.json of `difflab eval "
                          "--out` or the demo)")
    data = _json(Path(path))
    if "accuracy" not in data or "per_category" not in data:
        raise ConfigError(f"{path} is not a suite result file (no accuracy / per_category)")
    keys = ("suite", "split", "n_images", "accuracy", "accuracy_interval", "per_category",
            "per_category_interval", "per_category_n", "fd", "fd_floor", "sample_config")
    summary = {k: data[k] for k in keys if k in data}
    if isinstance(data.get("reworded"), dict):
        summary["reworded"] = {k: data["reworded"][k] for k in keys if k in data["reworded"]}
    prov = data.get("provenance", {})
    provenance = {k: prov[k] for k in ("command", "code_version", "date", "machine")
                  if k in prov}
    if isinstance(data.get("run"), dict):
        provenance["train_seconds"] = data["run"].get("train_seconds")
    return summary, provenance
