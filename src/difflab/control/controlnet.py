"""ControlNet ("Adding Conditional Control to Text-to-Image Diffusion Models", Zhang et al. 2023)
on a frozen UNet, attached through hooks on its declared blocks.

The control branch is a trainable copy of the base's encoder (conv_in, every down stage, the
mid block) fed x plus a small hint encoder's features of the control map; each of its skip
outputs and its mid output passes a zero-initialised 1x1 conv and is added to the base's skip
(post-forward hooks on the base's down stages) and mid output (on the mid block). The residuals
are computed once per model call by a pre-forward hook on the base. At initialisation every
residual is exactly zero, so the base's output is bit-identical; `remove()` detaches it all.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from difflab.accel.hooks import AccelHandle, ModelHook, StepState, attach
from difflab.config import ConfigError
from difflab.control.layout import MAP_CHANNELS


@dataclass(frozen=True)
class ControlNetConfig:
    """The control map's channels and the hint encoder's width."""

    map_channels: int = MAP_CHANNELS
    hint_channels: int = 16

    def to_dict(self) -> dict:
        return asdict(self)


def zero_conv(ch: int) -> nn.Conv2d:
    """A 1x1 conv with zero weight and bias (ControlNet's "zero convolution")."""
    conv = nn.Conv2d(ch, ch, 1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


def require_unet(base: nn.Module, method: str) -> None:
    """One error naming `method` unless `base` is a UNet (down stages and a mid block): what
    ControlNet, T2I-Adapter and ControlNet-XS attach to."""
    if not hasattr(base, "down_stages") or not hasattr(base, "mid_block"):
        raise ConfigError(f"{method} needs a UNet (down stages, mid block); got "
                          f"{type(base).__name__}")


class ControlNet(nn.Module):
    """The trainable control branch of a difflab UNet: `forward(x, inputs, cmap)` -> (residuals
    per down stage's skips, mid residual)."""

    method = "controlnet"

    def __init__(self, base: nn.Module, cfg: ControlNetConfig | None = None) -> None:
        super().__init__()
        require_unet(base, "ControlNet")
        self.cfg = cfg = cfg or ControlNetConfig()
        ch0, hint = base.conv_in.out_channels, cfg.hint_channels
        self.hint = nn.Sequential(  # control map (B, C, H, W) -> features at conv_in's width
            nn.Conv2d(cfg.map_channels, hint, 3, padding=1), nn.SiLU(),
            nn.Conv2d(hint, hint, 3, padding=1), nn.SiLU(),
            nn.Conv2d(hint, ch0, 3, padding=1))
        nn.init.zeros_(self.hint[-1].weight)
        nn.init.zeros_(self.hint[-1].bias)
        self.conv_in = copy.deepcopy(base.conv_in)
        self.down = copy.deepcopy(nn.ModuleList(base.down_stages))
        self.mid = copy.deepcopy(base.mid_block)
        self.zero_skips = nn.ModuleList(
            nn.ModuleList(zero_conv(layer.res.conv2.out_channels) for layer in stage.layers)
            for stage in self.down)
        self.zero_mid = zero_conv(base.mid_block.res2.conv2.out_channels)
        self.requires_grad_(True)

    def forward(self, x: Tensor, inputs, cmap: Tensor) -> tuple[list[list[Tensor]], Tensor]:
        h = self.conv_in(x) + self.hint(cmap)  # (B, ch0, H, W)
        residuals = []
        for stage, zeros in zip(self.down, self.zero_skips, strict=True):
            h, skips = stage(h, inputs)
            residuals.append([z(s) for z, s in zip(zeros, skips, strict=True)])
        return residuals, self.zero_mid(self.mid(h, inputs))


class _State:
    """The control map to use and the residuals of the model call in progress."""

    def __init__(self) -> None:
        self.cmap: Tensor | None = None
        self.residuals: list[list[Tensor]] = []
        self.mid: Tensor | None = None
        self.size = 0  # the model's image side, which the maps are rendered at


def control_call(module: nn.Module, args: tuple, kwargs: dict, state: _State, what: str
                 ) -> tuple[Tensor, object, Tensor]:
    """(x, the UNet's shared inputs, the control maps repeated to the batch) of one call of
    `module`, whose maps are `state.cmap` (one per image; CFG doubles the batch)."""
    if state.cmap is None:
        raise ConfigError(f"{what} is attached but has no control map; call set_map")
    names = ("x", "t", "context", "context_mask", "pooled", "y")
    bound = dict(zip(names, args, strict=False)) | kwargs
    x = bound["x"]
    reps = x.shape[0] // state.cmap.shape[0]
    if reps * state.cmap.shape[0] != x.shape[0]:
        raise ConfigError(f"control maps for {state.cmap.shape[0]} images, model batch of "
                          f"{x.shape[0]}")
    return x, module.embed(**bound), state.cmap.repeat(reps, 1, 1, 1).to(x.dtype)


class _ComputeControl(ModelHook):
    """On the base model: run the control branch for this call's (x, t, conditioning)."""

    def __init__(self, net: ControlNet, state: _State) -> None:
        self.net, self.state = net, state

    def pre_forward(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        s = self.state
        s.residuals, s.mid = self.net(*control_call(module, args, kwargs, s, "ControlNet"))
        return args, kwargs


class _AddToSkips(ModelHook):
    def __init__(self, state: _State, index: int) -> None:
        self.state, self.index = state, index

    def post_forward(self, module, args, kwargs, output):
        h, skips = output
        return h, [s + r for s, r in zip(skips, self.state.residuals[self.index], strict=True)]


class _AddToMid(ModelHook):
    def __init__(self, state: _State) -> None:
        self.state = state

    def post_forward(self, module, args, kwargs, output):
        return output + self.state.mid


class ControlHandle(AccelHandle):
    """`apply_controlnet`'s handle: `set_map(cmap)` before sampling; `remove()` detaches."""

    control_state: _State

    def set_map(self, cmap: Tensor) -> None:
        """Control maps (B, C, H, W), one per image of the batch about to be sampled."""
        self.control_state.cmap = cmap

    def set_layouts(self, layouts, device: torch.device | str = "cpu") -> None:
        """The layouts (`layout.Layout`) of the batch about to be sampled, rendered as maps at
        the model's resolution."""
        from difflab.control.layout import layout_map

        size = self.control_state.size
        self.set_map(torch.stack([layout_map(lay.objects(), lay.boxes, size)
                                  for lay in layouts]).to(device))


def apply_controlnet(model: nn.Module, net: ControlNet) -> ControlHandle:
    """Attach the control branch `net` to `model` (a UNet, frozen) through hooks on its declared
    blocks: residuals computed per call, added to the down stages' skips and the mid output."""
    state = _State()
    state.size = model.config.input_size
    hooks = [(model, _ComputeControl(net, state))]
    hooks += [(stage, _AddToSkips(state, i)) for i, stage in enumerate(model.down_stages)]
    hooks.append((model.mid_block, _AddToMid(state)))
    handle = attach("controlnet", model, StepState(), hooks)
    out = ControlHandle(handle.name, handle.state, handle.hooks)
    out.control_state = state
    return out


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def to_device(net: ControlNet, like: nn.Module) -> ControlNet:
    p = next(like.parameters())
    return net.to(device=p.device, dtype=p.dtype)


@torch.no_grad()
def is_zero_initialised(net: ControlNet) -> bool:
    """Whether every output of the branch is still exactly zero (what a fresh one is)."""
    zeros = [z for stage in net.zero_skips for z in stage] + [net.zero_mid]
    return all(not z.weight.any() and not z.bias.any() for z in zeros)
