"""The bench: every configuration of a grid generated on the same prompts and seeds, scored for
quality and timed round-robin with the baseline in one process."""

from __future__ import annotations

import hashlib
import json
import os
import platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from tqdm import tqdm

from difflab.config import ConfigError, from_dict, read_toml, to_dict
from difflab.eval.cost import count_calls, count_flops, peak_memory, time_interleaved, weight_bytes
from difflab.eval.frontier import pareto_front
from difflab.eval.metrics import METRICS
from difflab.eval.stats import speedup_interval, speedup_verdict
from difflab.io import load_tensors, save_tensors
from difflab.limits import check_images, check_int, check_seed

CACHE_VERSION = 1  # bump when the meaning of cached reference images changes


@runtime_checkable
class BenchTarget(Protocol):
    """What the bench measures: a model that turns (point, prompts, seeds) into images.

    `identity`: a stable id of the model's weights and code (part of the reference-cache key).
    `generate`: one uint8 image (N, H, W, 3) per (prompts[i], seeds[i]) pair; image i must depend
    only on its own prompt, seed and the point (not on the rest of the batch).
    `network`: the module whose forward calls are the point's network evaluations (NFE) and
    whose parameters and buffers are its weights (e.g. the quantized copy for a quant point).
    """

    identity: str

    def generate(
        self, point: Mapping[str, Any], prompts: Sequence[str], seeds: Sequence[int]
    ) -> np.ndarray: ...

    def network(self, point: Mapping[str, Any]) -> torch.nn.Module: ...


# --- the grid file -----------------------------------------------------------------------------

# Scalar settings a point may have; any table-valued key (accel, quant, ...) passes through.
# `timed = false` leaves a point out of the timing rounds (e.g. a simulated quantization, whose
# time is the cost of emulation, not of the method): it gets no time columns and no frontier
# place on a time axis.
POINT_KEYS: dict[str, type] = {
    "name": str, "sampler": str, "steps": int, "cfg_scale": float, "schedule": str,
    "timed": bool,
}
# Cost columns the frontier may use, all lower-is-better.
COST_KEYS = ("time_ratio", "latency_s", "flops_per_image", "nfe", "peak_memory_bytes",
             "weight_bytes")


@dataclass(frozen=True)
class BenchSettings:
    """Grid-wide settings: which prompts and seeds, the baseline, timing and scoring."""

    baseline: str
    suite: str = "single"
    split: str = "dev"  # dev: choose settings here; test: report only (data.suites.SPLITS)
    max_prompts: int = 0  # 0: every prompt of the suite
    seeds_per_prompt: int = 2
    seed_offset: int = 0  # first image index k of each prompt (`data.suites.suite_seeds`)
    batch_size: int = 8
    timing_repeats: int = 5
    timing_warmup: int = 1
    metrics: tuple[str, ...] = ("accuracy", "fd", "kid", "precision_recall", "psnr", "ssim")
    frontier_quality: str = "accuracy"
    frontier_cost: str = "time_ratio"
    strip_images: int = 8  # images per configuration in index.html
    cache_dir: str = ""  # "": $DIFFLAB_CACHE/bench or ~/.cache/difflab/bench


@dataclass(frozen=True)
class Grid:
    """A parsed grid file: settings, the configurations ("points") and the reference point."""

    settings: BenchSettings
    points: tuple[dict[str, Any], ...]
    reference: dict[str, Any] | None = None

    def point(self, name: str) -> dict[str, Any]:
        for p in self.points:
            if p["name"] == name:
                return p
        valid = ", ".join(p["name"] for p in self.points)
        raise ConfigError(f"unknown point {name!r}; valid: {valid}")

    def to_dict(self) -> dict[str, Any]:
        return {**to_dict(self.settings), "reference": self.reference, "points": list(self.points)}


