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


def train_autoencoder_folder(config: str, override: list[str] | None, out: str) -> Path:
    """Train the KL autoencoder a TOML config describes (AutoencoderTrainConfig fields) and
    write it as an autoencoder folder `out` (weights + difflab.json with PSNR and scale)."""
    from difflab.config import load_toml, parse_override, replace_path, to_dict
    from difflab.eval.provenance import provenance
    from difflab.models.autoencoder import AutoencoderTrainConfig, fit_autoencoder
    from difflab.runtime.latent import write_autoencoder

    cfg = load_toml(AutoencoderTrainConfig, config)
    for text in override or []:
        key, value = parse_override(text)
        try:
            cfg = replace_path(cfg, key, value)
        except ConfigError as e:
            raise ConfigError(f"override {key}={value!r}: {e}") from None
    if cfg.out:
        raise ConfigError(f"{config}: out = {cfg.out!r}; train-ae writes the folder --out")
    target = Path(out)  # refuse a used --out before training, not after (new_folder's rule)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ConfigError(f"{out} exists and is not an empty folder; choose a new --out")
    model, metrics = fit_autoencoder(cfg, log=typer.echo)
    record = provenance("train", config=to_dict(cfg))
    return write_autoencoder(model, out, to_dict(cfg), metrics, record)


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


def train_ae_command(
    config: str = typer.Argument(..., help="a TOML autoencoder config, e.g. "
                                 "configs/autoencoders/shapes64.toml"),
    out: str = typer.Option(..., "--out", help="the autoencoder folder to write (new)"),
    override: list[str] = typer.Option(None, "--override", "-o",
                                       help="key=value, e.g. steps=100 (repeatable)"),
) -> None:
    """Train a latent-diffusion autoencoder: `difflab train-ae CONFIG --out FOLDER`."""
    folder = train_autoencoder_folder(config, override or [], out)
    typer.echo(f"autoencoder folder: {folder}")


if __name__ == "__main__":
    app()
