"""The `difflab bench` command: run a grid of configurations on a checkpoint and report."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import typer

from difflab.config import ConfigError, MissingFileError
from difflab.eval.bench import BenchResult, load_grid, run_bench

# A point's `sample = {...}` table holds any further `difflab.runtime.SampleConfig` field
# (precision, negative_prompt, sampler_options, schedule_options, guidance_interval, ...).
SAMPLE_TABLE = "sample"
# A point's `accel = {method = "...", ...options}` table: a `difflab.accel` hook on the network
# for that point's generation only.
ACCEL_TABLE = "accel"
QUANT_TABLE = "quant"  # {recipe = "w8a8_real", calib_steps = 10}: quantized copy of the net
# A point's `compile = {...}` table: torch.compile with inductor freezing of that point's network
# (after quantization), keyword arguments passed to torch.compile (e.g. {dynamic = false}).
COMPILE_TABLE = "compile"


TABLES = (SAMPLE_TABLE, ACCEL_TABLE, QUANT_TABLE, COMPILE_TABLE)


def accel_of(point: Mapping[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """(method, options) of a point's accel table, validated; None without one."""
    table = point.get(ACCEL_TABLE)
    if table is None:
        return None
    from difflab.accel import accel_config

    options = dict(table)
    if "method" not in options:
        raise ConfigError(f"point {point['name']!r}: the accel table needs a method")
    method = options.pop("method")
    accel_config(method, options)  # unknown method or option: raise naming the valid ones
    return method, options


def checkpoint_identity(path: str | Path) -> str:
    """sha256 over a checkpoint's bytes (a file, or every file of a folder with its name)."""
    p = Path(path)
    if not p.exists():
        raise MissingFileError(f"checkpoint not found: {p}")
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    h = hashlib.sha256()
    for f in files:
        h.update(str(f.relative_to(p) if p.is_dir() else f.name).encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def sample_config_of(point: Mapping[str, Any], batch_size: int) -> Any:
    """The pipeline's SampleConfig for a bench point (`cfg_scale` is the pipeline's `cfg`)."""
    from difflab.runtime import sample_config

    other = [k for k, v in point.items()
             if isinstance(v, Mapping) and k not in TABLES]
    if other:
        raise ConfigError(
            f"point {point['name']!r}: the pipeline adapter does not apply [{other[0]}] yet; "
            f"valid tables: {SAMPLE_TABLE} (SampleConfig fields), {ACCEL_TABLE}, {QUANT_TABLE}, "
            f"{COMPILE_TABLE}"
        )
    renames = {"sampler": "sampler", "steps": "steps", "cfg_scale": "cfg", "schedule": "schedule"}
    data = {new: point[old] for old, new in renames.items() if old in point}
    data.update(point.get(SAMPLE_TABLE, {}))
    data["batch_size"] = max(1, batch_size)  # the bench batches; the pipeline must not re-split
    return sample_config(data)


class PipelineTarget:
    """BenchTarget over a `difflab.runtime.Pipeline` (the only code that knows its API)."""

    def __init__(self, pipe: Any, identity: str) -> None:
        self.pipe = pipe
        self.identity = identity  # sha256 of the checkpoint's bytes
        self.source = getattr(pipe, "source", "")  # where it was loaded from
        self.config = getattr(pipe, "config", {})  # the stored config that made it
        self._networks: dict[str, torch.nn.Module] = {}  # point name -> quantized/compiled net

    def network(self, point: Mapping[str, Any]) -> torch.nn.Module:
        """The point's network: the float one, or a quantized copy made (and calibrated over
        sampling trajectories) once per point and kept for the timing rounds; compiled when the
        point has a compile table."""
        name, quant, options = point["name"], point.get(QUANT_TABLE), point.get(COMPILE_TABLE)
        if quant is None and options is None:
            return self.pipe.net
        if name not in self._networks:
            net = self.pipe.net if quant is None else quantized_copy(self.pipe, dict(quant))
            if options is not None:
                if ACCEL_TABLE in point:
                    raise ConfigError(f"point {name!r}: accel hooks run in Python around each "
                                      "block and cannot be combined with compile")
                from difflab.quant.kernels import compile_for_inference

                net = compile_for_inference(net, **dict(options))
            self._networks[name] = net
        return self._networks[name]

    def generate(self, point: Mapping[str, Any], prompts: Sequence[str],
                 seeds: Sequence[int]) -> np.ndarray:
        config = sample_config_of(point, len(prompts))
        accel = accel_of(point)
        original, self.pipe.net = self.pipe.net, self.network(point)
        try:
            if accel is None:
                return self.pipe.generate(list(prompts), list(seeds), config)
            from difflab.accel import apply_accel

            with apply_accel(self.pipe.net, *accel):  # removed again even if generation fails
                return self.pipe.generate(list(prompts), list(seeds), config)
        finally:
            self.pipe.net = original


def quantized_copy(pipe: Any, table: dict[str, Any]) -> torch.nn.Module:
    """A deep copy of the pipeline's network quantized by `table["recipe"]`, calibrated by
    sampling with `calib_steps` Euler steps; any other key of the table overrides that
    `QuantConfig` field of the recipe (e.g. `timestep_aware = false`)."""
    from difflab.runtime.quantized import quantized_copy as copy_quantized

    overrides = check_quant_table(table)
    return copy_quantized(pipe, table["recipe"], calib_steps=int(table.get("calib_steps", 10)),
                          overrides=overrides)


def check_quant_table(table: Mapping[str, Any]) -> dict[str, Any]:
    """Check a point's quant table (a known recipe, QuantConfig fields, calib_steps) before any
    model work; returns the QuantConfig field overrides."""
    import dataclasses

    from difflab.limits import check_int
    from difflab.quant.config import QUANTIZERS, QuantConfig

    if "recipe" not in table:
        raise ConfigError(f"[quant] needs a recipe (one of {', '.join(QUANTIZERS.names())}); "
                          f"got {sorted(table)}")
    QUANTIZERS.get(table["recipe"])
    check_int("[quant] calib_steps", table.get("calib_steps", 10), 1)
    overrides = {k: v for k, v in table.items() if k not in ("recipe", "calib_steps")}
    unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(QuantConfig)})
    if unknown:
        raise ConfigError(f"[quant] has unknown QuantConfig fields {unknown}")
    return overrides


