"""Cost meters: wall time (median and spread, interleaved with a baseline), FLOPs, network
evaluations, peak memory and bytes of weights."""

from __future__ import annotations

import contextlib
import resource
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils import flop_counter
from torch.utils.flop_counter import FlopCounterMode

from difflab.config import MissingFileError


@dataclass(frozen=True)
class Timing:
    """Wall times of `repeats` runs (seconds) with their median and spread."""

    times: tuple[float, ...]
    median: float
    q1: float
    q3: float
    min: float
    max: float

    @classmethod
    def from_times(cls, times: list[float]) -> Timing:
        t = np.asarray(times, dtype=np.float64)
        q1, med, q3 = np.percentile(t, [25, 50, 75])
        return cls(tuple(float(x) for x in t), float(med), float(q1), float(q3),
                   float(t.min()), float(t.max()))

    def images_per_s(self, batch_size: int) -> float:
        """Throughput at the median time for a batch of `batch_size` images."""
        return batch_size / self.median

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "times": list(self.times)}


def _default_sync() -> None:
    # CUDA launches are asynchronous: a timer must wait for the device to finish.
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def time_callable(
    fn: Callable[[], Any],
    repeats: int = 5,
    warmup: int = 1,
    clock: Callable[[], float] = time.perf_counter,
    sync: Callable[[], None] = _default_sync,
) -> Timing:
    """Time `fn()` `repeats` times after `warmup` untimed calls."""
    return time_interleaved({"fn": fn}, repeats, warmup, clock, sync)["fn"]


def time_interleaved(
    fns: Mapping[str, Callable[[], Any]],
    repeats: int = 5,
    warmup: int = 1,
    clock: Callable[[], float] = time.perf_counter,
    sync: Callable[[], None] = _default_sync,
) -> dict[str, Timing]:
    """Time several callables round-robin, so drift in machine load hits all of them alike.

    Round r runs every callable once, in an order rotated by r (so no callable always runs
    right after the same neighbour); warm-up rounds are untimed.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got {repeats} and {warmup}")
    if not fns:
        raise ValueError("nothing to time: no callables given")
    names = list(fns)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(warmup + repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            sync()
            start = clock()
            fns[name]()
            sync()
            if r >= warmup:
                times[name].append(clock() - start)
    return {name: Timing.from_times(times[name]) for name in names}


def register_flop_formulas() -> None:
    """Teach torch's FlopCounterMode the CPU flash-attention kernel (it has no formula, so SDPA
    on a CPU would count zero FLOPs): the standard SDPA count. Idempotent."""
    fwd = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    if fwd in flop_counter.flop_registry or fwd.default in flop_counter.flop_registry:
        return

    @flop_counter.register_flop_formula(fwd)
    def _cpu_flash_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs):
        return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of the operators `torch.utils.flop_counter` knows (matmul, conv, attention)."""
    register_flop_formulas()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


@dataclass
class CallCounter:
    """Number of forward calls a module received while counting (its network evaluations)."""

    calls: int = 0
    batch_sizes: list[int] = field(default_factory=list)


@contextlib.contextmanager
def count_calls(module: torch.nn.Module) -> Iterator[CallCounter]:
    """Count `module`'s forward calls with a removable forward pre-hook (no monkeypatching)."""
    counter = CallCounter()

    def hook(_module: torch.nn.Module, args: tuple) -> None:
        counter.calls += 1
        first = args[0] if args else None
        counter.batch_sizes.append(int(first.shape[0]) if torch.is_tensor(first) else 0)

    handle = module.register_forward_pre_hook(hook)
    try:
        yield counter
    finally:
        handle.remove()


@dataclass(frozen=True)
class MemoryPeak:
    """Peak memory growth during a call, in bytes, and what was measured."""

    bytes: int
    method: str


def _read_status_kb(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_rss_peak() -> bool:
    """Reset the kernel's resident-set high-water mark (Linux >= 4.0: clear_refs value 5)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return _read_status_kb("VmHWM") is not None


def peak_memory(fn: Callable[[], Any], device: str | torch.device | None = None) -> MemoryPeak:
    """Peak memory `fn()` adds above what was in use when it started.

    CUDA: `torch.cuda.max_memory_allocated` (tensors via the caching allocator). CPU on Linux:
    growth of the process's peak resident set (VmHWM after resetting it), i.e. everything
    the process touched, tensors and allocator caches included. Elsewhere: growth of
    `ru_maxrss`, a lower bound (an earlier, higher peak hides a smaller one).
    """
    dev = torch.device(device) if device is not None else None
    if dev is not None and dev.type == "cuda":
        torch.cuda.synchronize(dev)
        before = torch.cuda.memory_allocated(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        fn()
        torch.cuda.synchronize(dev)
        return MemoryPeak(torch.cuda.max_memory_allocated(dev) - before, "cuda_max_allocated")
    if _reset_rss_peak():
        before_kb = _read_status_kb("VmRSS") or 0
        fn()
        return MemoryPeak(((_read_status_kb("VmHWM") or 0) - before_kb) * 1024, "rss_hwm_linux")
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    fn()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return MemoryPeak((after - before) * scale, "ru_maxrss_growth_lower_bound")


def weight_bytes(source: torch.nn.Module | str | Path) -> int:
    """Bytes of weights as stored: parameters + buffers of a module (a quantized layer counts its
    `storage_bytes()`: packed codes and scales, not its dequantized cache), or a file's size."""
    if isinstance(source, torch.nn.Module):
        from difflab.quant.storage import model_bytes

        return int(model_bytes(source))
    path = Path(source)
    if not path.is_file():
        raise MissingFileError(f"weights file not found: {path}")
    return path.stat().st_size
