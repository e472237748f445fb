"""ControlNet-XS ("ControlNet-XS: Rethinking the Control of Text-to-Image Diffusion Models as
Feedback-Control Systems", Zavadski et al. 2023) on a frozen UNet, attached through hooks.

ControlNet copies the whole encoder, so on a small UNet it is most of the base's size. The XS
branch is a narrow encoder of the base's architecture (every level's width scaled down, trained
from scratch, not copied) that runs in step with the base instead of before it: at each down
stage and at the mid block it reads the base's own features there (a 1x1 projection added to
its input; the paper's base-to-control connection) and writes back through zero-initialised
1x1 convs into the base's skips and into the stage's output, which the base's next stage reads
(control-to-base). The base's deeper features therefore see the control at every level, which
is what lets the paper's branches be a small fraction of ControlNet's size.

At initialisation every write is exactly zero, so the base's output is bit-identical;
`remove()` detaches every hook.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from difflab.accel.hooks import ModelHook, StepState, attach
from difflab.config import ConfigError
from difflab.control.controlnet import ControlHandle, _State, control_call, require_unet
from difflab.control.layout import MAP_CHANNELS
from difflab.limits import check_int


@dataclass(frozen=True)
class ControlNetXSConfig:
    """The control map's channels, the narrow encoder's first-level width (later levels keep the
    base's channel multipliers) and its GroupNorm groups."""

    map_channels: int = MAP_CHANNELS
    width: int = 12  # 13.5% of shapes-long's parameters (ControlNet: 61%)
    norm_groups: int = 4
    hint_channels: int = 16

    def __post_init__(self) -> None:
        check_int("width", self.width, 1, 4096)
        check_int("norm_groups", self.norm_groups, 1, 4096)
        check_int("hint_channels", self.hint_channels, 1, 4096)

    def to_dict(self) -> dict:
        return asdict(self)


def _conv1x1(cin: int, cout: int, zero: bool = False) -> nn.Conv2d:
    conv = nn.Conv2d(cin, cout, 1)
    if zero:
        nn.init.zeros_(conv.weight)
        nn.init.zeros_(conv.bias)
    return conv


class ControlNetXS(nn.Module):
    """The narrow control encoder of a difflab UNet, run stage by stage beside the base's
    encoder by `apply_controlnet_xs`."""

    method = "controlnet-xs"

    def __init__(self, base: nn.Module, cfg: ControlNetXSConfig | None = None) -> None:
        super().__init__()
        require_unet(base, "ControlNet-XS")
        from difflab.models.unet import DownStage, MidBlock

        self.cfg = cfg = cfg or ControlNetXSConfig()
        bcfg = base.config
        try:  # the base's config checks the narrow widths (groups, heads)
            small = dataclasses.replace(bcfg, base_channels=cfg.width,
                                        norm_groups=cfg.norm_groups)
        except ConfigError as e:
            raise ConfigError(f"ControlNet-XS width {cfg.width}: {e}") from None
        chs, bchs = small.channels, bcfg.channels  # per level: narrow, base
        hint = cfg.hint_channels
        self.hint = nn.Sequential(  # control map (B, C, H, W) -> features at the first width
            nn.Conv2d(cfg.map_channels, hint, 3, padding=1), nn.SiLU(),
            nn.Conv2d(hint, hint, 3, padding=1), nn.SiLU(),
            nn.Conv2d(hint, chs[0], 3, padding=1))
        self.conv_in = nn.Conv2d(bcfg.in_channels, chs[0], 3, padding=1)
        self.emb = nn.Linear(bcfg.emb_dim, small.emb_dim)  # the base's embedding, narrowed
        levels = len(chs)
        self.down = nn.ModuleList(DownStage(chs[max(i - 1, 0)], i, small) for i in range(levels))
        self.mid = MidBlock(chs[-1], small)
        # base -> control: the base's input to each stage (and to the mid block), projected
        self.feed = nn.ModuleList(_conv1x1(bchs[max(i - 1, 0)], chs[max(i - 1, 0)])
                                  for i in range(levels))
        self.feed_mid = _conv1x1(bchs[-1], chs[-1])
        # control -> base: zero convs into every skip, each stage's output and the mid output
        self.zero_skips = nn.ModuleList(
            nn.ModuleList(_conv1x1(chs[i], bchs[i], zero=True) for _ in stage.layers)
            for i, stage in enumerate(self.down))
        self.zero_out = nn.ModuleList(_conv1x1(chs[i], bchs[i], zero=True)
                                      for i in range(levels))
        self.zero_mid = _conv1x1(chs[-1], bchs[-1], zero=True)
        self.requires_grad_(True)

    def start(self, x: Tensor, inputs, cmap: Tensor):
        """The branch's state before the base's first stage: its features and its inputs."""
        from difflab.models.unet import UNetInputs

        h = self.conv_in(x) + self.hint(cmap)
        return h, UNetInputs(self.emb(inputs.emb), inputs.context, inputs.context_mask)

    def stage(self, i: int, h: Tensor, base_h: Tensor, inputs) -> tuple[Tensor, list[Tensor],
                                                                       Tensor]:
        """Down stage `i` of the branch, fed the base's input to its stage `i`: (the branch's
        output, residuals for the base's skips, residual for the base stage's output)."""
        h, skips = self.down[i](h + self.feed[i](base_h), inputs)
        zeros = self.zero_skips[i]
        return h, [z(s) for z, s in zip(zeros, skips, strict=True)], self.zero_out[i](h)

    def middle(self, h: Tensor, base_h: Tensor, inputs) -> Tensor:
        """The mid block, fed the base's mid input: the residual for the base's mid output."""
        return self.zero_mid(self.mid(h + self.feed_mid(base_h), inputs))


class _XSState(_State):
    """The control map, and the branch's features and inputs of the model call in progress."""

    def __init__(self) -> None:
        super().__init__()
        self.h: Tensor | None = None
        self.inputs = None
        self.out: Tensor | None = None


class _Start(ModelHook):
    """On the base model: start the branch for this call's (x, t, conditioning)."""

    def __init__(self, net: ControlNetXS, state: _XSState) -> None:
        self.net, self.state = net, state

    def pre_forward(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        s = self.state
        s.h, s.inputs = self.net.start(*control_call(module, args, kwargs, s, "ControlNet-XS"))
        return args, kwargs


class _Stage(ModelHook):
    """On base down stage `index`: run the branch's stage on the base's input, then add its
    residuals to the base stage's skips and output."""

    def __init__(self, net: ControlNetXS, state: _XSState, index: int) -> None:
        self.net, self.state, self.index = net, state, index

    def pre_forward(self, module, args, kwargs):
        s = self.state
        s.h, s.residuals, s.out = self.net.stage(self.index, s.h, args[0], s.inputs)
        return args, kwargs

    def post_forward(self, module, args, kwargs, output):
        h, skips = output
        return h + self.state.out, [a + r for a, r in zip(skips, self.state.residuals,
                                                          strict=True)]


class _Mid(ModelHook):
    def __init__(self, net: ControlNetXS, state: _XSState) -> None:
        self.net, self.state = net, state

    def pre_forward(self, module, args, kwargs):
        s = self.state
        s.mid = self.net.middle(s.h, args[0], s.inputs)
        return args, kwargs

    def post_forward(self, module, args, kwargs, output):
        return output + self.state.mid


def apply_controlnet_xs(model: nn.Module, net: ControlNetXS) -> ControlHandle:
    """Attach the XS branch `net` to `model` (a UNet, frozen): started by a hook on the model,
    run and written back by hooks on each down stage and the mid block."""
    state = _XSState()
    state.size = model.config.input_size
    hooks = [(model, _Start(net, state))]
    hooks += [(stage, _Stage(net, state, i)) for i, stage in enumerate(model.down_stages)]
    hooks.append((model.mid_block, _Mid(net, state)))
    handle = attach("controlnet-xs", model, StepState(), hooks)
    out = ControlHandle(handle.name, handle.state, handle.hooks)
    out.control_state = state
    return out


@torch.no_grad()
def is_zero_initialised(net: ControlNetXS) -> bool:
    """Whether every write into the base is still exactly zero (what a fresh branch is)."""
    zeros = [z for stage in net.zero_skips for z in stage] + [*net.zero_out, net.zero_mid]
    return all(not z.weight.any() and not z.bias.any() for z in zeros)
