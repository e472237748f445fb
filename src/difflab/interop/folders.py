"""Load a local diffusers pipeline folder (model_index.json, unet/ or transformer/, scheduler/)
as a difflab denoiser; nothing is downloaded."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from difflab.config import ConfigError, MissingFileError
from difflab.core.denoisers import ScaledDenoiser
from difflab.core.schedules import get_sigmas_flow
from difflab.interop.denoisers import diffusers_denoiser, is_flow, vp_sigmas
from difflab.interop.networks import DiTNet, PixArtNet, SD3Net, UNetNet, require_diffusers

NETWORKS: dict[str, type[nn.Module]] = {
    "UNet2DConditionModel": UNetNet,
    "PixArtTransformer2DModel": PixArtNet,
    "SD3Transformer2DModel": SD3Net,
    "DiTTransformer2DModel": DiTNet,
}


def _component(index: dict[str, Any], name: str, folder: Path, dtype: torch.dtype) -> Any:
    """Instantiate component `name` of a pipeline folder from its (library, class) entry."""
    import diffusers

    entry = index.get(name)
    if not isinstance(entry, list) or len(entry) != 2 or entry[0] != "diffusers":
        raise ConfigError(f"{folder / 'model_index.json'} has no diffusers {name!r} entry")
    cls = getattr(diffusers, entry[1], None)
    if cls is None:
        raise ConfigError(f"diffusers has no class {entry[1]!r} (component {name!r})")
    if name == "scheduler":
        return cls.from_pretrained(folder, subfolder=name)
    return cls.from_pretrained(folder, subfolder=name, torch_dtype=dtype)


@dataclass(frozen=True)
class DiffusersModel:
    """A loaded folder: `net` (hooks and transforms attach here), `denoiser` (what samplers
    call) and the folder's `scheduler`, which fixes the noise levels."""

    net: nn.Module
    denoiser: ScaledDenoiser
    scheduler: Any

    def sigmas(self, n: int, spacing: str = "trailing") -> Tensor:
        """(n + 1,) sigmas: VP training steps at `spacing`, or SD3's shifted flow schedule."""
        if is_flow(self.scheduler):
            return get_sigmas_flow(n, shift=float(self.scheduler.config.shift))
        return vp_sigmas(self.scheduler, n, spacing)


def load_diffusers(folder: str | Path, dtype: torch.dtype = torch.float32) -> DiffusersModel:
    """A local diffusers pipeline folder: its unet or transformer wrapped as a difflab network,
    with its scheduler's process (`diffusers_denoiser`)."""
    require_diffusers()
    folder = Path(folder)
    index_file = folder / "model_index.json"
    if not index_file.is_file():
        raise MissingFileError(f"{index_file} not found; expected a diffusers pipeline folder")
    index = json.loads(index_file.read_text(encoding="utf-8"))
    name = "unet" if "unet" in index else "transformer"
    class_name = (index.get(name) or [None, None])[1]
    if class_name not in NETWORKS:
        raise ConfigError(f"{folder}: network {class_name!r} is not supported; valid: "
                          f"{', '.join(NETWORKS)}")
    net = NETWORKS[class_name](_component(index, name, folder, dtype).eval())
    scheduler = _component(index, "scheduler", folder, dtype)
    return DiffusersModel(net, diffusers_denoiser(net, scheduler), scheduler)
