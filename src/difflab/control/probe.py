"""A read-only attention probe: the cross-attention maps of a model's declared blocks.

The probe is a post-forward hook on each `CrossAttention` inside the chosen `model.blocks`: it
recomputes softmax(q k^T / sqrt(d) + padding) from the module's own inputs and weights and
keeps the head-averaged map (B, N, T), with autograd when the caller has it on (guidance takes
gradients through it). The module's output is returned untouched, so sampling with the probe on
is bit-identical to sampling without it, and `remove()` leaves no trace.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from difflab.accel.hooks import AccelHandle, ModelHook, StepState, attach
from difflab.config import ConfigError
from difflab.models.layers import CrossAttention, split_heads


@dataclass(frozen=True)
class ProbeConfig:
    """Which declared blocks to probe: indices into `model.blocks` (() = every block that holds
    cross-attention)."""

    blocks: tuple[int, ...] = ()


class AttentionProbeHook(ModelHook):
    """Keeps the last cross-attention map (B, N, T) of one CrossAttention module."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.map: Tensor | None = None

    def post_forward(self, module: nn.Module, args: tuple, kwargs: dict, output: Tensor):
        x, context = args[0], args[1] if len(args) > 1 else kwargs["context"]
        mask = args[2] if len(args) > 2 else kwargs.get("mask")
        q = module.q_norm(split_heads(module.q(x), module.num_heads))  # (B, H, N, Dh)
        k = module.k_norm(split_heads(module.kv(context).chunk(2, dim=-1)[0], module.num_heads))
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])  # (B, H, N, T)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        self.map = scores.float().softmax(-1).mean(1)  # (B, N, T)
        return output

    def reset(self) -> None:
        self.map = None


class ProbeHandle(AccelHandle):
    """`apply_attention_probe`'s handle: `maps()` gives the latest map of each probed module."""

    def maps(self) -> dict[str, Tensor]:
        """Module name -> its last cross-attention map (B, N, T), in block order."""
        return {hook.name: hook.map for _, _, hook in self.hooks
                if isinstance(hook, AttentionProbeHook) and hook.map is not None}


def cross_attention_modules(model: nn.Module, blocks: tuple[int, ...] = ()
                            ) -> list[tuple[str, CrossAttention]]:
    """(name, module) of each CrossAttention in the declared blocks `blocks` (() = all)."""
    declared = getattr(model, "blocks", None)
    if declared is None:
        raise ConfigError(f"{type(model).__name__} declares no blocks; the attention probe "
                          "attaches to a model's declared blocks")
    bad = [b for b in blocks if not 0 <= b < len(declared)]
    if bad:
        raise ConfigError(f"probe blocks {bad} out of range; valid: 0..{len(declared) - 1}")
    found = []
    for i in blocks or range(len(declared)):
        for name, m in declared[i].named_modules():
            if isinstance(m, CrossAttention):
                found.append((f"blocks.{i}.{name}", m))
    if not found:
        raise ConfigError(f"no cross-attention in blocks {list(blocks) or 'all'} of "
                          f"{type(model).__name__}; nothing to probe")
    return found


def apply_attention_probe(model: nn.Module, config: ProbeConfig | None = None) -> ProbeHandle:
    """Attach the probe to the declared blocks' cross-attention ("Prompt-to-Prompt Image Editing
    with Cross Attention Control", 2022, reads the same maps); `handle.remove()` detaches it."""
    config = config or ProbeConfig()
    hooks = [(m, AttentionProbeHook(name))
             for name, m in cross_attention_modules(model, config.blocks)]
    handle = attach("attention-probe", model, StepState(), hooks)
    return ProbeHandle(handle.name, handle.state, handle.hooks)


def token_maps(handle: ProbeHandle) -> Tensor:
    """The probed maps as images averaged over modules: (B, T, r, r) at the finest probed
    resolution r (coarser maps are upsampled bilinearly)."""
    maps = []
    for m in handle.maps().values():  # (B, N, T)
        r = math.isqrt(m.shape[1])
        maps.append(m.transpose(1, 2).reshape(m.shape[0], m.shape[2], r, r))
    if not maps:
        raise ConfigError("the attention probe saw no forward pass yet")
    size = max(m.shape[-1] for m in maps)
    return torch.stack([m if m.shape[-1] == size else
                        nn.functional.interpolate(m, size=(size, size), mode="bilinear")
                        for m in maps]).mean(0)
