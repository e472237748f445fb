"""diffusers interop: diffusers networks as difflab denoisers (`pip install difflab[diffusers]`).

`UNetNet`, `PixArtNet`, `SD3Net`, `DiTNet` call a diffusers model as a difflab network and
declare its blocks for difflab's caches; `diffusers_denoiser(net, scheduler)` adds the
scheduler's process so every difflab sampler runs on it; `load_diffusers(folder) ->
DiffusersModel` does both for a local pipeline folder; `tiny_unet`, `tiny_pixart`, `tiny_sd3`,
`tiny_dit` build seeded random tiny models.
"""

from difflab.interop.denoisers import TimestepTable, diffusers_denoiser, train_sigmas, vp_sigmas
from difflab.interop.folders import DiffusersModel, load_diffusers
from difflab.interop.networks import DiTNet, PixArtNet, SD3Net, UNetNet, require_diffusers
from difflab.interop.tiny import tiny_dit, tiny_pixart, tiny_sd3, tiny_unet

__all__ = [
    "DiTNet",
    "DiffusersModel",
    "PixArtNet",
    "SD3Net",
    "TimestepTable",
    "UNetNet",
    "diffusers_denoiser",
    "load_diffusers",
    "require_diffusers",
    "tiny_dit",
    "tiny_pixart",
    "tiny_sd3",
    "tiny_unet",
    "train_sigmas",
    "vp_sigmas",
]
