"""`difflab tune`: teach a base model a concept from a few images, write an adapter folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import typer

from difflab.config import ConfigError
from difflab.tune.methods import DEFAULT_TARGETS, METHODS


def check_data(concept: str, images: str, generate: int) -> None:
    """Raise unless exactly one data source is given and it can be read (before any load)."""
    if images and generate:
        raise ConfigError("give --images DIR or --generate N, not both")
    if images:
        from difflab.data.folder import ImageFolderDataset

        ImageFolderDataset(images)  # a missing folder or unreadable image fails now
    elif generate < 1:
        raise ConfigError("give --images DIR (images with captions) or --generate N (N >= 1 "
                          "renders of the concept from the shapes world)")
    else:
        from difflab.data.concepts import CONCEPTS

        if concept not in CONCEPTS:
            raise ConfigError(f"--concept {concept!r} cannot be generated; the shapes world "
                              f"renders: {', '.join(CONCEPTS)}")


def training_images(concept: str, images: str, generate: int, size: int,
                    seed: int, sizes: str = "random") -> tuple[np.ndarray, list[str]]:
    """(images (N, H, W, 3) uint8, captions) from a folder or generated from the world."""
    check_data(concept, images, generate)
    if images:
        from difflab.data.folder import ImageFolderDataset

        data = ImageFolderDataset(images, size=size)
        items = [data[i] for i in range(len(data))]
        pixels = np.stack([((it["image"].permute(1, 2, 0).numpy() + 1) * 127.5).round()
                           .clip(0, 255).astype(np.uint8) for it in items])
        return pixels, [it["caption"] for it in items]
    from difflab.data.concepts import concept_images

    return concept_images(concept, generate, size=size, seed=seed, sizes=sizes)


def tune_command(
    base: str = typer.Argument(..., help="base model: a shipped name (shapes-base), run or "
                               "checkpoint folder"),
    method: str = typer.Option("lora", help=", ".join(METHODS)),
    concept: str = typer.Option("star", help="the concept the captions name (e.g. star, pink)"),
    images: str = typer.Option("", help="folder of training images with captions "
                               "(metadata.jsonl or .txt beside each image)"),
    generate: int = typer.Option(0, help="render N training images of --concept instead"),
    object_sizes: str = typer.Option("random", help="object sizes of the rendered images: "
                                     "random, or largest-first (every kind drawn large "
                                     "before any is drawn twice)"),
    steps: int = typer.Option(300, help="optimisation steps"),
    lr: float = typer.Option(0.0, help="learning rate (0: the method's default)"),
    batch_size: int = typer.Option(8, help="images per step"),
    rank: int = typer.Option(4, help="LoRA-family rank"),
    alpha: float = typer.Option(4.0, help="LoRA-family alpha"),
    rank_pattern: str = typer.Option("", help="other ranks for some targeted layers: "
                                     "'REGEX=RANK;REGEX=RANK' (alpha keeps alpha/rank)"),
    lora_init: str = typer.Option("random", help="lora/dora start: random (peft's), "
                                  "principal (the weights' top singular directions) or "
                                  "gradient (the tuning loss gradient's, LoRA-GA's)"),
    targets: str = typer.Option(DEFAULT_TARGETS, help="regular expression of the layers the "
                                "peft methods and SaRA adapt"),
    prior_weight: float = typer.Option(-1.0, help="class-prior preservation weight (-1: 0 for "
                                       "full, else 1)"),
    prior_images: int = typer.Option(42, help="images of known concepts for the prior loss"),
    prior_source: str = typer.Option("world", help="prior images: world (exact renders) or "
                                     "base (its own samples, as DreamBooth)"),
    cond_dropout: float = typer.Option(0.0, help="share of captions dropped to train the "
                                       "unconditional branch too"),
    uncond_weight: float = typer.Option(0.0, help="weight of the loss that holds the "
                                        "unconditional branch to the base's"),
    stratified: bool = typer.Option(False, help="draw each batch's images without "
                                    "replacement and its noise levels one per stratum"),
    shift: float = typer.Option(0.0, help="a flow base's timestep shift for tuning (> 1: "
                                "noisier inputs; 0: the base's own)"),
    schedule: str = typer.Option("constant", help="learning rate over the steps: constant "
                                 "or cosine (down to 0)"),
    precision: str = typer.Option("fp32", help="fp32, or auto: bf16 autocast where the CPU "
                                  "computes bf16 natively"),
    seed: int = typer.Option(0, help="seed of the data draws and adapter initialisation"),
    out: str = typer.Option(..., help="new adapter folder"),
) -> None:
    """Tune BASE on a concept: `difflab tune shapes-base --method lora --concept star
    --generate 12 --out runs/star-lora`."""
    from difflab.runtime import load
    from difflab.tune.adapters import base_reference, save_adapter
    from difflab.tune.fit import TuneConfig, tune

    cfg = TuneConfig(method=method, concept=concept, images=max(generate, 1), steps=steps,
                     lr=lr, batch_size=batch_size, rank=rank, alpha=alpha, lora_init=lora_init,
                     targets=targets, rank_pattern=rank_pattern, schedule=schedule,
                     prior_weight=prior_weight, prior_images=prior_images,
                     prior_source=prior_source, cond_dropout=cond_dropout,
                     uncond_weight=uncond_weight, stratified=stratified, shift=shift,
                     object_sizes=object_sizes, precision=precision, seed=seed)
    if images and object_sizes != "random":
        raise ConfigError("--object-sizes is for rendered images (--generate), not --images")
    if Path(out).exists() and (not Path(out).is_dir() or any(Path(out).iterdir())):
        raise ConfigError(f"--out {out} exists and is not an empty folder; choose a new one")
    check_data(concept, images, generate)
    reference = base_reference(base)
    pipe = load(base)
    pixels, captions = training_images(concept, images, generate, pipe.pixel_shape[1], seed,
                                       object_sizes)
    result = tune(pipe, cfg, pixels, captions)
    manifest = save_adapter(result, out, reference, {"images": len(pixels)})
    size = sum((Path(out) / f).stat().st_size for f in manifest.files)
    typer.echo(f"tuned {method} on {len(pixels)} images of {concept!r}: {result.trainable:,} "
               f"trainable numbers, {result.seconds:.0f} s, final loss "
               f"{result.losses[-1]:.4f}; wrote {out}/ ({size:,} bytes)")
