"""The `difflab` command: a thin layer that builds configs and calls the library."""

from __future__ import annotations

import sys

import typer

from difflab.config import ConfigError
from difflab.registry import UnknownNameError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="difflab: train, sample, accelerate, quantize and measure diffusion models.",
)

# Errors a user can cause: printed as one line, no traceback, non-zero exit.
USER_ERRORS = (ConfigError, UnknownNameError, FileNotFoundError)


def _add_subcommands() -> None:
    from difflab.accel.commands import accel_app
    from difflab.data.commands import data_app
    from difflab.eval.commands import bench
    from difflab.train.commands import train_command

    app.add_typer(data_app, name="data", help="Data sets: preview the shapes world and digits.")
    app.add_typer(accel_app, name="accel", help="Training-free acceleration: list, calibrate.")
    app.command("train")(train_command)
    app.command("bench")(bench)


@app.command()
def version() -> None:
    """Print difflab's version."""
    from difflab import __version__

    typer.echo(__version__)


def _sample_config(sampler: str, steps: int, cfg: float, batch_size: int = 32,
                   precision: str = "auto", bottleneck: str = ""):
    from difflab.accel.api import parse_options
    from difflab.runtime import SampleConfig

    if bottleneck == "default":  # BottleneckConfig's own defaults
        bottleneck = "scales=[1.0,0.5,1.0]"
    stages = parse_options(bottleneck) if bottleneck not in ("", "off") else {}
    return SampleConfig(sampler=sampler, steps=steps, cfg=cfg, batch_size=batch_size,
                        precision=precision, bottleneck=stages)


@app.command()
def sample(
    checkpoint: str = typer.Argument(..., help="run, checkpoint or quantized folder (any "
                                     "artefact), or a shipped model's name"),
    prompt: list[str] = typer.Option(..., "--prompt", "-p", help="prompt (repeatable): text, a "
                                     "class name or index for a class model, '' unconditional"),
    n: int = typer.Option(8, help="images per prompt"),
    sampler: str = typer.Option("euler", help="sampler name (see `difflab samplers`)"),
    steps: int = typer.Option(20, help="sampling steps"),
    cfg: float = typer.Option(1.0, help="classifier-free guidance scale"),
    seed: int = typer.Option(0, help="seed of the first image; image i uses seed + i"),
    precision: str = typer.Option("auto", help="auto (bf16 where native, else fp32), fp32, "
                                  "bf16 or fp16 (CUDA)"),
    quant: str = typer.Option("", help="quantization recipe applied before sampling"),
    accel: str = typer.Option("", help="acceleration hook, NAME[:k=v,...]"),
    bottleneck: str = typer.Option("", help="Bottleneck Sampling: 'default' (1 -> 0.5 -> 1) "
                                   "or scales=[..],fractions=[..],shifts=[..]"),
    out: str = typer.Option("grid.png", help="output PNG grid"),
) -> None:
    """Sample a grid: `difflab sample runs/demo --prompt "a red circle" --out grid.png`."""
    from difflab.data.grid import make_grid
    from difflab.runtime import load, quantize_pipeline

    config = _sample_config(sampler, steps, cfg, precision=precision, bottleneck=bottleneck)
    pipe = load(checkpoint)
    if quant:
        handle = quantize_pipeline(pipe, quant)
        typer.echo(f"quantized {len(handle.layers)} layers with {quant} ({handle.execution})")
    for label, value in pipe.labels.items():
        typer.echo(f"{label}: {value}")
    prompts = [p for p in prompt for _ in range(n)]
    seeds = [seed + i for i in range(len(prompts))]
    if accel:
        from difflab.accel.api import apply_accel, parse_accel_spec

        with apply_accel(pipe.net, *parse_accel_spec(accel)) as handle:
            images = pipe.generate(prompts, seeds, config, progress=True)
        typer.echo(f"accel {accel}: {handle.stats}")
    else:
        images = pipe.generate(prompts, seeds, config, progress=True)
    make_grid(images, labels=prompts, ncol=n).save(out)
    typer.echo(f"wrote {out} ({len(images)} images, {config.sampler} x{config.steps}, "
               f"cfg {config.cfg})")


