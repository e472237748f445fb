"""What this machine computes fast: precision, int8 kernels and threads chosen by capability.

A CPU without AVX512_BF16/AMX runs bf16 matmuls through a slow fallback (~1 GFLOP/s against
~120 GFLOP/s fp32 on an AVX2 EPYC) and `torch._int_mm` without VNNI/AMX at ~2 GOP/s, so neither
may be a default. The verdict comes from the instruction flags torch reports, confirmed by a
tiny timed matmul the first time it runs (a flag can lie under virtualisation); the measured
rates are cached per machine in the user's cache folder.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import hashlib
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from difflab.config import ConfigError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
PROBE_VERSION = 1
PROBE_SIZE = 512  # matmul side of the timed probe: ~0.3 s for bf16 on a CPU without it
# A native kernel is at least this fraction of fp32's rate; the fallbacks are 50-100x slower.
NATIVE_RATIO = 0.8
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
INT8_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


@dataclass(frozen=True)
class Machine:
    """The facts precision and kernel choices are made from (what `difflab doctor` prints)."""

    device: str  # "cpu" or "cuda"
    name: str  # CPU model or GPU name
    capability: str  # torch's CPU capability (AVX2, AVX512, ...) or "sm_90"
    flags: tuple[str, ...]  # the bf16/int8 instruction flags present
    threads: int
    bf16_flag: bool  # the instruction set claims native bf16
    int8_flag: bool  # ... and fast int8 dot products
    rates: dict[str, float] = field(default_factory=dict)  # GFLOP/s (GOP/s for int8), measured

    @property
    def native_bf16(self) -> bool:
        """bf16 computes natively: claimed by the flags and confirmed by the timed probe."""
        return self.bf16_flag and _confirmed(self.rates, "bf16")

    @property
    def fast_int8(self) -> bool:
        """int8 GEMMs beat fp32: claimed by the flags and confirmed by the timed probe."""
        return self.int8_flag and _confirmed(self.rates, "int8")

    def record(self) -> dict[str, Any]:
        """What every result file stores about the machine that produced it."""
        return {"device": self.device, "cpu": cpu_name(), "cpu_id": cpu_id(), "name": self.name,
                "capability": self.capability, "flags": list(self.flags),
                "threads": self.threads, "native_bf16": self.native_bf16,
                "fast_int8": self.fast_int8, "torch": torch.__version__,
                "python": platform.python_version()}


def _confirmed(rates: dict[str, float], kind: str) -> bool:
    # No measurement (a faked or not yet probed machine): trust the flags.
    if kind not in rates or "fp32" not in rates:
        return True
    return rates[kind] >= NATIVE_RATIO * rates["fp32"]


# ---- facts ---------------------------------------------------------------------------------


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo ({} elsewhere)."""
    info: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if not line.strip():
                break
            key, _, value = line.partition(":")
            info[key.strip()] = value.strip()
    except OSError:
        pass
    return info


def cpu_name() -> str:
    """The CPU model as /proc/cpuinfo (or the platform) names it."""
    name = _cpuinfo().get("model name")
    return name or platform.processor() or torch.cpu.get_capabilities().get("cpu_name", "?")


def cpu_id() -> str:
    """Vendor, family, model and stepping: tells apart CPUs that share a marketing name (an
    "AMD EPYC" can be a Zen 1 with AVX2 only or a Zen 4 with AVX-512 BF16)."""
    info = _cpuinfo()
    keys = ("vendor_id", "cpu family", "model", "stepping")
    return " ".join(f"{k.replace(' ', '_')}={info[k]}" for k in keys if k in info) or "?"


