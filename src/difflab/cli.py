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
    from difflab.data.commands import data_app

    app.add_typer(data_app, name="data", help="Data sets: preview the shapes world and digits.")


@app.command()
def version() -> None:
    """Print difflab's version."""
    from difflab import __version__

    typer.echo(__version__)


@app.callback()
def _root() -> None:
    """difflab: train, sample, accelerate, quantize and measure diffusion models."""


_add_subcommands()


def main() -> None:
    try:
        app()
    except USER_ERRORS as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
