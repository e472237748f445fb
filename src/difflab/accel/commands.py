"""`difflab accel ...` commands: list the methods and fit TeaCache's rescaling polynomial."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import typer

from difflab.accel.api import ACCELERATORS
from difflab.accel.block_cache import calibrate_teacache
from difflab.config import ConfigError, MissingFileError
from difflab.io import write_json
from difflab.limits import check_images, check_int

accel_app = typer.Typer(help="Training-free acceleration hooks: list them, calibrate TeaCache.")


@accel_app.command("list")
def list_methods() -> None:
    """Print each method with its options and their defaults."""
    for name in ACCELERATORS:
        cls = ACCELERATORS.get(name).config_class
        opts = ", ".join(f"{f.name}={f.default!r}" for f in dataclasses.fields(cls))
        typer.echo(f"{name}: {opts}")


@accel_app.command("calibrate")
def calibrate(
    checkpoint: Annotated[str, typer.Argument(help="checkpoint file or folder")],
    out: Annotated[str, typer.Option("--out", help="JSON file for the coefficients")],
    suite: Annotated[str, typer.Option(help="prompt suite")] = "single",
    images: Annotated[int, typer.Option(help="images (prompts x seed 0)")] = 8,
    steps: Annotated[int, typer.Option(help="sampling steps per image")] = 20,
    sampler: Annotated[str, typer.Option(help="sampler name")] = "euler",
    cfg: Annotated[float, typer.Option(help="guidance scale")] = 1.0,
    head_blocks: Annotated[int, typer.Option(help="blocks that give the signal")] = 1,
    degree: Annotated[int, typer.Option(help="polynomial degree (TeaCache: 4 over many "
                                              "prompts; 1 is robust with few)")] = 1,
) -> tuple[float, ...]:
    """Fit TeaCache's polynomial for CHECKPOINT over a few sampling runs and write it to OUT."""
    from difflab.data.suites import load_suite
    from difflab.runtime import SampleConfig, load

    config = SampleConfig(sampler=sampler, steps=steps, cfg=cfg, precision="fp32")
    check_images("--images", images)
    check_int("--head-blocks", head_blocks, 1)
    check_int("--degree", degree, 1, 8)
    prompts = [p.text for p in load_suite(suite)][:images]
    if not out.strip() or Path(out).is_dir():
        raise ConfigError(f"--out = {out!r} must name a JSON file")
    if not Path(checkpoint).exists():
        raise MissingFileError(f"checkpoint not found: {checkpoint}")
    pipe = load(checkpoint)
    coeffs = calibrate_teacache(
        pipe.net, lambda: pipe.generate(prompts, [0] * len(prompts), config),
        head_blocks=head_blocks, degree=degree)
    write_json(out, {"checkpoint": pipe.source, "head_blocks": head_blocks, "steps": steps,
                     "sampler": sampler, "cfg": cfg, "coefficients": list(coeffs)})
    spec = ",".join(f"{c:.6g}" for c in coeffs)
    typer.echo(f"coefficients (highest power first): [{spec}]")
    typer.echo(f"use: --accel teacache:coefficients=[{spec}],head_blocks={head_blocks}")
    return coeffs
