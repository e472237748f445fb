"""Denoising networks: DiT / PixArt (`dit`), SD3's MMDiT (`mmdit`), the LDM UNet (`unet`) and a
KL autoencoder for latent space (`autoencoder`).

Network convention: `model(x, t, context=None, context_mask=None, pooled=None, y=None)` with
x (B, C, H, W), t float (B,) in about [0, 1000], context (B, T, D_text), context_mask (B, T) bool
(True = real token), pooled (B, D_text), y (B,) long (label `num_classes` = null, for CFG);
the output has x's shape and is exactly zero for a freshly built model.

Hook contract (caches and other hooks attach to `model.blocks[i]`, an `nn.ModuleList`):

- DiT: `h = block(h, inputs)`; h (B, N, D) tokens in raster order of the patch grid (a kept
  subset under `forward_masked`); `inputs` a `dit.BlockInputs` (c, context, context_mask,
  rope, grid) shared by every block of one pass. `model.mixer` holds the patch-mixer blocks
  (same signature) that run before `model.blocks`.
- MMDiT: `h, context = block(h, context, inputs)`; h (B, N, D) image tokens, context (B, T, D)
  text tokens, `inputs` a `mmdit.JointInputs`; the last block returns context None when
  `drop_last_context`.
- UNet: `blocks = [down_0 .. down_{L-1}, mid, up_{L-1} .. up_0]`; `h, skips = down_i(h, inputs)`,
  `h = mid(h, inputs)`, `h = up_i(h, skips_i, inputs)` where `skips_i` is the list down_i
  returned and `inputs` a `unet.UNetInputs`. `model.down_stages`, `model.mid_block` and
  `model.up_stages` name the three parts; the shallow path is down_0 -> up_0.

A forward pre-hook sees `args[0]` = hidden states; a forward hook's output is the new hidden
states (a tuple `(h, context)` for MMDiT, `(h, skips)` for a UNet down stage).
"""

from difflab.models import dit, mmdit, unet  # noqa: F401  (registers architectures and presets)
from difflab.models.base import (
    MODELS,
    PRESETS,
    build_model,
    config_from_dict,
    count_parameters,
    flops_per_image,
    model_config,
    presets_table,
)
from difflab.models.dit import DiT, DiTConfig, MaskedOutput
from difflab.models.layers import choose_attention_backend, set_attention_backend
from difflab.models.mmdit import MMDiT, MMDiTConfig
from difflab.models.unet import UNet, UNetConfig

__all__ = [
    "MODELS",
    "PRESETS",
    "DiT",
    "DiTConfig",
    "MMDiT",
    "MMDiTConfig",
    "MaskedOutput",
    "UNet",
    "UNetConfig",
    "build_model",
    "choose_attention_backend",
    "config_from_dict",
    "count_parameters",
    "flops_per_image",
    "model_config",
    "presets_table",
    "set_attention_backend",
]