def pipeline_target(checkpoint: str) -> PipelineTarget:
    """Load `checkpoint` with `difflab.runtime.load` and adapt it for the bench."""
    from difflab.runtime import load

    pipe = load(checkpoint)
    # Hash the checkpoint actually loaded (a run folder resolves to its latest checkpoint).
    source = getattr(pipe, "source", "") or checkpoint
    return PipelineTarget(pipe, checkpoint_identity(source))


def bench(
    checkpoint: Annotated[str, typer.Argument(help="checkpoint file or folder")],
    grid: Annotated[str, typer.Option("--grid", help="grid TOML: points, baseline, reference")],
    out: Annotated[str, typer.Option("--out", help="output folder for the report")],
    cache_dir: Annotated[str | None, typer.Option("--cache-dir", help="reference cache")] = None,
) -> BenchResult:
    """Bench every configuration of GRID on CHECKPOINT: quality vs cost, one process."""
    parsed = load_grid(grid)  # check the grid before spending time on the model
    for point in parsed.points + ((parsed.reference,) if parsed.reference else ()):
        sample_config_of(point, parsed.settings.batch_size)  # every point valid, or stop now
        accel_of(point)
        if point.get(QUANT_TABLE) is not None:
            check_quant_table(point[QUANT_TABLE])
    for name, folder in (("--out", out), ("--cache-dir", cache_dir)):
        if folder is not None and (not folder.strip() or Path(folder).is_file()):
            raise ConfigError(f"{name} = {folder!r} must name a folder")
    target = pipeline_target(checkpoint)
    result = run_bench(target, parsed, out, cache_dir)
    typer.echo(Path(result.files["table"]).read_text())
    typer.echo(f"wrote {', '.join(sorted(result.files.values()))}")
    return result