def parse_point(data: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Validate one point table: known scalar keys typed, table-valued keys passed through."""
    if not isinstance(data, Mapping) or not isinstance(data.get("name"), str):
        raise ConfigError(f"{where}: every point needs a name, got {data!r}")
    point: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            point[key] = dict(value)  # an open section (accel, quant, ...): the target's business
            continue
        tp = POINT_KEYS.get(key)
        if tp is None:
            raise ConfigError(
                f"{where}: unknown key {key!r}; valid: {', '.join(POINT_KEYS)} or any table "
                "(e.g. accel = {...}, quant = {...})"
            )
        if tp is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, tp) or (isinstance(value, bool) and tp is not bool):
            raise ConfigError(f"{where}.{key}: expected {tp.__name__}, got {value!r}")
        point[key] = value
    return point


def parse_grid(data: Mapping[str, Any]) -> Grid:
    """Build a Grid from a dict (a parsed TOML file); user mistakes raise ConfigError."""
    data = dict(data)
    raw_points = data.pop("points", None)
    raw_reference = data.pop("reference", None)
    if not raw_points:
        raise ConfigError("grid has no [[points]]; add at least the baseline point")
    settings = from_dict(BenchSettings, data)
    points = tuple(parse_point(p, f"points[{i}]") for i, p in enumerate(raw_points))
    names = [p["name"] for p in points]
    if len(set(names)) != len(names):
        raise ConfigError(f"point names must be unique, got {names}")
    reference = parse_point(raw_reference, "reference") if raw_reference is not None else None
    grid = Grid(settings, points, reference)
    if not is_timed(grid.point(settings.baseline)):  # grid.point raises naming the valid ones
        raise ConfigError(f"the baseline {settings.baseline!r} is what times are relative to; "
                          "it cannot be timed = false")
    for name in settings.metrics:
        if METRICS.get(name).inputs == "paired" and reference is None:
            raise ConfigError(f"metric {name!r} compares to a [reference] point; the grid has none")
    if not any(METRICS.get(m).produces(settings.frontier_quality) for m in settings.metrics):
        keys = [k for m in settings.metrics for k in METRICS.get(m).keys]
        raise ConfigError(
            f"frontier_quality {settings.frontier_quality!r} is not computed by the grid's "
            f"metrics; valid: {', '.join(keys)}"
        )
    if settings.frontier_cost not in COST_KEYS:
        valid = ", ".join(COST_KEYS)
        raise ConfigError(f"frontier_cost {settings.frontier_cost!r}; valid: {valid}")
    for key in ("seeds_per_prompt", "batch_size", "timing_repeats"):
        if getattr(settings, key) < 1:
            raise ConfigError(f"{key} must be >= 1, got {getattr(settings, key)}")
    from difflab.data.suites import check_split

    check_split(settings.split, settings.suite)
    _check_sizes(settings, len(points) + (reference is not None))
    return grid


def _check_sizes(s: BenchSettings, n_points: int) -> None:
    """Counts and seeds within range, and the images of the run within the max_images limit."""
    from difflab.data.shapes import load_suite

    for key in ("max_prompts", "timing_warmup", "strip_images"):
        check_int(key, getattr(s, key), 0)
    prompts = len(load_suite(s.suite))  # an unknown suite raises naming the valid ones
    if s.max_prompts:
        prompts = min(prompts, s.max_prompts)
    check_seed("seed_offset", s.seed_offset, s.seeds_per_prompt)
    check_images("points x prompts x seeds_per_prompt (images)",
                 n_points * prompts * s.seeds_per_prompt)


def is_timed(point: Mapping[str, Any]) -> bool:
    """Whether a point takes part in the timing rounds."""
    return bool(point.get("timed", True))


def load_grid(path: str | Path) -> Grid:
    """Read and validate a grid TOML file."""
    return parse_grid(read_toml(path, "grid file"))


# --- the runner --------------------------------------------------------------------------------


@dataclass
class BenchResult:
    """Every number of a bench run, the configuration that made it, and where it was written."""

    grid: dict[str, Any]
    machine: dict[str, Any]
    points: list[dict[str, Any]]  # name, config, quality{}, cost{}, on_frontier
    directions: dict[str, bool]  # metric or cost key -> higher is better
    reference: dict[str, Any] | None
    prompts: list[str] = field(default_factory=list)  # one per image, with seeds alongside
    seeds: list[int] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)
    categories: list[str] = field(default_factory=list)  # each image's prompt category
    fd_floor: float | None = None  # FD between two real sets of the same specs and count
    provenance: dict[str, Any] = field(default_factory=dict)

    def point(self, name: str) -> dict[str, Any]:
        return next(p for p in self.points if p["name"] == name)

    def to_dict(self) -> dict[str, Any]:
        return {"provenance": self.provenance, "grid": self.grid, "machine": self.machine,
                "points": self.points, "directions": self.directions,
                "reference": self.reference, "fd_floor": self.fd_floor,
                "prompts": self.prompts, "seeds": self.seeds, "categories": self.categories}


def machine_info() -> dict[str, Any]:
    """Where the numbers were measured: the machine record (CPU model, capability, threads,
    torch version, date) plus numpy, platform and core count."""
    from difflab.runtime.machine import run_record

    device = "cuda" if torch.cuda.is_available() else "cpu"
    return {**run_record(device=device), "numpy": np.__version__,
            "platform": platform.platform(), "cpu_count": os.cpu_count()}


def prompt_set(settings: BenchSettings) -> tuple[list[Any], list[str], list[int]]:
    """The suite's specs, expanded to one (spec, prompt, seed) triple per generated image."""
    from difflab.data.suites import expand_suite, load_suite

    specs = load_suite(settings.suite)
    if settings.max_prompts > 0:
        specs = specs[: settings.max_prompts]
    specs, seeds = expand_suite(specs, settings.seeds_per_prompt, first=settings.seed_offset,
                                split=settings.split)
    return specs, [s.text for s in specs], seeds


def generate_all(
    target: BenchTarget, point: Mapping[str, Any], prompts: Sequence[str], seeds: Sequence[int],
    batch_size: int,
) -> np.ndarray:
    """All images of one point, in batches: (N, H, W, 3) uint8."""
    out = []
    for i in range(0, len(prompts), batch_size):
        images = np.asarray(target.generate(point, prompts[i : i + batch_size],
                                            seeds[i : i + batch_size]))
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"target.generate must return uint8 (N, H, W, 3), got "
                             f"{images.dtype} {images.shape} for point {point['name']!r}")
        out.append(images)
    return np.concatenate(out)


