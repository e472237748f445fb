"""`difflab edit` (change what the prompt pair asks, keep the rest) and `difflab restore` (solve
an inverse problem with the model as prior)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import typer

from difflab.config import ConfigError
from difflab.edit.editing import EditConfig

# The option a bare value sets: "sdedit:0.6" is sdedit with strength 0.6.
PRIMARY_OPTION = {"sdedit": "strength", "diffedit": "strength", "masked": "strength",
                  "p2p": "tau"}


def parse_method(spec: str) -> tuple[str, dict[str, Any]]:
    """'NAME', 'NAME:VALUE' (its primary option) or 'NAME:k=v,...' -> (name, options)."""
    from difflab.accel.api import parse_options
    from difflab.edit.editing import EDITS

    name, _, rest = spec.partition(":")
    name = name.strip()
    EDITS.get(name)  # raises listing the valid names
    rest = rest.strip()
    if not rest:
        return name, {}
    if "=" not in rest:
        try:
            return name, {PRIMARY_OPTION[name]: float(rest)}
        except ValueError:
            raise ConfigError(f"--method {spec!r}: {rest!r} is not a number; give "
                              f"{name}:VALUE or {name}:key=value,...") from None
    return name, parse_options(rest)


def read_image(path: str, what: str = "--image") -> np.ndarray:
    """An RGB image file as uint8 (H, W, 3); a one-line error for a missing file or another
    mode (the world's images are 8-bit RGB)."""
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{what} {path!r} is not a file")
    try:
        with Image.open(p) as img:
            if img.mode != "RGB":
                raise ConfigError(f"{what} {path!r} is a {img.mode} image; give an 8-bit RGB "
                                  "image (mode RGB)")
            return np.asarray(img.convert("RGB")).copy()
    except (UnidentifiedImageError, OSError) as e:
        raise ConfigError(f"{what} {path!r} is not a readable image ({e})") from None


def read_mask(path: str, shape: tuple[int, int], what: str = "--mask") -> torch.Tensor:
    """A mask image (any mode; bright = True) as (H, W) bool, the size of the image."""
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{what} {path!r} is not a file")
    try:
        with Image.open(p) as img:
            mask = np.asarray(img.convert("L")) > 127
    except (UnidentifiedImageError, OSError) as e:
        raise ConfigError(f"{what} {path!r} is not a readable image ({e})") from None
    if mask.shape != tuple(shape):
        raise ConfigError(f"{what} {path!r} is {mask.shape[1]}x{mask.shape[0]}, but the image "
                          f"is {shape[1]}x{shape[0]}; give a mask of the image's size")
    return torch.from_numpy(mask)


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) -> float (1, 3, H, W) in [-1, 1]."""
    return torch.from_numpy(image).permute(2, 0, 1)[None].float() / 127.5 - 1


def check_size(image: np.ndarray, pipe: Any, what: str = "--image") -> None:
    want = tuple(pipe.image_shape[1:])
    if image.shape[:2] != want:
        raise ConfigError(f"{what} is {image.shape[1]}x{image.shape[0]}, but this model "
                          f"works on {want[1]}x{want[0]} images")


def _write(out: str, image: np.ndarray) -> None:
    from PIL import Image

    from difflab.io import atomic_write
    from difflab.limits import image_format

    fmt = image_format("--out", out)
    atomic_write(out, lambda p: Image.fromarray(image).save(p, format=fmt))


def edit_command(
    base: str = typer.Argument(..., help="model: a shipped name (shapes-base) or any artefact"),
    image: str = typer.Option(..., help="the RGB image to edit, the model's size"),
    source: str = typer.Option(..., "--from", help="what the image shows: 'a red circle'"),
    target: str = typer.Option(..., "--to", help="what it should show: 'a blue circle'"),
    method: str = typer.Option("p2p", help="p2p[:tau or k=v,...], sdedit:STRENGTH, "
                               "diffedit[:strength], masked[:strength] (needs --mask)"),
    mask: str = typer.Option("", help="masked: the region to change (bright pixels)"),
    steps: int = typer.Option(EditConfig.steps, help="DDIM steps"),
    cfg: float = typer.Option(EditConfig.cfg, help="classifier-free guidance scale"),
    inversion: str = typer.Option(EditConfig.inversion, help="inversion for p2p, diffedit and "
                                  "masked: null-text, negative-prompt (fast) or ddim"),
    seed: int = typer.Option(0, help="seed of the noise (sdedit, diffedit's mask)"),
    out: str = typer.Option(..., help="output image file"),
) -> None:
    """Edit an image: `difflab edit shapes-base --image in.png --from "a red circle" --to
    "a blue circle" --method p2p --out out.png`."""
    from difflab.edit.editing import run_edit
    from difflab.limits import check_prompt, image_format
    from difflab.runtime import load

    name, options = parse_method(method)
    check_prompt("--from", source)
    check_prompt("--to", target)
    image_format("--out", out)
    pixels = read_image(image)
    masks = None
    if name == "masked":
        if not mask:
            raise ConfigError("--method masked needs --mask (bright pixels = the region to "
                              "change)")
        masks = read_mask(mask, pixels.shape[:2])[None]
    elif mask:
        raise ConfigError(f"--mask is for --method masked; {name} finds its own region")
    config = EditConfig(steps=steps, cfg=cfg, inversion=inversion, seed=seed)
    pipe = load(base)
    check_size(pixels, pipe)
    if name == "p2p":
        from difflab.edit.p2p import word_swap

        encoder = getattr(pipe.conditioner, "cache", None)
        tokenizer = getattr(getattr(encoder, "encoder", None), "tokenizer", None)
        if tokenizer is None:
            raise ConfigError("p2p needs a text model whose encoder has a tokenizer")
        word_swap(tokenizer, source, target, encoder.encoder.max_length)  # one-word swap?
    if masks is not None:
        options = {**options, "masks": masks}
    start = time.perf_counter()
    x = run_edit(name, pipe, to_tensor(pixels).to(pipe.device), [source], [target], config,
                 **options)
    seconds = time.perf_counter() - start
    from difflab.data.grid import to_uint8

    _write(out, to_uint8(x)[0])
    typer.echo(f"wrote {out}: {method} {source!r} -> {target!r} ({steps} steps, cfg {cfg:g}, "
               f"{seconds:.1f} s)")


def restore_command(
    base: str = typer.Argument(..., help="model: a shipped name (shapes-base) or any artefact"),
    problem: str = typer.Option(..., help="inpaint[:missing], sr2, sr4, deblur[:sigma], "
                                "cs[:ratio]"),
    image: str = typer.Option(..., help="the observation (low-resolution image for sr, the "
                              "blurred image for deblur, the image with holes for inpaint), or "
                              "with --measure the clean image to measure first"),
    method: str = typer.Option("ddnm", help="ddnm, dps, repaint (inpaint), or a classical "
                               "baseline: bicubic, nearest, wiener, zero-fill, tv"),
    mask: str = typer.Option("", help="inpaint: the missing pixels (bright), instead of a "
                             "random mask"),
    measure: bool = typer.Option(False, help="the image is clean: measure it (y = A x + "
                                 "noise) and report PSNR against it"),
    noise: float = typer.Option(0.0, help="--measure: measurement noise sigma_y (images in "
                                "[-1, 1])"),
    steps: int = typer.Option(50, help="sampling steps"),
    prompt: str = typer.Option("", help="prompt for the prior ('' = unconditional)"),
    seed: int = typer.Option(0, help="seed of the sampler noise, random masks and CS matrix"),
    out: str = typer.Option(..., help="output image file"),
) -> None:
    """Restore an image: `difflab restore shapes-base --problem sr4 --image low.png --method ddnm
    --out x4.png`."""
    from difflab.data.grid import to_uint8
    from difflab.edit.operators import PROBLEMS, SPEC, Inpaint, make_operator
    from difflab.edit.restore import method_names, restore
    from difflab.limits import check_float, check_int, check_prompt, check_seed, image_format
    from difflab.runtime import load

    m = SPEC.match(problem.strip())
    if m is None or m["name"] not in PROBLEMS:
        make_operator(problem, (3, 32, 32))  # the one-line error naming the valid problems
    if method not in method_names():
        raise ConfigError(f"unknown restoration method {method!r}; valid: "
                          f"{', '.join(method_names())}")
    check_int("--steps", steps, 1, 1000)
    check_float("--noise", noise, 0.0, 1.0)
    check_seed("--seed", seed)
    check_prompt("--prompt", prompt, allow_empty=True)
    image_format("--out", out)
    if noise and not measure:
        raise ConfigError("--noise adds measurement noise with --measure; an observation "
                          "carries its own")
    if m["name"] == "cs" and not measure:
        raise ConfigError("compressed-sensing measurements are not an image: pass the clean "
                          "image with --measure")
    pixels = read_image(image)
    pipe = load(base)
    shape = tuple(pipe.image_shape)
    op = make_operator(problem, shape, seed)
    if mask:
        if not isinstance(op, Inpaint):
            raise ConfigError(f"--mask is for inpaint, not {problem}")
        op = Inpaint(shape, ~read_mask(mask, shape[1:]))
    x = to_tensor(pixels).to(pipe.device)
    if measure:
        check_size(pixels, pipe)
        y = op.measure(x, noise, seed)
    else:
        y = op.A(x) if isinstance(op, Inpaint) else x  # holes are whatever the file holds
        op.check_measurement(y)
    start = time.perf_counter()
    with torch.no_grad():
        result = restore(method, pipe.process.denoiser(pipe.net), y, op,
                         pipe.process.default_schedule(steps).float(),
                         extra_args=pipe.condition([prompt]), sigma_y=noise,
                         noise=_noise(seed))
    seconds = time.perf_counter() - start
    images = to_uint8(result)
    _write(out, images[0])
    line = f"wrote {out}: {op.name}, {method} ({steps} steps, {seconds:.1f} s)"
    if measure:
        from difflab.eval.metrics import psnr

        line += f"; PSNR {float(psnr(images, pixels[None])[0]):.2f} dB against --image"
    typer.echo(line)


def _noise(seed: int):
    from difflab.core.samplers import BatchNoise

    return BatchNoise([seed])
