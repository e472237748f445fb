"""The `difflab train` command: load a TOML config, apply overrides, train (or resume)."""

from __future__ import annotations

from pathlib import Path

import typer

from difflab.config import ConfigError
from difflab.train.config import apply_override, load_train_config


def train(config: str, override: list[str] | None = None, resume: bool = False,
          out: str | None = None) -> Path:
    """Train the run `config` describes; `override` items are `key=value` (dotted keys)."""
    from difflab.train.parts import build_parts
    from difflab.train.trainer import run_training

    cfg = load_train_config(config, override or [])
    if out is not None:
        cfg = apply_override(cfg, "run.out_dir", out)  # the path as given, never parsed as TOML
    check_run_folder(Path(cfg.run.out_dir), resume)
    return run_training(cfg, build_parts(cfg), resume=resume)


def check_run_folder(run_dir: Path, resume: bool) -> None:
    """Refuse, before building anything, a run folder that is a file, is in use by another
    process, or holds checkpoints when `resume` is off (run_training checks again)."""
    from difflab.train.checkpoint import latest_checkpoint
    from difflab.train.runlock import check_unlocked

    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"run folder {run_dir} is a file; choose another --out")
    check_unlocked(run_dir)
    latest = latest_checkpoint(run_dir) if run_dir.is_dir() else None
    if latest is not None and not resume:
        raise ConfigError(f"run folder {run_dir} already holds checkpoints ({latest.name}); "
                          "pass --resume to continue it or choose another --out")


app = typer.Typer(add_completion=False, help="Train diffusion models.")


@app.command("train")
def train_command(
    config: str = typer.Argument(..., help="a TOML training config, e.g. configs/tiny.toml"),
    override: list[str] = typer.Option(None, "--override", "-o",
                                       help="key=value, e.g. schedule.steps=100 (repeatable)"),
    resume: bool = typer.Option(False, "--resume", help="continue from the run's last checkpoint"),
    out: str = typer.Option(None, "--out", help="run folder (default: run.out_dir)"),
) -> None:
    """Train a model: `difflab train configs/tiny.toml [--override k=v ...] [--resume]`."""
    run_dir = train(config, override or [], resume, out)
    typer.echo(f"run folder: {run_dir}")


if __name__ == "__main__":
    app()