def default_cache_dir() -> Path:
    root = os.environ.get("DIFFLAB_CACHE") or Path.home() / ".cache" / "difflab"
    return Path(root) / "bench"


def reference_key(identity: str, point: Mapping[str, Any], prompts: Sequence[str],
                  seeds: Sequence[int]) -> str:
    """Hash of everything a reference image depends on."""
    blob = json.dumps({"v": CACHE_VERSION, "target": identity, "point": point,
                       "prompts": list(prompts), "seeds": list(seeds)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def reference_images(
    target: BenchTarget, point: Mapping[str, Any], prompts: Sequence[str], seeds: Sequence[int],
    batch_size: int, cache_dir: Path,
) -> tuple[np.ndarray, dict[str, Any]]:
    """The reference point's images, generated once and cached under a hash of their inputs."""
    key = reference_key(target.identity, point, prompts, seeds)
    path = cache_dir / f"reference-{key[:24]}.safetensors"
    info = {"name": point["name"], "config": dict(point), "cache_file": str(path), "key": key}
    if path.is_file():
        return load_tensors(path)["images"].numpy(), {**info, "cached": True}
    images = generate_all(target, point, prompts, seeds, batch_size)
    save_tensors(path, {"images": torch.from_numpy(images)}, meta={"key": key})
    return images, {**info, "cached": False}


def score_quality(
    metrics: Sequence[str], images: np.ndarray, specs: list[Any], feats: np.ndarray | None,
    real_feats: np.ndarray | None, reference: np.ndarray | None,
) -> tuple[dict[str, float], dict[str, bool]]:
    """Every requested metric of one point's images, and each value's direction."""
    inputs = {"paired": (images, reference), "features": (feats, real_feats),
              "specs": (images, specs)}
    values: dict[str, Any] = {}
    directions: dict[str, bool] = {}
    for name in metrics:
        metric = METRICS.get(name)
        out = metric.fn(*inputs[metric.inputs])
        values.update(out)
        # Per-image lists (e.g. the accuracy metric's verdicts) are details, not columns.
        directions.update({k: metric.higher_is_better for k, v in out.items()
                           if not isinstance(v, list)})
    return values, directions


def probe_cost(target: BenchTarget, point: Mapping[str, Any], prompts: Sequence[str],
               seeds: Sequence[int]) -> dict[str, Any]:
    """FLOPs and NFE for one image, peak memory for one timing batch, and weight bytes."""
    net = target.network(point)
    with count_calls(net) as calls:
        flops = count_flops(lambda: target.generate(point, prompts[:1], seeds[:1]))
    device = next(net.parameters(), torch.empty(0)).device
    memory = peak_memory(lambda: target.generate(point, prompts, seeds), device)
    return {"flops_per_image": flops, "nfe": calls.calls, "peak_memory_bytes": memory.bytes,
            "peak_memory_method": memory.method, "weight_bytes": weight_bytes(net)}


def time_points(target: BenchTarget, grid: Grid, prompts: Sequence[str],
                seeds: Sequence[int]) -> dict[str, dict[str, Any]]:
    """Round-robin timing of every timed point on one batch; speed as a ratio to the baseline."""
    s = grid.settings
    timed = [p for p in grid.points if is_timed(p)]
    with tqdm(total=len(timed) * (s.timing_repeats + s.timing_warmup), unit="run",
              desc="bench: timing") as bar:
        fns = {p["name"]: (lambda p=p: (target.generate(p, prompts, seeds), bar.update()))
               for p in timed}
        timings = time_interleaved(fns, repeats=s.timing_repeats, warmup=s.timing_warmup)
    base = timings[s.baseline]
    out = {}
    for name, t in timings.items():
        # Paired per-round ratios show how stable the ratio of medians is under load drift;
        # their median's order-statistic interval decides "faster" or "no difference".
        paired = np.asarray(t.times) / np.asarray(base.times)
        speedup = speedup_interval(t.times, base.times)
        out[name] = {
            "latency_s": t.median, "timing": t.to_dict(),
            "images_per_s": t.images_per_s(len(prompts)),
            "time_ratio": t.median / base.median, "speedup": base.median / t.median,
            "time_ratio_rounds_min": float(paired.min()),
            "time_ratio_rounds_max": float(paired.max()),
            "speedup_paired_median": speedup.median,
            "speedup_interval": [speedup.lo, speedup.hi],
            "speedup_interval_coverage": speedup.coverage,
            "speedup_verdict": speedup_verdict(speedup),
        }
    return out


def run_bench(target: BenchTarget, grid: Grid | Mapping[str, Any] | str | Path,
              out_dir: str | Path, cache_dir: str | Path | None = None) -> BenchResult:
    """Generate, score, time and report every point of `grid` on `target` into `out_dir`."""
    from difflab.data.shapes import render_specs
    from difflab.eval.report import write_report

    grid = grid if isinstance(grid, Grid) else (
        parse_grid(grid) if isinstance(grid, Mapping) else load_grid(grid))
    s = grid.settings
    specs, prompts, seeds = prompt_set(s)
    images = {p["name"]: generate_all(target, p, prompts, seeds, s.batch_size)
              for p in tqdm(grid.points, desc="bench: generating", unit="point")}
    cache = Path(cache_dir or s.cache_dir or default_cache_dir())
    ref, ref_info = (reference_images(target, grid.reference, prompts, seeds, s.batch_size, cache)
                     if grid.reference is not None else (None, None))
    real = render_specs(specs, seeds, size=images[s.baseline].shape[1])
    points, directions, floor = score_points(grid, images, specs, seeds, real, ref)
    if s.frontier_quality not in directions:  # e.g. a category the suite does not have
        valid = ", ".join(sorted(directions))
        raise ConfigError(f"frontier_quality {s.frontier_quality!r} was not measured; "
                          f"valid: {valid}")
    n = min(s.batch_size, len(prompts))
    timing = time_points(target, grid, prompts[:n], seeds[:n])
    for entry, p in zip(points, tqdm(grid.points, desc="bench: FLOPs, memory", unit="point"),
                        strict=True):
        entry["cost"] = {**timing.get(p["name"], {}),
                         **probe_cost(target, p, prompts[:n], seeds[:n])}
    directions.update({k: False for k in COST_KEYS})
    machine = machine_info()
    result = BenchResult(grid.to_dict(), machine, points, directions, ref_info, prompts, seeds,
                         categories=[sp.category for sp in specs], fd_floor=floor,
                         provenance=bench_provenance(target, s.split, machine))
    mark_frontier(result, s.frontier_quality, s.frontier_cost)
    write_report(result, Path(out_dir), images, ref, real, s.strip_images)
    return result


def score_points(
    grid: Grid, images: Mapping[str, np.ndarray], specs: list[Any], seeds: Sequence[int],
    real: np.ndarray, reference: np.ndarray | None,
) -> tuple[list[dict[str, Any]], dict[str, bool], float | None]:
    """Quality of every point (a result entry per point, with each image's verdict and the
    accuracy's Wilson interval), each metric value's direction, and the FD floor."""
    from difflab.eval.stats import wilson_interval
    from difflab.evaluate import fd_floor

    metrics = grid.settings.metrics
    feats, real_feats = features_of(metrics, images, real)
    floor = (fd_floor(real_feats, specs, list(seeds), real.shape[1])
             if "fd" in metrics and real_feats is not None else None)
    points, directions = [], {}
    for p in grid.points:
        quality, dirs = score_quality(metrics, images[p["name"]], specs, feats.get(p["name"]),
                                      real_feats, reference)
        directions.update(dirs)
        entry = {"name": p["name"], "config": p, "cost": {},
                 "quality": {k: v for k, v in quality.items() if not isinstance(v, list)}}
        if "passed" in quality:
            entry["passed"] = [int(f) for f in quality["passed"]]
            entry["accuracy_interval"] = list(wilson_interval(sum(entry["passed"]),
                                                              len(entry["passed"])))
        points.append(entry)
    return points, directions, floor


def bench_provenance(target: BenchTarget, split: str, machine: dict[str, Any]) -> dict[str, Any]:
    """The provenance block of bench.json: the target's checkpoint path, hash and config."""
    from difflab.eval.provenance import provenance

    return provenance(split, str(getattr(target, "source", "") or ""), target.identity,
                      dict(getattr(target, "config", {}) or {}), machine=machine)


def features_of(metrics: Sequence[str], images: Mapping[str, np.ndarray],
                real: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Feature arrays (N, D) for every point and the real set, if any metric needs them."""
    if not any(METRICS.get(m).inputs == "features" for m in metrics):
        return {}, None
    from difflab.eval.features import extract_features

    return {k: extract_features(v) for k, v in images.items()}, extract_features(real)


def mark_frontier(result: BenchResult, quality_key: str, cost_key: str) -> None:
    """Set each point's `on_frontier` for (quality_key, cost_key); a point without that cost (an
    untimed point on a time axis) is not on the frontier."""
    ranked = [p for p in result.points if p["cost"].get(cost_key) is not None]
    values = [[p["quality"][quality_key], p["cost"][cost_key]] for p in ranked]
    mask = pareto_front(np.asarray(values).reshape(len(ranked), 2),
                        [result.directions[quality_key], False])
    for p in result.points:
        p["on_frontier"] = False
    for p, on in zip(ranked, mask, strict=True):
        p["on_frontier"] = bool(on)
    result.grid["frontier"] = {"quality": quality_key, "cost": cost_key}