def available_cores() -> int:
    """Physical cores this process may run on: its affinity set, one thread per core (SMT
    siblings counted once), capped by a cgroup CPU quota."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return max(1, (os.cpu_count() or 1))
    cores = set()
    for c in cpus:
        topo = Path(f"/sys/devices/system/cpu/cpu{c}/topology")
        try:
            cores.add((topo.joinpath("physical_package_id").read_text().strip(),
                       topo.joinpath("core_id").read_text().strip()))
        except OSError:
            cores.add(("", str(c)))
    n = len(cores) or 1
    quota = _cgroup_quota()
    return max(1, min(n, quota)) if quota else n


def _cgroup_quota() -> int | None:
    """CPUs allowed by a cgroup v2 (cpu.max) or v1 (cfs_quota/period) limit, rounded up."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        return None if quota == "max" else -(-int(quota) // int(period))
    except (OSError, ValueError):
        pass
    try:
        quota = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        return -(-quota // period) if quota > 0 else None
    except (OSError, ValueError):
        return None


def configure_threads(threads: int | None = None) -> int:
    """Set torch's intra-op threads to the available physical cores (or `threads`, or the
    DIFFLAB_THREADS environment variable) and return the number used."""
    env = os.environ.get("DIFFLAB_THREADS", "").strip()
    if threads is None and env:
        try:
            threads = int(env)
        except ValueError:
            raise ConfigError(f"DIFFLAB_THREADS={env!r} is not a whole number") from None
    n = threads if threads is not None else available_cores()
    if n < 1:
        raise ConfigError(f"threads must be >= 1, got {n}")
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def _facts(device: str) -> Machine:
    if device == "cuda":
        cap = torch.cuda.get_device_capability()
        return Machine("cuda", torch.cuda.get_device_name(), f"sm_{cap[0]}{cap[1]}", (),
                       torch.get_num_threads(), bf16_flag=torch.cuda.is_bf16_supported(),
                       int8_flag=cap >= (7, 5))
    caps = torch.cpu.get_capabilities()
    flags = tuple(f for f in BF16_FLAGS + INT8_FLAGS if caps.get(f))
    return Machine("cpu", cpu_name(), torch.backends.cpu.get_cpu_capability(), flags,
                   torch.get_num_threads(), bf16_flag=any(f in flags for f in BF16_FLAGS),
                   int8_flag=any(f in flags for f in INT8_FLAGS))


# ---- the timed probe -----------------------------------------------------------------------


def measure_rates(device: str = "cpu", n: int = PROBE_SIZE,
                  min_seconds: float = 0.1) -> dict[str, float]:
    """fp32, bf16 and int8 matmul rates (GFLOP/s; GOP/s for int8) at n x n x n on `device`."""
    dev = torch.device(device)
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(dev)
    b = torch.randn(n, n, generator=gen).to(dev)
    ops: dict[str, Callable[[], Any]] = {
        "fp32": lambda: a @ b,
        "bf16": functools.partial(torch.mm, a.bfloat16(), b.bfloat16()),
        "int8": functools.partial(torch._int_mm, (a * 10).to(torch.int8),
                                  (b * 10).to(torch.int8)),
    }
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    rates = {}
    for name, op in ops.items():
        op()  # warm-up: first-call allocation and kernel selection
        sync()
        best, spent = float("inf"), 0.0
        while spent < min_seconds:
            t0 = time.perf_counter()
            op()
            sync()
            dt = time.perf_counter() - t0
            best, spent = min(best, dt), spent + dt
        rates[name] = round(2 * n**3 / best / 1e9, 2)
    return rates


def cache_dir() -> Path:
    """difflab's folder in the user's cache ($XDG_CACHE_HOME or ~/.cache)."""
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "difflab"


def _probe_key(facts: Machine) -> str:
    ident = [PROBE_VERSION, facts.device, facts.name, cpu_id(), facts.capability,
             list(facts.flags), facts.threads, torch.__version__]
    return hashlib.sha256(json.dumps(ident).encode()).hexdigest()[:16]


def _cached_rates(facts: Machine, reprobe: bool = False) -> dict[str, float]:
    """The probe's rates for this machine, measured once (or again with `reprobe`) and kept in
    the cache folder."""
    path = cache_dir() / f"machine-{_probe_key(facts)}.json"
    try:
        if not reprobe:
            return json.loads(path.read_text())["rates"]
    except (OSError, ValueError, KeyError):
        pass
    rates = measure_rates(facts.device)
    try:
        from difflab.io import write_json

        write_json(path, {"rates": rates, **facts.record(),
                          "measured": datetime.datetime.now().isoformat(timespec="seconds")})
    except OSError:  # a read-only home still gets the verdict, just not cached
        pass
    return rates


@functools.cache
def machine(device: str = "cpu") -> Machine:
    """This process's machine for `device` ("cpu" or "cuda"), its rates probed once."""
    if device not in ("cpu", "cuda"):
        raise ConfigError(f"unknown device {device!r}; valid: cpu, cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' asked for but torch sees no GPU")
    facts = _facts(device)
    return Machine(**{**asdict(facts), "flags": facts.flags, "rates": _cached_rates(facts)})


# ---- choices -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Precision:
    """A resolved precision: the name asked for, the one used, and why."""

    requested: str
    name: str  # fp32, bf16 or fp16
    reason: str

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[self.name]

    def autocast(self, device: str | torch.device) -> contextlib.AbstractContextManager:
        """The autocast context of this precision on `device` (a no-op one for fp32)."""
        dtype = self.autocast_dtype
        return (torch.autocast(torch.device(device).type, dtype=dtype) if dtype is not None
                else contextlib.nullcontext())


_warned: set[str] = set()


def resolve_precision(requested: str, device: str | torch.device = "cpu",
                      facts: Machine | None = None) -> Precision:
    """`auto` -> bf16 where `device` computes it natively, else fp32; an explicit value is kept
    (fp16 is CUDA-only) with one warning line when it will run through a slow fallback."""
    if requested not in PRECISIONS:
        raise ConfigError(f"unknown precision {requested!r}; valid: {', '.join(PRECISIONS)}")
    dev = torch.device(device).type
    m = facts or machine(dev)
    where = f"{m.name} ({m.capability})"
    if requested == "auto":
        if m.native_bf16:
            return Precision("auto", "bf16", f"{where} computes bf16 natively")
        return Precision("auto", "fp32", f"{where} has no native bf16")
    if requested == "fp16" and dev != "cuda":
        raise ConfigError("precision 'fp16' is CUDA-only; on a CPU use 'auto', 'bf16' or 'fp32'")
    if requested == "bf16" and not m.native_bf16:
        slow = ""
        if m.rates.get("bf16") and m.rates.get("fp32"):
            slow = f", about {m.rates['fp32'] / m.rates['bf16']:.0f}x slower than fp32"
        msg = (f"warning: bf16 asked for, but {where} has no native bf16: it runs through a "
               f"slow fallback{slow}; use precision 'auto' or 'fp32'")
        if msg not in _warned:
            _warned.add(msg)
            print(msg, file=sys.stderr)
        return Precision("bf16", "bf16", f"asked for; {where} has no native bf16")
    return Precision(requested, requested, "asked for")


def int8_kernels(device: str | torch.device = "cpu", facts: Machine | None = None) -> str:
    """'' when real int8 kernels are fast on `device`, else the one-line reason they are not."""
    dev = torch.device(device).type
    m = facts or machine(dev)
    if m.fast_int8:
        return ""
    rates = ""
    if m.rates.get("int8") and m.rates.get("fp32"):
        rates = (f": int8 GEMM {m.rates['int8']:.1f} GOP/s against fp32 "
                 f"{m.rates['fp32']:.1f} GFLOP/s")
    need = "VNNI/AMX" if dev == "cpu" else "compute capability 7.5+"
    return f"{m.name} ({m.capability}) has no fast int8 kernels (needs {need}){rates}"


def run_record(precision: Precision | None = None, device: str = "cpu") -> dict[str, Any]:
    """The machine block of a result file: the machine, threads, precision used and the date."""
    m = machine(device)
    out = m.record()
    out["threads"] = torch.get_num_threads()
    out["probe_rates"] = dict(m.rates)  # GFLOP/s (GOP/s for int8), the cached probe
    if precision is not None:
        out["precision"] = precision.name
        out["precision_reason"] = precision.reason
    else:
        out["auto_precision"] = resolve_precision("auto", device).name
    out["date"] = datetime.datetime.now().isoformat(timespec="seconds")
    return out


def same_machine(a: dict[str, Any], b: dict[str, Any]) -> str:
    """'' when two result files' machine records describe the same machine and settings,
    else what differs (tools that compute ratios across files refuse such pairs)."""
    keys = ("device", "cpu", "name", "capability", "threads", "torch")
    diff = [f"{k}: {a.get(k)!r} vs {b.get(k)!r}" for k in keys if a.get(k) != b.get(k)]
    return "; ".join(diff)


def doctor_report(reprobe: bool = False) -> str:
    """What `difflab doctor` prints: versions, device, CPU, threads, measured matmul rates and
    the precision and int8 choices with their reasons; `reprobe` replaces the cached probe."""
    from difflab import __version__

    gpu = torch.cuda.is_available()
    device = "cuda" if gpu else "cpu"
    if reprobe:
        machine.cache_clear()
        _cached_rates(_facts(device), reprobe=True)
    m = machine(device)
    fresh = measure_rates(device)
    cpu = machine("cpu")
    flags = ", ".join(cpu.flags) or f"none of {', '.join(BF16_FLAGS + INT8_FLAGS)}"
    lines = [
        f"difflab     {__version__}, torch {torch.__version__}, Python "
        f"{platform.python_version()}, {platform.platform()}",
        f"device      {device}" + (f": {m.name} ({m.capability})" if gpu else
                                   " (no GPU visible to torch)"),
        f"cpu         {cpu.name}, torch capability {cpu.capability}, flags: {flags}",
        f"threads     {torch.get_num_threads()} used; {available_cores()} physical cores "
        f"available to this process, {os.cpu_count()} logical CPUs in the machine",
        f"cpu id      {cpu_id()}",
        f"matmul      fp32 {fresh['fp32']:.1f} GFLOP/s, bf16 {fresh['bf16']:.1f} GFLOP/s, "
        f"int8 {fresh['int8']:.1f} GOP/s ({PROBE_SIZE}^3 on {device}, measured now)",
        f"probe       fp32 {m.rates['fp32']:.1f}, bf16 {m.rates['bf16']:.1f}, int8 "
        f"{m.rates['int8']:.1f} (cached: what the choices below use; measured on an idle "
        "machine it should match the line above - `difflab doctor --reprobe` measures again)",
    ]
    p = resolve_precision("auto", device, m)
    lines.append(f"precision   auto -> {p.name}: {p.reason}")
    slow = int8_kernels(device, m)
    lines.append("int8        " + ("real kernels (fast here)" if not slow else
                                   f"simulated: {slow}"))
    lines.append(f"cache       {cache_dir()} (the probe's verdict, per machine)")
    return "\n".join(lines)
