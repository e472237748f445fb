"""`difflab data ...` commands: preview a data world as a labelled grid."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import typer

from difflab.data.grid import make_grid, to_uint8
from difflab.io import atomic_write
from difflab.limits import check_images, check_int, check_seed, image_format
from difflab.registry import Registry

data_app = typer.Typer(no_args_is_help=True, help="Inspect the built-in data worlds.")

# name -> fn(n, size, seed) -> (uint8 images (n, H, W, 3), captions)
PREVIEW_WORLDS: Registry[Callable[[int, int, int], tuple[np.ndarray, list[str]]]] = Registry(
    "data world"
)


@PREVIEW_WORLDS.register("shapes")
def _preview_shapes(n: int, size: int, seed: int) -> tuple[np.ndarray, list[str]]:
    from difflab.data.shapes_dataset import ShapesConfig, ShapesDataset

    ds = ShapesDataset(ShapesConfig(size=size, seed=seed, length=max(n, 1)))
    samples = [ds.sample(i) for i in range(n)]
    return np.stack([s.image for s in samples]), [s.caption for s in samples]


@PREVIEW_WORLDS.register("digits")
def _preview_digits(n: int, size: int, seed: int) -> tuple[np.ndarray, list[str]]:
    import torch

    from difflab.data.digits import DigitsDataset

    ds = DigitsDataset(size=size)
    idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[:n].tolist()
    items = [ds[i] for i in idx]
    return to_uint8(torch.stack([it["image"] for it in items])), [it["caption"] for it in items]


def preview_grid(world: str, n: int, size: int, seed: int, scale: int = 4, ncol: int = 8):
    """A labelled grid (PIL image) of `n` samples of `world` at `size` pixels."""
    check_images("--n", n)
    check_seed("--seed", seed, n)
    check_int("--scale", scale, 1, 16)
    check_int("--ncol", ncol, 1)
    images, captions = PREVIEW_WORLDS.get(world)(n, size, seed)
    return make_grid(images, captions, ncol=ncol, scale=scale)


@data_app.callback()
def _data() -> None:
    """Inspect the built-in data worlds."""


@data_app.command()
def preview(
    world: str = typer.Option("shapes", help="shapes or digits"),
    n: int = typer.Option(64, help="number of samples"),
    out: Path = typer.Option(Path("grid.png"), help="PNG file to write"),
    size: int = typer.Option(32, help="image side: shapes 16/32/64/128, digits 8/16/32"),
    seed: int = typer.Option(0, help="seed of the samples"),
    scale: int = typer.Option(4, help="upscaling factor of each cell"),
    ncol: int = typer.Option(8, help="cells per row"),
) -> None:
    """Write a labelled grid of samples (each image upscaled, its caption beneath)."""
    fmt = image_format("--out", out)
    PREVIEW_WORLDS.get(world)  # an unknown world fails before any rendering
    grid = preview_grid(world, n, size, seed, scale=scale, ncol=ncol)
    atomic_write(out, lambda p: grid.save(p, format=fmt))
    typer.echo(f"wrote {out} ({grid.width}x{grid.height}, {n} {world} samples at {size}px)")


if __name__ == "__main__":  # `python -m difflab.data.commands preview ...` before CLI wiring
    data_app()
