"""Removable, named hooks on a model's declared blocks, and the per-branch step state caches share.

Style of diffusers' `hooks/hooks.py`: a `ModelHook` has `pre_forward`, `post_forward`, an optional
replacement `forward` and `reset`; `add_hook(module, name, hook)` attaches it through PyTorch's
forward (pre-)hooks (with kwargs), and a replacement forward as an instance attribute that
`remove_hook` deletes again, so removing every hook leaves the module's `__dict__` as it was.
Hooks on one module compose: pre/post hooks run in the order added, replacement forwards nest
(the last added is outermost and gets `call_next`, the one below it).

Step state: `StepState.begin(x)` (called by a pre-hook on the model itself) reads the sampler's
`StepContext` and keys the call's cache by (branch, x.shape). A CFG "all" call (cond and uncond
rows in one batch) therefore has its own state for the whole batched tensor, separate from a
"cond"-only call's; rows never mix, and a switch between "all" and "cond" (a guidance interval)
finds the other key's state stale by step and recomputes. A new sampling run (the step goes
back, or repeats at an equal or higher sigma) clears every branch's state.
"""

from __future__ import annotations

import itertools
import weakref
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from difflab.core.context import current_context


class ModelHook:
    """One hook on one module; override any of `pre_forward`, `post_forward`, `forward`, `reset`."""

    replaces_forward = False  # set True in subclasses that override `forward`

    def pre_forward(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        return args, kwargs

    def post_forward(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
        return output

    def forward(self, module: nn.Module, call_next: Callable, *args: Any, **kwargs: Any) -> Any:
        return call_next(*args, **kwargs)

    def reset(self) -> None:
        """Drop any state (called between images and by `AccelHandle.reset`)."""


class _ModuleHooks:
    """The hooks of one module: name -> (hook, torch handles), in the order added."""

    def __init__(self) -> None:
        self.hooks: dict[str, tuple[ModelHook, list]] = {}


_REGISTRIES: weakref.WeakKeyDictionary[nn.Module, _ModuleHooks] = weakref.WeakKeyDictionary()
_APPLIED = itertools.count()  # numbers each application, so one method can be applied twice


def _overrides(hook: ModelHook, method: str) -> bool:
    return getattr(type(hook), method) is not getattr(ModelHook, method)


def _rebuild_forward(module: nn.Module, reg: _ModuleHooks) -> None:
    """Install the nested replacement forwards; none (the class forward) when no hook has one."""
    module.__dict__.pop("forward", None)
    chain = [h for h, _ in reg.hooks.values() if h.replaces_forward]
    if not chain:
        return
    call: Callable = type(module).forward.__get__(module)
    for hook in chain:
        call = _bind(hook, module, call)
    module.__dict__["forward"] = call


def _bind(hook: ModelHook, module: nn.Module, call_next: Callable) -> Callable:
    def forward(*args: Any, **kwargs: Any) -> Any:
        return hook.forward(module, call_next, *args, **kwargs)
    return forward


def add_hook(module: nn.Module, name: str, hook: ModelHook) -> None:
    """Attach `hook` to `module` under `name` (unique per module)."""
    reg = _REGISTRIES.setdefault(module, _ModuleHooks())
    if name in reg.hooks:
        raise ValueError(f"a hook named {name!r} is already on {type(module).__name__}; "
                         f"present: {', '.join(reg.hooks)}")
    handles = []
    if _overrides(hook, "pre_forward"):
        handles.append(module.register_forward_pre_hook(
            lambda m, a, k: hook.pre_forward(m, a, k), with_kwargs=True))
    if _overrides(hook, "post_forward"):
        handles.append(module.register_forward_hook(
            lambda m, a, k, out: hook.post_forward(m, a, k, out), with_kwargs=True))
    reg.hooks[name] = (hook, handles)
    if hook.replaces_forward:
        _rebuild_forward(module, reg)


def remove_hook(module: nn.Module, name: str) -> None:
    """Detach the hook `name` from `module`; the last removal leaves no trace on the module."""
    reg = _REGISTRIES.get(module)
    if reg is None or name not in reg.hooks:
        present = ", ".join(reg.hooks) if reg else "(none)"
        raise KeyError(f"no hook named {name!r} on {type(module).__name__}; present: {present}")
    hook, handles = reg.hooks.pop(name)
    for h in handles:
        h.remove()
    if hook.replaces_forward:
        _rebuild_forward(module, reg)
    if not reg.hooks:
        del _REGISTRIES[module]


def hook_names(module: nn.Module) -> list[str]:
    """Names of the hooks on `module`, in the order added."""
    reg = _REGISTRIES.get(module)
    return list(reg.hooks) if reg else []


@dataclass(frozen=True)
class Call:
    """The model call in progress: its step, noise level and cache key (branch, x.shape)."""

    step: int
    num_steps: int
    sigma: float
    key: tuple


class StepState:
    """Per-branch caches of one acceleration method, keyed by the current call."""

    def __init__(self) -> None:
        self.branches: dict[tuple, dict[str, Any]] = {}
        self.last: dict[tuple, tuple[int, float]] = {}
        self.call: Call | None = None
        self.calls = 0  # id of the current call, so hooks decide once per call
        self.run = 0  # sampling runs seen (a new one clears the caches)
        self.stats: Counter = Counter()  # "full" / "cached" / "partial" calls

    def begin(self, x: Tensor) -> Call | None:
        """Start a model call with input x; outside a sampler there is no call (hooks pass)."""
        ctx = current_context()
        self.calls += 1
        if ctx is None:
            self.call = None
            return None
        key = (ctx.branch, tuple(x.shape))
        prev = self.last.get(key)
        if prev is not None and (ctx.step < prev[0] or
                                 (ctx.step == prev[0] and ctx.sigma >= prev[1])):
            self.reset()  # a new sampling run
            self.run += 1
        self.last[key] = (ctx.step, ctx.sigma)
        self.call = Call(ctx.step, ctx.num_steps, ctx.sigma, key)
        return self.call

    def branch(self) -> dict[str, Any]:
        """The cache dict of the current call's branch (empty for a new branch)."""
        assert self.call is not None
        return self.branches.setdefault(self.call.key, {})

    def reset(self) -> None:
        self.branches.clear()
        self.last.clear()


class CallHook(ModelHook):
    """On the model itself: opens each call in a `StepState` (hidden states x = args[0])."""

    def __init__(self, state: StepState) -> None:
        self.state = state

    def pre_forward(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        x = args[0] if args else kwargs["x"]
        self.state.begin(x)
        return args, kwargs


class AccelHandle:
    """What `apply_<method>` returns: `remove()` detaches every hook, `reset()` clears state."""

    def __init__(self, name: str, state: StepState,
                 hooks: list[tuple[nn.Module, str, ModelHook]]) -> None:
        self.name, self.state, self.hooks = name, state, hooks
        self.removed = False

    @property
    def stats(self) -> Counter:
        """Counts of "full", "cached" and "partial" model calls since the hooks were applied."""
        return self.state.stats

    def reset(self) -> None:
        self.state.reset()
        for _, _, hook in self.hooks:
            hook.reset()

    def remove(self) -> None:
        if self.removed:
            return
        for module, name, _ in reversed(self.hooks):
            remove_hook(module, name)
        self.removed = True

    def __enter__(self) -> AccelHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def attach(name: str, model: nn.Module, state: StepState,
           hooks: list[tuple[nn.Module, ModelHook]]) -> AccelHandle:
    """Add a `CallHook` on `model` and each (module, hook) as `name#k`; all or nothing."""
    added: list[tuple[nn.Module, str, ModelHook]] = []
    tag = f"{name}#{next(_APPLIED)}"
    try:
        for module, hook in [(model, CallHook(state)), *hooks]:
            hook_name = f"{tag}.call" if isinstance(hook, CallHook) else tag
            add_hook(module, hook_name, hook)
            added.append((module, hook_name, hook))
    except Exception:
        for module, hook_name, _ in reversed(added):
            remove_hook(module, hook_name)
        raise
    return AccelHandle(name, state, added)
