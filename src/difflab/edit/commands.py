"""`difflab restore` and `difflab edit`: inverse problems and SDEdit on one image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import typer

from difflab.config import ConfigError
from difflab.limits import check_float, check_prompt, check_seed, image_format

EDIT_METHODS = ("sdedit:STRENGTH",)


def read_image(path: str) -> np.ndarray:
    """(H, W, 3) uint8 of an RGB image file; other modes and missing files are a ConfigError."""
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"--image {path!r} is not a file")
    try:
        with Image.open(p) as im:
            if im.mode != "RGB":
                raise ConfigError(f"--image {path!r} is {im.mode}; give an RGB image")
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError) as e:
        raise ConfigError(f"--image {path!r} cannot be read as an image: {e}") from None


def check_size(image: np.ndarray, shape: tuple[int, int, int], path: str) -> None:
    if image.shape[:2] != tuple(shape[1:]):
        raise ConfigError(f"--image {path!r} is {image.shape[1]}x{image.shape[0]}; this model "
                          f"works on {shape[2]}x{shape[1]} images")


def write_image(out: str, pixels: np.ndarray) -> None:
    from PIL import Image

    from difflab.io import atomic_write

    fmt = image_format("--out", out)
    atomic_write(out, lambda p: Image.fromarray(pixels).save(p, format=fmt))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of uint8 images (inf when they are equal)."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / mse)) if mse > 0 else float("inf")


def restore_command(
    base: str = typer.Argument(..., help="model: a shipped name (shapes-base) or a folder"),
    problem: str = typer.Option(..., help="inpaint, sr2, sr4, deblur or cs:RATIO"),
    image: str = typer.Option(..., help="the clean RGB image; its measurement is simulated"),
    prompt: str = typer.Option("", help="the scene's caption (conditions the model)"),
    method: str = typer.Option("ddnm", help="ddnm or dps"),
    noise: float = typer.Option(0.0, help="measurement noise sigma_y (images in [-1, 1])"),
    steps: int = typer.Option(20, help="sampling steps"),
    cfg: float = typer.Option(1.0, help="classifier-free guidance scale"),
    step_size: float = typer.Option(8.0, help="DPS step size zeta"),
    seed: int = typer.Option(0, help="seed of the initial noise and the measurement noise"),
    out: str = typer.Option(..., help="restored image file"),
) -> None:
    """Restore an image from a simulated measurement: `difflab restore shapes-base --problem sr4
    --image in.png --prompt "a red circle" --method ddnm --out out.png`."""
    from difflab.data.grid import to_uint8
    from difflab.edit.operators import make_operator
    from difflab.edit.restore import RestoreConfig, restore, to_tensor
    from difflab.runtime import load

    config = RestoreConfig(method=method, steps=steps, cfg=cfg, sigma_y=noise,
                           step_size=step_size)
    check_prompt("--prompt", prompt, allow_empty=True)
    check_seed("--seed", seed)
    image_format("--out", out)
    pixels = read_image(image)
    make_operator(problem, (3, *pixels.shape[:2]), seed)  # an unknown problem fails before load
    pipe = load(base)
    check_size(pixels, pipe.image_shape, image)
    op = make_operator(problem, pipe.image_shape, seed)
    x = to_tensor(pixels[None])
    y = op.measure(x, noise, seed)
    restored = to_uint8(restore(pipe, op, y, [prompt], [seed], config))[0]
    baseline = to_uint8(op.A_pinv(y))[0]
    write_image(out, restored)
    typer.echo(f"{problem} noise {noise:g}: pseudo-inverse {psnr(baseline, pixels):.2f} dB, "
               f"{method} {psnr(restored, pixels):.2f} dB (x{steps} steps); wrote {out}")


def parse_edit_method(method: str) -> float:
    """The SDEdit strength of `sdedit:S`; anything else is a ConfigError."""
    name, _, arg = method.partition(":")
    if name != "sdedit":
        raise ConfigError(f"unknown edit method {method!r}; valid: {', '.join(EDIT_METHODS)}")
    try:
        strength = float(arg or "0.6")
    except ValueError:
        raise ConfigError(f"bad strength in {method!r}; write e.g. sdedit:0.6") from None
    return check_float("sdedit strength", strength, 0.0, 1.0)


def edit_command(
    base: str = typer.Argument(..., help="model: a shipped name (shapes-base) or a folder"),
    image: str = typer.Option(..., help="the RGB image to edit"),
    to: str = typer.Option(..., "--to", help="the prompt the edited image should match"),
    method: str = typer.Option("sdedit:0.6", help="sdedit:STRENGTH (0 keeps the image, 1 "
                               "samples anew)"),
    sampler: str = typer.Option("euler", help="sampler name"),
    steps: int = typer.Option(20, help="sampling steps of the full schedule"),
    cfg: float = typer.Option(3.0, help="classifier-free guidance scale"),
    seed: int = typer.Option(0, help="seed of the added noise"),
    out: str = typer.Option(..., help="edited image file"),
) -> None:
    """Edit an image toward a prompt: `difflab edit shapes-base --image in.png --to "a blue
    circle" --method sdedit:0.6 --out out.png`."""
    from difflab.data.grid import to_uint8
    from difflab.edit.restore import to_tensor
    from difflab.edit.sdedit import sdedit
    from difflab.runtime import SampleConfig, load

    strength = parse_edit_method(method)
    config = SampleConfig(sampler=sampler, steps=steps, cfg=cfg)
    check_prompt("--to", to)
    check_seed("--seed", seed)
    image_format("--out", out)
    pixels = read_image(image)
    pipe = load(base)
    check_size(pixels, pipe.image_shape, image)
    edited = to_uint8(sdedit(pipe, to_tensor(pixels[None]), [to], [seed], config, strength))[0]
    write_image(out, edited)
    typer.echo(f"sdedit strength {strength:g} toward {to!r}: PSNR to the input "
               f"{psnr(edited, pixels):.2f} dB; wrote {out}")
