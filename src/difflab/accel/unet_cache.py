"""UNet feature caches across steps: DeepCache's deep-branch reuse and Faster Diffusion's encoder
propagation. Both use the UNet's stage list `model.blocks = [down_0 .. down_{L-1}, mid,
up_{L-1} .. up_0]` (see `difflab.models.unet`) and a full-step schedule (`api.full_steps`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from difflab.accel.api import check_range, full_steps, needs_full, register_accel
from difflab.accel.hooks import AccelHandle, Call, ModelHook, StepState, attach
from difflab.config import ConfigError


@dataclass(frozen=True)
class StepSchedule:
    """Which steps recompute everything: `steps` if given, else ~1 in `interval`."""

    interval: int = 3
    schedule: str = "uniform"  # "uniform" or "quadratic" (DeepCache's non-uniform 1:N)
    center: float = 0.3  # quadratic: where full steps are densest, as a fraction of the run
    power: float = 1.4
    steps: tuple[int, ...] = ()  # explicit full steps; overrides interval and schedule

    def __post_init__(self) -> None:
        full_steps(2, self.interval, self.schedule, self.center, self.power)  # validates

    def full(self, num_steps: int) -> list[int]:
        if self.steps:
            return sorted(set(self.steps))
        return full_steps(num_steps, self.interval, self.schedule, self.center, self.power)


@dataclass(frozen=True)
class DeepCacheConfig(StepSchedule):
    """DeepCache: recompute only levels < `depth` (the shallow path) on cached steps."""

    depth: int = 1  # 1..L: levels kept live; L caches just the middle block's output


@dataclass(frozen=True)
class EncoderPropagationConfig(StepSchedule):
    """Faster Diffusion: the encoder (down stages + mid) runs on key steps only."""


def _unet_levels(model: nn.Module) -> int:
    """L, the number of UNet levels, or a clear error for a model without UNet stages."""
    levels = getattr(model, "num_levels", None)
    if not isinstance(levels, int) or len(model.blocks) != 2 * levels + 1:
        name = type(model).__name__
        raise ConfigError(f"{name} has no UNet stage list (blocks = down, mid, up); DeepCache "
                          "and encoder propagation need a UNet; for transformers use "
                          "block_cache, teacache or first_block_cache")
    return levels


class _Decider:
    """Decides once per model call and branch whether this call reuses the cache."""

    def __init__(self, state: StepState, schedule: StepSchedule, ready_key: str,
                 active: Callable[[Call], bool] = lambda call: True) -> None:
        self.state, self.schedule, self.ready_key = state, schedule, ready_key
        self.active = active  # calls outside the active window always run in full

    def reuse(self) -> bool:
        call = self.state.call
        if call is None:
            return False
        b = self.state.branch()
        if b.get("call_id") != self.state.calls:
            full = self.ready_key not in b or not self.active(call) or needs_full(
                call.step, b.get("last_full"), self.schedule.full(call.num_steps))
            b["call_id"], b["reuse"] = self.state.calls, not full
            self.state.stats["cached" if not full else "full"] += 1
            if full:
                b["last_full"] = call.step
        return b["reuse"]


class _SkipStage(ModelHook):
    """A deep stage on a cached call: skipped; it passes its input through (and no skips),
    because every stage that would read that output is skipped too or replaced by the cache."""

    replaces_forward = True

    def __init__(self, decider: _Decider, down: bool) -> None:
        self.decider, self.down = decider, down

    def forward(self, module: nn.Module, call_next: Any, *args: Any, **kwargs: Any) -> Any:
        if not self.decider.reuse():
            return call_next(*args, **kwargs)
        h = args[0]
        return (h, []) if self.down else h  # the skipped down stages' skips feed skipped ups


class _CacheStage(ModelHook):
    """A stage whose output is stored on full calls and returned on cached ones."""

    replaces_forward = True

    def __init__(self, decider: _Decider, slot: str) -> None:
        self.decider, self.slot = decider, slot

    def forward(self, module: nn.Module, call_next: Any, *args: Any, **kwargs: Any) -> Any:
        if self.decider.reuse():
            return self.decider.state.branch()[self.slot]
        out = call_next(*args, **kwargs)
        if self.decider.state.call is not None:
            self.decider.state.branch()[self.slot] = out
        return out


@register_accel("deepcache", DeepCacheConfig)
def apply_deepcache(model: nn.Module, config: DeepCacheConfig) -> AccelHandle:
    """DeepCache: cached steps run down_0..down_{d-1} and up_{d-1}..up_0 and reuse the deep
    features feeding up_{d-1} ("DeepCache: Accelerating Diffusion Models for Free", 2023)."""
    L = _unet_levels(model)
    check_range("deepcache depth", config.depth, 1, L)
    d, blocks, state = config.depth, model.blocks, StepState()
    # the provider is the stage whose output up_{d-1} consumes: up_d, or mid when d = L
    provider = L if d == L else 2 * L - d
    decider = _Decider(state, config, "deep")
    hooks: list[tuple[nn.Module, ModelHook]] = []
    for i in range(d, provider):  # down_d .. down_{L-1}, mid, up_{L-1} .. up_{d+1}
        hooks.append((blocks[i], _SkipStage(decider, down=i < L)))
    hooks.append((blocks[provider], _CacheStage(decider, "deep")))
    return attach("deepcache", model, state, hooks)


@register_accel("encoder_propagation", EncoderPropagationConfig)
def apply_encoder_propagation(model: nn.Module, config: EncoderPropagationConfig) -> AccelHandle:
    """Encoder propagation: down stages and mid run on key steps only, the decoder on every
    step ("Faster Diffusion: Rethinking the Role of UNet Encoder in Diffusion Models", 2023)."""
    L = _unet_levels(model)
    state = StepState()
    decider = _Decider(state, config, f"enc{L}")  # ready once the mid output is stored
    hooks = [(model.blocks[i], _CacheStage(decider, f"enc{i}")) for i in range(L + 1)]
    return attach("encoder_propagation", model, state, hooks)