@app.command("eval")
def eval_command(
    checkpoint: str = typer.Argument(..., help="run, checkpoint or quantized folder"),
    suite: str = typer.Option("all", help="prompt suite: single, binding, counting, spatial, "
                              "heldout, all or reworded (test split only)"),
    seeds: int = typer.Option(1, help="images (seeds) per prompt"),
    sampler: str = typer.Option("euler", help="sampler name"),
    steps: int = typer.Option(20, help="sampling steps"),
    cfg: float = typer.Option(1.0, help="classifier-free guidance scale"),
    out: str = typer.Option("", help="optional folder for images, grid and metrics.json"),
    split: str = typer.Option("dev", help="dev (choose settings here) or test (report only)"),
) -> None:
    """Score a checkpoint on a prompt suite with the shapes evaluator."""
    from difflab.data.suites import check_split
    from difflab.evaluate import evaluate_suite, suite_provenance, write_suite_outputs
    from difflab.runtime import load

    check_split(split, suite)
    pipe = load(checkpoint)
    result = evaluate_suite(pipe, suite, _sample_config(sampler, steps, cfg), seeds,
                            split=split)
    typer.echo(result.table())
    if out:
        write_suite_outputs(result, out, suite_provenance(pipe, split))
        typer.echo(f"wrote {out}/")


@app.command()
def demo(
    config: str = typer.Option("configs/demo.toml", help="training config"),
    out: str = typer.Option("runs/demo", help="run folder"),
    override: list[str] = typer.Option([], "--override", "-o", help="key=value (repeatable)"),
    suite: str = typer.Option("all", help="prompt suite to score"),
) -> None:
    """The main job: train the flagship model, score every suite prompt, write a report."""
    from difflab.demo import run_demo

    metrics = run_demo(config, out, override, suite=suite)
    for m in (metrics, metrics["reworded"]):
        for cat, acc in m["per_category"].items():
            lo, hi = m["per_category_interval"][cat]
            typer.echo(f"{cat:<16} {100 * acc:5.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]")
    typer.echo(f"{'overall':<16} {100 * metrics['accuracy']:5.1f}%   FD {metrics['fd']:.2f} "
               f"(real-vs-real floor {metrics['fd_floor']:.2f}); test split")
    run = metrics["run"]
    typer.echo(f"train {run['train_seconds']:.0f} s, eval {run['eval_seconds']:.0f} s; "
               f"wrote {out}/report.html and {out}/metrics.json")


@app.command()
def quantize(
    checkpoint: str = typer.Argument(..., help="checkpoint or run folder"),
    out: str = typer.Option(..., help="output folder (quantized artefact: codes + scales + "
                            "difflab.json); `difflab sample OUT` loads it"),
    recipe: str = typer.Option("", help="named recipe (see `difflab quant-recipes`)"),
    config: str = typer.Option("", help="QuantConfig TOML instead of a recipe"),
    calib_steps: int = typer.Option(10, help="sampling steps of the calibration runs"),
) -> None:
    """Post-training quantization of a checkpoint, calibrated over sampling trajectories."""
    from difflab.quant.commands import format_report, quantize_checkpoint

    report = quantize_checkpoint(checkpoint, out, recipe=recipe or None, config=config or None,
                                 calib_steps=calib_steps)
    typer.echo(format_report(report))


@app.command("quant-recipes")
def quant_recipes() -> None:
    """List the named quantization recipes."""
    from difflab.quant.commands import recipes_table

    typer.echo(recipes_table())


@app.command()
def models() -> None:
    """List the model presets: parameters and forward GFLOPs per image."""
    from difflab.models import presets_table

    typer.echo(presets_table())


@app.command()
def samplers() -> None:
    """List the registered samplers and schedules."""
    from difflab.core.samplers import SAMPLERS
    from difflab.core.schedules import SCHEDULES

    typer.echo("samplers:  " + ", ".join(SAMPLERS.names()))
    typer.echo("schedules: " + ", ".join(SCHEDULES.names()))


@app.command()
def doctor(
    reprobe: bool = typer.Option(False, help="measure the cached speed probe again (run it on "
                                 "an idle machine)"),
) -> None:
    """Machine report for bug reports: device, CPU, threads, measured matmul rates, and the
    precision and int8 kernels difflab chooses here."""
    from difflab.runtime.machine import doctor_report

    typer.echo(doctor_report(reprobe))


@app.callback()
def _root() -> None:
    """difflab: train, sample, accelerate, quantize and measure diffusion models."""
    from difflab.runtime.machine import configure_threads

    configure_threads()


_add_subcommands()


def main() -> None:
    try:
        app()
    except USER_ERRORS as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
