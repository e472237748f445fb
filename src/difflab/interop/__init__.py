"""diffusers interop: difflab's samplers, guidance, caches and quantizers on diffusers models.

- `wrap(model)` (networks.py): a diffusers PixArt, DiT, SD3 or FLUX.1 transformer, or a
  UNet2DConditionModel, as a difflab network with declared `blocks`, so `process.denoiser(net)`,
  every sampler, guidance, cache hook and quantizer applies unchanged.
- `process_from_scheduler`, `scheduler_sigmas` (schedulers.py): a diffusers scheduler as a
  difflab process and the sigmas it steps through.
- convert.py / folders.py: native PixArt-form DiT and MMDiT to diffusers and back; diffusers
  folders as `difflab.runtime.load` artefacts (kind "diffusers").
- lora.py: diffusers-format LoRA files through peft.
- tiny.py: tiny seeded diffusers models built from configs (tests, benchmark, docs).

diffusers is an optional extra (`pip install 'difflab[diffusers]'`); these modules import it
only where a diffusers object is built, and `require_diffusers` says how to install it.
"""

from __future__ import annotations

from typing import Any

from difflab.config import ConfigError
from difflab.interop.networks import WRAPPERS, register_wrapper, wrap
from difflab.interop.schedulers import (
    build_scheduler,
    process_from_scheduler,
    scheduler_sigmas,
    ve_from_vp,
)


def require_diffusers() -> Any:
    """The diffusers module, or a ConfigError saying how to install it."""
    try:
        import diffusers
    except ImportError:
        raise ConfigError("this needs diffusers, an optional extra: "
                          "pip install 'difflab[diffusers]'") from None
    return diffusers


__all__ = ["WRAPPERS", "build_scheduler", "process_from_scheduler", "register_wrapper",
           "require_diffusers", "scheduler_sigmas", "ve_from_vp", "wrap"]
