"""The step context: which step, noise level and CFG branch a model call belongs to.

Samplers publish a `StepContext` around every model call; the guidance wrapper replaces the
branch ("all" for a batched cond+uncond forward, "cond" when only the conditional runs).
Hooks (caches, sparsity schedules) read `current_context()` instead of guessing.
"""

from __future__ import annotations

import contextvars
import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

BRANCHES = ("cond", "uncond", "all")

_CURRENT: contextvars.ContextVar[StepContext | None] = contextvars.ContextVar(
    "difflab_step_context", default=None
)


@dataclass(frozen=True)
class StepContext:
    """Where a model call sits in sampling: step i of num_steps at noise level sigma."""

    step: int
    num_steps: int
    sigma: float
    branch: str = "cond"

    def __post_init__(self) -> None:
        if self.branch not in BRANCHES:
            raise ValueError(f"unknown branch {self.branch!r}; valid: {', '.join(BRANCHES)}")

    def with_branch(self, branch: str) -> StepContext:
        """A copy of this context for another CFG branch."""
        return dataclasses.replace(self, branch=branch)


@contextmanager
def step_context(ctx: StepContext) -> Iterator[StepContext]:
    """Publish `ctx` for the duration of the block; nests, and is per thread / per task."""
    token = _CURRENT.set(ctx)
    try:
        yield ctx
    finally:
        _CURRENT.reset(token)


def current_context() -> StepContext | None:
    """The innermost published step context, or None outside a sampler."""
    return _CURRENT.get()


@contextmanager
def branch_context(branch: str) -> Iterator[StepContext | None]:
    """Re-publish the current context with another branch (no-op outside a sampler)."""
    ctx = current_context()
    if ctx is None:
        if branch not in BRANCHES:
            raise ValueError(f"unknown branch {branch!r}; valid: {', '.join(BRANCHES)}")
        yield None
        return
    with step_context(ctx.with_branch(branch)) as inner:
        yield inner
