"""Transformer block caches: a fixed block range reused as a residual on a step schedule (FORA /
Delta-DiT), and the adaptive first-block caches (TeaCache, First Block Cache) that skip the rest
of the blocks while the head blocks' output barely changes.

Hidden states follow the model's block contract (`difflab.models`): a DiT block maps h -> h, an
MMDiT block (h, context) -> (h, context) with context None after a `drop_last_context` block.
A skipped range returns its input plus the residual (output - input) of its last full call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from difflab.accel.api import check_range, register_accel
from difflab.accel.hooks import AccelHandle, ModelHook, StepState, attach
from difflab.accel.unet_cache import StepSchedule, _Decider
from difflab.config import ConfigError

Hidden = Any  # a tensor (DiT) or a tuple (h, context | None) (MMDiT)


def _transformer_blocks(model: nn.Module) -> nn.ModuleList:
    """`model.blocks` of a DiT / MMDiT; a UNet (stages with skips) is refused by name."""
    if getattr(model, "num_levels", None) is not None or not hasattr(model, "blocks"):
        raise ConfigError(f"{type(model).__name__} is not a transformer with model.blocks; "
                          "for a UNet use deepcache or encoder_propagation")
    return model.blocks


def _hidden_in(args: tuple, arity: int) -> Hidden:
    """The block's hidden inputs: args[0], or the first `arity` args for a tuple output."""
    return args[0] if arity == 0 else tuple(args[:arity])


def _arity(out: Hidden) -> int:
    return len(out) if isinstance(out, tuple) else 0


def _residual(out: Hidden, inp: Hidden) -> Hidden:
    if isinstance(out, tuple):
        return tuple(None if o is None else o - i for o, i in zip(out, inp, strict=True))
    return out - inp


def _add(inp: Hidden, res: Hidden) -> Hidden:
    if isinstance(res, tuple):
        return tuple(None if r is None else i + r for i, r in zip(inp, res, strict=True))
    return inp + res


class _RangeBlock(ModelHook):
    """Block j of a cached range [first, last]: skipped when `reuse()` says so; the first block
    then returns input + cached residual, the others pass their input through."""

    replaces_forward = True

    def __init__(self, state: StepState, reuse: Callable[[], bool], first: bool,
                 last: bool) -> None:
        self.state, self.reuse, self.first, self.last = state, reuse, first, last

    def forward(self, module: nn.Module, call_next: Any, *args: Any, **kwargs: Any) -> Any:
        if self.state.call is None:
            return call_next(*args, **kwargs)
        b = self.state.branch()
        if self.reuse():
            inp = _hidden_in(args, b["arity"])
            return _add(inp, b["residual"]) if self.first else inp
        out = call_next(*args, **kwargs)
        if self.first:
            b["arity"] = _arity(out)
            b["range_in"] = _hidden_in(args, b["arity"])
        if self.last:
            b["residual"] = _residual(out, b["range_in"])
        return out


def _range_hooks(state: StepState, blocks: list[nn.Module], reuse: Callable[[], bool]
                 ) -> list[tuple[nn.Module, ModelHook]]:
    last = len(blocks) - 1
    return [(blk, _RangeBlock(state, reuse, i == 0, i == last)) for i, blk in enumerate(blocks)]


@dataclass(frozen=True)
class BlockCacheConfig(StepSchedule):
    """Blocks [start, end) reused as one residual except on full steps; caching only while
    step / num_steps lies in [active_from, active_to) (Delta-DiT's stage split)."""

    start: int = 0
    end: int = -1  # -1: through the last block
    active_from: float = 0.0
    active_to: float = 1.0


