"""T2I-Adapter ("T2I-Adapter: Learning Adapters to Dig out More Controllable Ability for
Text-to-Image Diffusion Models", Mou et al. 2023) on a frozen UNet, attached through hooks.

A small conv feature extractor reads the layout map: pixel-unshuffle, a stem and a residual
conv block at each of the base's encoder resolutions (a strided conv between them). Each
level's features pass a zero-initialised 1x1 projection to the width of that level's skips and
are added to them (post-forward hooks on the base's down stages, as ControlNet's residuals
are); the last level's also to the mid block's output. Unlike ControlNet the features do not
depend on the noisy input or the time step, so sampling computes them once per batch of maps
(cached while gradients are off). At initialisation every projection is zero and the base's
output is bit-identical; `remove()` detaches it all.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from difflab.accel.hooks import ModelHook, StepState, attach
from difflab.config import ConfigError
from difflab.control.controlnet import (
    ControlHandle,
    _AddToMid,
    _AddToSkips,
    _State,
    require_unet,
    zero_conv,
)
from difflab.control.layout import MAP_CHANNELS


@dataclass(frozen=True)
class T2IAdapterConfig:
    """The control map's channels, the pixel-unshuffle factor and each level's width as a
    fraction of the base's width there."""

    map_channels: int = MAP_CHANNELS
    unshuffle: int = 2
    width: float = 1.0

    def to_dict(self) -> dict:
        return asdict(self)


class _ResConv(nn.Module):
    """x + conv(silu(conv(x))): T2I-Adapter's residual block, without normalisation."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.conv2 = nn.Conv2d(ch, ch, 1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(nn.functional.silu(self.conv1(x)))


class T2IAdapter(nn.Module):
    """`forward(cmap)` -> (features per down stage's skips, mid feature), each zero at init."""

    method = "t2i-adapter"

    def __init__(self, base: nn.Module, cfg: T2IAdapterConfig | None = None) -> None:
        super().__init__()
        require_unet(base, "T2I-Adapter")
        self.cfg = cfg = cfg or T2IAdapterConfig()
        f = cfg.unshuffle
        widths = [stage.layers[-1].res.conv2.out_channels for stage in base.down_stages]
        inner = [max(8, int(round(w * cfg.width))) for w in widths]
        # Level 0 is the base's full resolution: unshuffle by f, then one transposed conv back
        # up keeps the extractor cheap (it works at 1/f of the side) yet aligned with the skips.
        self.unshuffle = nn.PixelUnshuffle(f)
        self.stem = nn.Conv2d(cfg.map_channels * f * f, inner[0], 3, padding=1)
        self.levels = nn.ModuleList()
        self.ups = nn.ModuleList()
        self.outs = nn.ModuleList()
        self.downs = nn.ModuleList()
        for i, (c, w) in enumerate(zip(inner, widths, strict=True)):
            self.levels.append(_ResConv(c))
            # the extractor's level i is at 1/f of the base's level-i side
            self.ups.append(nn.ConvTranspose2d(c, c, f, stride=f))
            out = nn.Conv2d(c, w, 1)
            nn.init.zeros_(out.weight)
            nn.init.zeros_(out.bias)
            self.outs.append(out)
            if i + 1 < len(inner):
                self.downs.append(nn.Conv2d(c, inner[i + 1], 3, stride=2, padding=1))
        self.zero_mid = zero_conv(widths[-1])
        self.layers_per_stage = [len(stage.layers) for stage in base.down_stages]

    def forward(self, cmap: Tensor) -> tuple[list[list[Tensor]], Tensor]:
        h = self.stem(self.unshuffle(cmap))
        residuals, feat = [], h
        for i, (level, up, out) in enumerate(zip(self.levels, self.ups, self.outs, strict=True)):
            h = level(h)
            feat = out(up(h))
            residuals.append([feat] * self.layers_per_stage[i])
            if i < len(self.downs):
                h = self.downs[i](nn.functional.silu(h))
        return residuals, self.zero_mid(feat)


class _ComputeFeatures(ModelHook):
    """On the base model: the adapter's features of the current maps, repeated to the model's
    batch (classifier-free guidance doubles it); cached while gradients are off."""

    def __init__(self, net: T2IAdapter, state: _State) -> None:
        self.net, self.state, self.cache = net, state, None

    def pre_forward(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        s = self.state
        if s.cmap is None:
            raise ConfigError("T2I-Adapter is attached but has no control map; call set_map")
        x = args[0] if args else kwargs["x"]
        reps = x.shape[0] // s.cmap.shape[0]
        if reps * s.cmap.shape[0] != x.shape[0]:
            raise ConfigError(f"control maps for {s.cmap.shape[0]} images, model batch of "
                              f"{x.shape[0]}")
        key = (id(s.cmap), reps, x.dtype)
        if torch.is_grad_enabled() or self.cache is None or self.cache[0] != key:
            residuals, mid = self.net(s.cmap.to(x.dtype))
            residuals = [[r.repeat(reps, 1, 1, 1) for r in level] for level in residuals]
            mid = mid.repeat(reps, 1, 1, 1)
            self.cache = None if torch.is_grad_enabled() else (key, residuals, mid, s.cmap)
        else:
            residuals, mid = self.cache[1], self.cache[2]
        s.residuals, s.mid = residuals, mid
        return args, kwargs


def apply_t2i_adapter(model: nn.Module, net: T2IAdapter) -> ControlHandle:
    """Attach the adapter `net` to `model` (a UNet, frozen) through hooks on its declared
    blocks: features added to the down stages' skips and the mid output."""
    state = _State()
    state.size = model.config.input_size
    hooks = [(model, _ComputeFeatures(net, state))]
    hooks += [(stage, _AddToSkips(state, i)) for i, stage in enumerate(model.down_stages)]
    hooks.append((model.mid_block, _AddToMid(state)))
    handle = attach("t2i-adapter", model, StepState(), hooks)
    out = ControlHandle(handle.name, handle.state, handle.hooks)
    out.control_state = state
    return out


@torch.no_grad()
def is_zero_initialised(net: T2IAdapter) -> bool:
    """Whether every output projection is still exactly zero (what a fresh adapter is)."""
    return all(not z.weight.any() and not z.bias.any() for z in [*net.outs, net.zero_mid])
