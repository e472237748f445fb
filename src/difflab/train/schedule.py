"""Stateless training schedules and per-step randomness: functions of (config, seed, step)."""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

from difflab.train.config import ScheduleSection

# Independent random streams derived from (seed, stream, step): nothing to checkpoint, and a
# resumed run draws exactly what an uninterrupted one would.
STREAM_ORDER, STREAM_STEP, STREAM_MASK, STREAM_LATENT = 0, 1, 2, 3


def lr_at(step: int, base_lr: float, s: ScheduleSection) -> float:
    """Linear warm-up, then constant or cosine decay (SGDR: Stochastic Gradient Descent with
    Warm Restarts, 2017) to `min_lr_ratio * base_lr`; `step` counts from 0."""
    if s.warmup_steps and step < s.warmup_steps:
        return base_lr * (step + 1) / s.warmup_steps
    if s.decay == "none":
        return base_lr
    span = max(1, s.steps - s.warmup_steps)
    progress = min(1.0, (step - s.warmup_steps) / span)
    floor = s.min_lr_ratio * base_lr
    return floor + (base_lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def derived_seed(seed: int, stream: int, *keys: int) -> int:
    """A 63-bit seed that depends on (seed, stream, keys) only (numpy SeedSequence hashing)."""
    state = np.random.SeedSequence([seed, stream, *keys]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 31 ^ int(state[1])


def generator(seed: int, stream: int, *keys: int) -> torch.Generator:
    """A CPU torch.Generator seeded from (seed, stream, keys)."""
    return torch.Generator().manual_seed(derived_seed(seed, stream, *keys))


@lru_cache(maxsize=4)
def _epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    rng = np.random.default_rng(derived_seed(seed, STREAM_ORDER, epoch))
    return rng.permutation(n)


def batch_indices(seed: int, step: int, batch_size: int, n: int) -> list[int]:
    """Data-set indices of the global batch at `step`: a fresh permutation every epoch."""
    out = []
    for pos in range(step * batch_size, (step + 1) * batch_size):
        epoch, offset = divmod(pos, n)
        out.append(int(_epoch_order(seed, epoch, n)[offset]))
    return out