@register_accel("block_cache", BlockCacheConfig)
def apply_block_cache(model: nn.Module, config: BlockCacheConfig) -> AccelHandle:
    """Reuse blocks [start, end) as a cached residual for N-1 of N steps ("FORA: Fast-Forward
    Caching in Diffusion Transformer Acceleration", 2024; "Delta-DiT", 2024)."""
    blocks = _transformer_blocks(model)
    end = len(blocks) if config.end == -1 else config.end
    check_range("block_cache end", end, 1, len(blocks))
    check_range("block_cache start", config.start, 0, end - 1)
    if not 0 <= config.active_from <= config.active_to <= 1:
        raise ConfigError(f"need 0 <= active_from <= active_to <= 1, got "
                          f"{config.active_from}, {config.active_to}")
    state = StepState()
    decider = _Decider(state, config, "residual", lambda call: (
        config.active_from <= call.step / call.num_steps < config.active_to))
    return attach("block_cache", model, state,
                  _range_hooks(state, list(blocks[config.start:end]), decider.reuse))


@dataclass(frozen=True)
class TeaCacheConfig:
    """Skip blocks [head_blocks, depth) while the accumulated rescaled relative L1 change of the
    head blocks' signal stays under `threshold`; `coefficients` (highest power first, as
    numpy.polyval) rescale it, () = identity; fit them with `calibrate_teacache`."""

    threshold: float = 0.1
    head_blocks: int = 1
    coefficients: tuple[float, ...] = ()
    signal: Literal["residual", "output"] = "residual"
    accumulate: bool = True  # TeaCache; False: compare with the last full call (First Block Cache)

    def __post_init__(self) -> None:
        if self.threshold < 0:
            raise ConfigError(f"threshold must be >= 0, got {self.threshold}")
        if self.signal not in ("residual", "output"):
            raise ConfigError(f"signal={self.signal!r} is not valid; valid: residual, output")


@dataclass(frozen=True)
class FirstBlockCacheConfig(TeaCacheConfig):
    """First Block Cache (diffusers): TeaCache's test without accumulation."""

    accumulate: bool = False


def relative_l1(a: Tensor, b: Tensor) -> float:
    """mean |a - b| / mean |b|, the change measure of TeaCache."""
    return float((a - b).abs().mean() / b.abs().mean().clamp(min=1e-12))


