"""Tiny randomly initialised diffusers models, built from configs with a seed (no hub access).

They are what the interop tests, the interop benchmark and the docs run on: the same diffusers
classes as PixArt, SD3, SD-1.x and DiT checkpoints, at a few thousand to a few hundred thousand
parameters. Their weights are random, so their images are noise-like; they measure agreement
and cost, never image quality.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from difflab.registry import Registry

TINY: Registry[dict[str, Any]] = Registry("tiny diffusers model")


def _register(name: str, class_name: str, scheduler: dict[str, Any], wrap: dict | None = None,
              **config: Any) -> None:
    TINY.register(name)({"class_name": class_name, "config": config, "scheduler": scheduler,
                         "wrap": dict(wrap or {})})


_VP_LINEAR = {"_class_name": "DPMSolverMultistepScheduler", "beta_schedule": "linear",
              "beta_start": 0.0001, "beta_end": 0.02, "prediction_type": "epsilon"}
_register("pixart", "PixArtTransformer2DModel", _VP_LINEAR,
          sample_size=8, patch_size=2, in_channels=4, out_channels=8, num_layers=2,
          num_attention_heads=2, attention_head_dim=8, cross_attention_dim=16,
          caption_channels=24)
_register("dit", "DiTTransformer2DModel", _VP_LINEAR,
          sample_size=8, patch_size=2, in_channels=4, out_channels=8, num_layers=2,
          num_attention_heads=2, attention_head_dim=8, num_embeds_ada_norm=10)
_register("sd3", "SD3Transformer2DModel",
          {"_class_name": "FlowMatchEulerDiscreteScheduler", "shift": 3.0},
          sample_size=8, patch_size=2, in_channels=4, out_channels=4, num_layers=2,
          num_attention_heads=2, attention_head_dim=8, joint_attention_dim=24,
          caption_projection_dim=16, pooled_projection_dim=12, pos_embed_max_size=8)
# FLUX.1-dev's scheduler (shift by image size) and distilled guidance; 8x8 latents of 4 channels
_register("flux", "FluxTransformer2DModel",
          {"_class_name": "FlowMatchEulerDiscreteScheduler", "use_dynamic_shifting": True,
           "base_shift": 0.5, "max_shift": 1.15, "base_image_seq_len": 256,
           "max_image_seq_len": 4096},
          wrap={"sample_size": 8, "guidance": 3.5},
          patch_size=1, in_channels=16, num_layers=1, num_single_layers=2,
          attention_head_dim=16, num_attention_heads=2, joint_attention_dim=24,
          pooled_projection_dim=12, guidance_embeds=True, axes_dims_rope=(4, 6, 6))
_register("unet", "UNet2DConditionModel",
          {"_class_name": "EulerDiscreteScheduler", "beta_schedule": "scaled_linear",
           "beta_start": 0.00085, "beta_end": 0.012, "prediction_type": "epsilon",
           "timestep_spacing": "leading", "steps_offset": 1},
          sample_size=16, in_channels=3, out_channels=3,
          down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
          up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), block_out_channels=(16, 32),
          layers_per_block=1, cross_attention_dim=24, attention_head_dim=8, norm_num_groups=8)


def tiny_config(name: str, **overrides: Any) -> dict[str, Any]:
    """The diffusers config of tiny model `name` (pixart, dit, sd3, flux, unet) with
    overrides."""
    return {**TINY.get(name)["config"], **overrides}


def tiny_scheduler_config(name: str) -> dict[str, Any]:
    """The scheduler config (diffusers' format, with `_class_name`) that goes with `name`."""
    return dict(TINY.get(name)["scheduler"])


def build_tiny(name: str, seed: int = 0, **overrides: Any) -> nn.Module:
    """A diffusers model of class and size `name`, initialised from `seed` (torch's global RNG
    is left as it was)."""
    from difflab.interop import require_diffusers

    diffusers = require_diffusers()
    entry = TINY.get(name)
    cls = getattr(diffusers, entry["class_name"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return cls(**tiny_config(name, **overrides)).eval()


def tiny_network(name: str, seed: int = 0, **overrides: Any) -> nn.Module:
    """Tiny model `name` wrapped as a difflab network (with the wrap options it needs, e.g.
    FLUX.1's latent size)."""
    from difflab.interop.networks import wrap

    return wrap(build_tiny(name, seed, **overrides), **TINY.get(name)["wrap"])
