"""The built-in artefact kinds: "checkpoint" (a training checkpoint: model.safetensors + config;
never the optimiser state) and the pieces every loader shares."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from difflab.config import ConfigError
from difflab.io import load_tensors
from difflab.runtime.artefacts import MANIFEST, Manifest, load_weights, register_artefact, verify
from difflab.runtime.build import (
    TEXT_MODULE,
    ModelSpec,
    build_model,
    build_process,
    build_text,
    class_names,
    spec_of,
)
from difflab.runtime.conditioning import make_conditioner
from difflab.runtime.latent import AE_WEIGHTS, check_base_autoencoder, read_autoencoder
from difflab.runtime.pipeline import Pipeline

WEIGHTS = "model.safetensors"


def assemble(net: nn.Module, spec: ModelSpec, folder: Path, manifest: Manifest, device: str,
             labels: dict[str, str] | None = None) -> Pipeline:
    """A Pipeline around a loaded network: its process, conditioner and image shape."""
    net_cfg = net.config
    num_classes = getattr(net_cfg, "num_classes", 0)
    names = class_names(spec.data, num_classes) if num_classes else ()
    text = getattr(net, TEXT_MODULE, None) or build_text(spec.text)  # a learned one is the net's
    conditioner = make_conditioner(text, names)
    shape = (net_cfg.in_channels, net_cfg.input_size, net_cfg.input_size)
    autoencoder = latent_decoder(spec, folder, manifest, shape)
    return Pipeline(net.to(device).eval(), build_process(spec.process), conditioner, shape,
                    source=str(folder), config=manifest.config, kind=manifest.kind,
                    labels=labels, autoencoder=autoencoder and autoencoder.to(device))


def latent_decoder(spec: ModelSpec, folder: Path, manifest: Manifest,
                   shape: tuple[int, int, int]) -> nn.Module | None:
    """The autoencoder a latent model's folder carries (hash-checked), or None in pixel space;
    a folder without one, or one whose latents are not what the network denoises, is refused."""
    if not spec.latent.autoencoder:
        return None
    if not (folder / AE_WEIGHTS).is_file():
        raise ConfigError(f"{folder} holds a latent-space model but no {AE_WEIGHTS}; copy the "
                          "whole folder (or make it again from its latent checkpoint)")
    verify(folder, manifest, (AE_WEIGHTS,))
    check_base_autoencoder(folder, manifest.base, folder / AE_WEIGHTS)
    autoencoder = read_autoencoder(folder / AE_WEIGHTS)
    z = autoencoder.config.latent_channels
    if z != shape[0]:  # any latent side decodes (the decoder is convolutional); channels must fit
        raise ConfigError(f"{folder / AE_WEIGHTS} has {z} latent channels but the model "
                          f"denoises {shape[0]}; the folder mixes two runs")
    return autoencoder


@register_artefact("checkpoint")
def load_checkpoint(folder: Path, manifest: Manifest, device: str) -> Pipeline:
    """A training checkpoint's EMA network (model.safetensors) built from its stored config."""
    verify(folder, manifest, (WEIGHTS,))
    spec = spec_of(manifest.config, str(folder / MANIFEST))
    net, _ = build_model(spec)
    load_weights(net, load_tensors(folder / WEIGHTS), folder / WEIGHTS)
    return assemble(net, spec, folder, manifest, device)