class _HeadHook(ModelHook):
    """On the head blocks: record the head input (first) and compute the signal (last); with a
    `decide` callback, store this call's skip decision in the branch state."""

    def __init__(self, state: StepState, signal: str, first: bool, last: bool,
                 decide: Callable[[dict, Tensor], None] | None) -> None:
        self.state, self.signal, self.first, self.last = state, signal, first, last
        self.decide = decide

    def pre_forward(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        if self.first and self.state.call is not None:
            self.state.branch()["head_in"] = args[0]  # (B, N, D) image tokens
        return args, kwargs

    def post_forward(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
        if self.last and self.state.call is not None:
            b = self.state.branch()
            h = output[0] if isinstance(output, tuple) else output  # (B, N, D)
            sig = h - b["head_in"] if self.signal == "residual" else h
            b["signal"] = sig.detach().float()
            if self.decide is not None:
                self.decide(b, b["signal"])
        return output


def _teacache_decider(state: StepState, config: TeaCacheConfig) -> Callable[[dict, Tensor], None]:
    """The per-call skip rule: accumulate rescaled changes (TeaCache) or compare (FBCache)."""
    coeffs = np.asarray(config.coefficients, dtype=np.float64)

    def decide(b: dict, sig: Tensor) -> None:
        prev = b.get("prev_signal")
        skip = False
        if prev is not None and "residual" in b and state.call.step > 0:
            change = relative_l1(sig, prev)
            # a fitted polynomial can dip below zero; a negative change would pay back
            # accumulated drift and let the cache run on, so it counts as no change
            change = max(0.0, float(np.polyval(coeffs, change))) if coeffs.size else change
            acc = b.get("acc", 0.0) + change if config.accumulate else change
            skip = acc < config.threshold
            b["acc"] = acc if skip else 0.0
        if config.accumulate or not skip:
            b["prev_signal"] = sig
        b["skip_call"] = state.calls if skip else -1
        state.stats["cached" if skip else "full"] += 1

    return decide


def _apply_head_cache(name: str, model: nn.Module, config: TeaCacheConfig) -> AccelHandle:
    blocks = _transformer_blocks(model)
    check_range(f"{name} head_blocks", config.head_blocks, 1, len(blocks) - 1)
    state, k = StepState(), config.head_blocks
    head = _HeadHook(state, config.signal, True, k == 1, _teacache_decider(state, config))
    hooks: list[tuple[nn.Module, ModelHook]] = [(blocks[0], head)]
    if k > 1:
        hooks.append((blocks[k - 1], _HeadHook(state, config.signal, False, True, head.decide)))

    def reuse() -> bool:
        return state.branch().get("skip_call") == state.calls

    return attach(name, model, state, hooks + _range_hooks(state, list(blocks[k:]), reuse))


@register_accel("teacache", TeaCacheConfig)
def apply_teacache(model: nn.Module, config: TeaCacheConfig) -> AccelHandle:
    """Adaptive residual caching by accumulated rescaled change of the head blocks ("Timestep
    Embedding Tells: It's Time to Cache for Video Diffusion Model", 2024)."""
    return _apply_head_cache("teacache", model, config)


@register_accel("first_block_cache", FirstBlockCacheConfig)
def apply_first_block_cache(model: nn.Module, config: FirstBlockCacheConfig) -> AccelHandle:
    """First Block Cache (diffusers, 2025; after "Timestep Embedding Tells...", 2024): skip the
    rest while the first block's residual is within `threshold` of the last full call's."""
    return _apply_head_cache("first_block_cache", model, config)


class _OutputRecorder(ModelHook):
    def __init__(self, state: StepState, log: dict[tuple, list]) -> None:
        self.state, self.log = state, log

    def post_forward(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
        if self.state.call is not None:
            b = self.state.branch()
            self.log.setdefault(self.state.call.key, []).append(
                (self.state.run, b["signal"], output.detach().float()))
        return output


@torch.no_grad()
def calibrate_teacache(model: nn.Module, run: Callable[[], Any], head_blocks: int = 1,
                       signal: str = "residual", degree: int = 1) -> tuple[float, ...]:
    """Fit TeaCache's rescaling polynomial: over the sampling runs `run()` makes, the relative
    L1 change of the model output between consecutive calls against that of the head signal,
    by numpy.polyfit ("Timestep Embedding Tells...", 2024, Sec. 3.3).

    The paper fits degree 4 over many prompts; one calibration batch gives only steps - 1 pairs
    per CFG branch, and on the demo DiT a quartic through 19 pairs dipped below zero inside the
    data's range (every step then cached: 4x faster, PSNR 15 dB), so the default is linear."""
    blocks = _transformer_blocks(model)
    check_range("head_blocks", head_blocks, 1, len(blocks) - 1)
    state, log = StepState(), {}
    hooks: list[tuple[nn.Module, ModelHook]] = [
        (blocks[0], _HeadHook(state, signal, True, head_blocks == 1, None))]
    if head_blocks > 1:
        hooks.append((blocks[head_blocks - 1], _HeadHook(state, signal, False, True, None)))
    hooks.append((model, _OutputRecorder(state, log)))
    xs, ys = [], []
    with attach("teacache_calibration", model, state, hooks):
        run()
    for seq in log.values():  # one sequence per (branch, shape); runs follow each other
        for (r0, s0, o0), (r1, s1, o1) in zip(seq, seq[1:], strict=False):
            if r0 != r1:  # the first call of the next sampling run
                continue
            xs.append(relative_l1(s1, s0))
            ys.append(relative_l1(o1, o0))
    if len(xs) <= degree:
        raise ConfigError(f"calibration saw {len(xs)} step pairs; a degree-{degree} fit needs "
                          f"more than {degree}: sample more steps or images")
    return tuple(float(c) for c in np.polyfit(xs, ys, degree))
