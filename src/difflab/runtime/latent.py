"""Latent diffusion's autoencoder as an artefact ("High-Resolution Image Synthesis with Latent
Diffusion Models", 2022): a folder holding `autoencoder.safetensors` (weights, scale factor and
config) and a `difflab.json` of kind "autoencoder"; the checks that tie a network to its latents.

A latent model's checkpoint carries a copy of the file (hashed in its manifest), so a run folder
samples latents and decodes them to pixels with nothing else at hand. Every artefact derived from
it (quantized, student, adapter) records the base's autoencoder hash beside the base's weights
hash (`base["autoencoder"]`), and the folders that carry a network carry the file too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from difflab.config import ConfigError
from difflab.runtime.artefacts import read_manifest, verify, write_manifest

KIND = "autoencoder"
AE_WEIGHTS = "autoencoder.safetensors"  # in an autoencoder folder and in a latent checkpoint


@dataclass(frozen=True)
class LatentSection:
    """Train and sample in an autoencoder's latent space: `autoencoder` names an autoencoder
    folder ("" = pixel space); the trainer encodes each batch to scaled latents, a posterior
    sample (seeded per step) or its mean."""

    autoencoder: str = ""
    posterior: Literal["sample", "mean"] = "sample"

    def __post_init__(self) -> None:
        if self.posterior not in ("sample", "mean"):
            raise ConfigError(f"latent.posterior = {self.posterior!r} invalid; valid: sample, mean")


def autoencoder_file(folder: str | Path) -> Path:
    """The weights file of an autoencoder folder, hash-checked against its manifest."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"latent.autoencoder = {str(folder)!r} is not a folder; train one with "
                          "`difflab train-ae CONFIG --out FOLDER`")
    manifest = read_manifest(folder)
    if manifest.kind != KIND:
        raise ConfigError(f"{folder} is a {manifest.kind!r} artefact, not an autoencoder "
                          "(kind \"autoencoder\", written by `difflab train-ae`)")
    verify(folder, manifest, (AE_WEIGHTS,))
    return folder / AE_WEIGHTS


def read_autoencoder(path: str | Path) -> Any:
    """The Autoencoder in `path` (an autoencoder folder, or a latent checkpoint's copy), in eval
    mode; a file that is not an autoencoder is a one-line ConfigError."""
    from difflab.models.autoencoder import load_autoencoder

    path = Path(path)
    return load_autoencoder(autoencoder_file(path) if path.is_dir() else path).eval()


def carried_autoencoder(folder: str | Path) -> dict[str, Path]:
    """{AE_WEIGHTS: path} of the autoencoder a latent checkpoint folder carries, hash-checked
    against its manifest ({} for a pixel-space one): what a derived folder copies in."""
    folder = Path(folder)
    if not (folder / AE_WEIGHTS).is_file():
        return {}
    verify(folder, read_manifest(folder), (AE_WEIGHTS,))
    return {AE_WEIGHTS: folder / AE_WEIGHTS}


def check_base_autoencoder(folder: Path, base: dict[str, str] | None, path: Path) -> None:
    """Raise unless the autoencoder at `path` is the one the base (manifest `base` entry of the
    derived artefact `folder`) carried when the artefact was made."""
    from difflab.runtime.artefacts import sha256_file

    want = (base or {}).get("autoencoder")
    if want and not path.is_file():
        raise ConfigError(f"{folder} was made from a latent model, but {path} is missing")
    if want and sha256_file(path) != want:
        raise ConfigError(f"{path} is not the autoencoder {folder} was made with (sha256 "
                          f"{want[:12]}); the latent model and its autoencoder come from "
                          "different runs")


def latent_shape(ae_config: Any, image_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(z, H/f, W/f): the latents of (C, H, W) images; refuses images the encoder cannot take."""
    c, h, w = image_shape
    f = ae_config.downsample_factor
    if c != ae_config.in_channels or h % f or w % f:
        raise ConfigError(f"the autoencoder takes {ae_config.in_channels}-channel images with "
                          f"sides divisible by {f}; the data are {c}x{h}x{w}")
    return ae_config.latent_channels, h // f, w // f


def check_latent_network(net_config: Any, shape: tuple[int, int, int]) -> None:
    """A network in latent space must denoise exactly the latent shape (z, h, w)."""
    have = (net_config.in_channels, net_config.input_size, net_config.input_size)
    if have != tuple(shape):
        raise ConfigError(f"the model denoises {have[0]}x{have[1]}x{have[2]} but the "
                          f"autoencoder's latents are {shape[0]}x{shape[1]}x{shape[2]}; set "
                          f"model.overrides.in_channels = {shape[0]} and "
                          f"model.overrides.input_size = {shape[1]}")


def write_autoencoder(model: Any, out: str | Path, config: dict[str, Any],
                      metrics: dict[str, Any], provenance: dict[str, Any]) -> Path:
    """Save a trained autoencoder as an artefact folder `out`, whole or absent."""
    from difflab.models.autoencoder import save_autoencoder
    from difflab.runtime.artefacts import new_folder

    with new_folder(out) as tmp:
        save_autoencoder(tmp / AE_WEIGHTS, model)
        write_manifest(tmp, KIND, config, metrics=metrics, provenance=provenance)
    return Path(out)
