"""Ground-truth image sets of one novel concept: the 4-20 training images of personalisation.

DreamBooth ("DreamBooth: Fine Tuning Text-to-Image Diffusion Models for Subject-Driven
Generation", 2023) and Textual Inversion ("An Image is Worth One Word", 2022) learn a new
concept from a handful of its images; in the shapes world these are exact renders.
"""

from __future__ import annotations

import numpy as np

from difflab.config import ConfigError
from difflab.data.captions import a_noun
from difflab.data.shapes import IMAGE_SIZES, render_spec
from difflab.data.world import COLORS, NOVEL_COLORS, NOVEL_SHAPES, SHAPES, ObjectSpec, PromptSpec
from difflab.limits import check_int

CONCEPTS: tuple[str, ...] = NOVEL_SHAPES + tuple(NOVEL_COLORS)


def concept_images(concept: str, n: int, size: int = 32,
                   seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """`n` renders (n, size, size, 3) uint8 of one object showing `concept`, with captions
    ("a red star"): a shape in world colours, or world shapes in a colour, cycled in order
    from a seeded offset, each at a random size and position."""
    if concept not in CONCEPTS:
        raise ConfigError(f"unknown concept {concept!r}; valid: {', '.join(CONCEPTS)}")
    check_int("n", n, 1)
    if size not in IMAGE_SIZES:
        raise ConfigError(f"size {size!r} invalid; valid: {list(IMAGE_SIZES)}")
    rng = np.random.default_rng(seed)
    if concept in NOVEL_SHAPES:
        kinds = [(concept, c) for c in COLORS]
    else:
        kinds = [(s, concept) for s in SHAPES]
    start = int(rng.integers(len(kinds)))
    picks = [kinds[(start + i) % len(kinds)] for i in range(n)]
    seeds = rng.integers(2**31, size=n)
    specs = [PromptSpec(a_noun(s, c), "concept", (ObjectSpec(s, c),)) for s, c in picks]
    images = np.stack([render_spec(spec, size, seed=int(k))[0]
                       for spec, k in zip(specs, seeds, strict=True)])
    return images, [spec.text for spec in specs]
