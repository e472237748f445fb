"""diffusers denoising networks called the way difflab calls its own: `net(x, t, context=...,
context_mask=..., pooled=...) -> raw output` (eps or velocity), t the diffusers timestep.

Conventions mapped here (the denoiser wrappers in `denoisers.py` add the scalings):
- `context` (B, T, D) goes to `encoder_hidden_states`; `context_mask` (B, T), True = attend,
  goes to `encoder_attention_mask` as 1 / 0 (diffusers turns it into an additive bias).
- PixArt with a learned variance (out_channels = 2 * in_channels) returns the first half, as
  diffusers' PixArt pipeline does; SD3 takes `pooled` as `pooled_projections`.
"""

from __future__ import annotations

import importlib.util

import torch
from torch import Tensor, nn

from difflab.config import ConfigError

INSTALL_HINT = "diffusers is not installed; install it with `pip install difflab[diffusers]`"


def require_diffusers() -> None:
    """Raise ConfigError with the install command when diffusers is absent."""
    if importlib.util.find_spec("diffusers") is None:
        raise ConfigError(INSTALL_HINT)


def _mask(context_mask: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    return None if context_mask is None else context_mask.to(dtype)


class UNetNet(nn.Module):
    """A diffusers `UNet2DConditionModel` as a difflab network (eps / v output)."""

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.model = unet

    def forward(self, x: Tensor, t: Tensor, context: Tensor | None = None,
                context_mask: Tensor | None = None, pooled: Tensor | None = None,
                y: Tensor | None = None) -> Tensor:
        return self.model(x, t, encoder_hidden_states=context,
                          encoder_attention_mask=_mask(context_mask, x.dtype)).sample


class PixArtNet(nn.Module):
    """A diffusers `PixArtTransformer2DModel` as a difflab network; its transformer blocks map
    h -> h with h passed first, so `blocks` are diffusers' own (the DiT block contract)."""

    def __init__(self, transformer: nn.Module) -> None:
        super().__init__()
        self.model = transformer
        self.blocks = transformer.transformer_blocks

    def forward(self, x: Tensor, t: Tensor, context: Tensor | None = None,
                context_mask: Tensor | None = None, pooled: Tensor | None = None,
                y: Tensor | None = None) -> Tensor:
        out = self.model(x, encoder_hidden_states=context, timestep=t,
                         encoder_attention_mask=_mask(context_mask, x.dtype),
                         added_cond_kwargs={"resolution": None, "aspect_ratio": None}).sample
        if out.shape[1] == 2 * x.shape[1]:  # learned variance: keep the eps half
            out = out[:, : x.shape[1]]
        return out


class SD3Net(nn.Module):
    """A diffusers `SD3Transformer2DModel` as a difflab network (flow velocity output)."""

    def __init__(self, transformer: nn.Module) -> None:
        super().__init__()
        self.model = transformer

    def forward(self, x: Tensor, t: Tensor, context: Tensor | None = None,
                context_mask: Tensor | None = None, pooled: Tensor | None = None,
                y: Tensor | None = None) -> Tensor:
        if context_mask is not None and not bool(context_mask.all()):
            raise ConfigError("SD3Transformer2DModel has no text attention mask; pass full "
                              "context or context_mask=None")
        return self.model(hidden_states=x, encoder_hidden_states=context,
                          pooled_projections=pooled, timestep=t).sample
