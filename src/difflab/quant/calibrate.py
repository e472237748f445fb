"""Activation observers and range estimators: min-max, percentile, MSE-optimal clipping, with
timestep-aware collection over the whole sampling trajectory (Q-Diffusion, 2023).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from difflab.core.context import current_context
from difflab.quant.formats import Format, scale_from_range
from difflab.registry import Registry

# (samples 1-D, fmt, symmetric) -> (lo, hi) as 0-d tensors
RangeFn = Callable[[Tensor, Format, bool], tuple[Tensor, Tensor]]
RANGE_METHODS: Registry[RangeFn] = Registry("calibration method")


@RANGE_METHODS.register("minmax")
def range_minmax(samples: Tensor, fmt: Format, symmetric: bool) -> tuple[Tensor, Tensor]:
    """The observed extremes ("Quantization and Training of Neural Networks...", 2018)."""
    return samples.min(), samples.max()


@RANGE_METHODS.register("percentile")
def range_percentile(samples: Tensor, fmt: Format, symmetric: bool,
                     percentile: float = 99.99) -> tuple[Tensor, Tensor]:
    """Clip to the given percentile of |x| (symmetric) or of each tail (PTQ4DM, 2023)."""
    q = percentile / 100.0
    if symmetric:
        amax = torch.quantile(samples.abs().float(), q)
        return -amax, amax
    return torch.quantile(samples.float(), 1 - q), torch.quantile(samples.float(), q)


@RANGE_METHODS.register("mse")
def range_mse(samples: Tensor, fmt: Format, symmetric: bool, n_ratios: int = 64,
              min_ratio: float = 0.2, max_samples: int = 8192) -> tuple[Tensor, Tensor]:
    """Clipping ratio of the min-max range minimising fake-quant MSE (Q-Diffusion, 2023)."""
    lo0, hi0 = samples.min(), samples.max()
    x = samples[:: max(1, -(-samples.numel() // max_samples))].float()  # (N,) strided subset
    r = torch.linspace(min_ratio, 1.0, n_ratios)[:, None]  # (K, 1) candidate ratios
    scale, zero = scale_from_range(lo0 * r, hi0 * r, fmt, symmetric)  # (K, 1) each
    err = (((fmt.round(x[None] / scale + zero) - zero) * scale - x[None]).square().mean(1))
    k = int(torch.argmin(err))  # the first minimum: ties keep the smaller ratio
    return lo0 * r[k, 0], hi0 * r[k, 0]


def timestep_group(step: int, num_steps: int, groups: int) -> int:
    """Which of `groups` equal runs of sampling steps step `step` falls in."""
    return min(step * groups // max(num_steps, 1), groups - 1)


def split_channels(x: Tensor, channel_dim: int, split: int | None) -> list[Tensor]:
    """[x] or [x[..., :split], x[..., split:]] along the channel dim (Q-Diffusion's shortcut
    splitting: the two halves of a concatenated skip input have their own ranges)."""
    if split is None:
        return [x]
    return list(torch.split(x, [split, x.shape[channel_dim] - split], dim=channel_dim))


@dataclass
class ActivationObserver:
    """Collects one layer's input statistics per sampling step, deterministically.

    Every call keeps exact min/max and a strided subsample of at most `samples_per_call`
    values per channel part, so each step of the trajectory weighs the same; per-input-channel
    |x| maxima feed SmoothQuant.
    """

    channel_dim: int
    split: int | None = None
    samples_per_call: int = 4096
    only_last_step: bool = False
    # step -> part -> list of tensors; "step" is -1 for calls outside a sampler
    samples: dict[int, list[list[Tensor]]] = field(default_factory=dict)
    num_steps: int = 1
    channel_absmax: Tensor | None = None

    def record(self, x: Tensor) -> None:
        """Record one input tensor (any shape with channels on `channel_dim`)."""
        ctx = current_context()
        step = -1 if ctx is None else ctx.step
        if ctx is not None:
            self.num_steps = ctx.num_steps
            if self.only_last_step and step != ctx.num_steps - 1:
                return
        x = x.detach().float()
        c = self.channel_dim % x.dim()
        dims = [d for d in range(x.dim()) if d != c]
        cmax = x.abs().amax(dim=dims) if dims else x.abs()  # (C,)
        self.channel_absmax = cmax if self.channel_absmax is None else torch.maximum(
            self.channel_absmax, cmax)
        split = split_channels(x, self.channel_dim, self.split)
        parts = self.samples.setdefault(step, [[] for _ in split])
        for store, part in zip(parts, split, strict=True):
            flat = part.reshape(-1)
            stride = max(1, -(-flat.numel() // self.samples_per_call))
            # keep the extremes exactly, so min-max ranges do not depend on the stride
            store.append(torch.cat([flat[::stride], flat.min().view(1), flat.max().view(1)]))

    def steps(self) -> list[int]:
        return sorted(self.samples)

    def gather(self, steps: list[int]) -> list[Tensor]:
        """Samples of each part from the given steps, concatenated."""
        parts = None
        for s in steps:
            stored = self.samples[s]
            parts = [[] for _ in stored] if parts is None else parts
            for acc, got in zip(parts, stored, strict=True):
                acc.extend(got)
        return [torch.cat(p) for p in parts or []]

    def ranges(self, method: RangeFn, fmt: Format, symmetric: bool, groups: int
               ) -> tuple[Tensor, Tensor]:
        """(lo, hi), each (groups + 1, parts): a range per timestep group, then one for all."""
        if not self.samples:
            raise RuntimeError("no activations were recorded: the calibration run never "
                               "called this layer")
        steps = self.steps()
        per_group = [[s for s in steps if timestep_group(s, self.num_steps, groups) == g]
                     for g in range(groups)] if groups > 1 else []
        lows, highs = [], []
        for chosen in [*per_group, steps]:
            parts = self.gather(chosen or steps)  # an empty group borrows the overall range
            rng = [method(p, fmt, symmetric) for p in parts]
            lows.append(torch.stack([r[0] for r in rng]))
            highs.append(torch.stack([r[1] for r in rng]))
        return torch.stack(lows), torch.stack(highs)


def unet_skip_splits(model: torch.nn.Module) -> tuple[str, ...]:
    """`act_split` entries for a difflab UNet: every up-stage layer whose input is
    cat([h, skip]) gets separate scales for the h and skip channels (Q-Diffusion, 2023)."""
    stages = getattr(model, "up_stages", None)
    if stages is None:
        raise ValueError(f"{type(model).__name__} has no up_stages; shortcut splitting is for "
                         "difflab UNets")
    names = {id(m): n for n, m in model.named_modules()}
    entries = []
    for stage in stages:
        for layer in stage.layers:
            res = layer.res
            split = res.conv1.in_channels - res.conv1.out_channels  # channels of h before skip
            for conv in (res.conv1, res.skip):
                if isinstance(conv, torch.nn.Conv2d):
                    entries.append(f"re:{re.escape(names[id(conv)])}={split}")
    return tuple(entries)
