"""Ground-truth image sets of one novel concept: the 4-20 training images of personalisation.

DreamBooth ("DreamBooth: Fine Tuning Text-to-Image Diffusion Models for Subject-Driven
Generation", 2023) and Textual Inversion ("An Image is Worth One Word", 2022) learn a new
concept from a handful of its images; in the shapes world these are exact renders.
"""

from __future__ import annotations

import numpy as np

from difflab.config import ConfigError
from difflab.data.captions import a_noun
from difflab.data.shapes import IMAGE_SIZES, SIZE_ORDER, place_objects, render, render_spec
from difflab.data.world import COLORS, NOVEL_COLORS, NOVEL_SHAPES, SHAPES, ObjectSpec, PromptSpec
from difflab.limits import check_int

CONCEPTS: tuple[str, ...] = NOVEL_SHAPES + tuple(NOVEL_COLORS)
# random: each render draws its object's size; largest-first: each pass over the concept's
# kinds (its colours, or its shapes) draws them all at one size, large, then medium, then small
OBJECT_SIZES: tuple[str, ...] = ("random", "largest-first")


def concept_images(concept: str, n: int, size: int = 32, seed: int = 0,
                   sizes: str = "random") -> tuple[np.ndarray, list[str]]:
    """`n` renders (n, size, size, 3) uint8 of one object showing `concept`, with captions
    ("a red star"): a shape in world colours, or world shapes in a colour, cycled in order
    from a seeded offset, each at a random position and a random size (`sizes` "random") or
    every kind large before any is drawn twice ("largest-first")."""
    if concept not in CONCEPTS:
        raise ConfigError(f"unknown concept {concept!r}; valid: {', '.join(CONCEPTS)}")
    check_int("n", n, 1)
    if size not in IMAGE_SIZES:
        raise ConfigError(f"size {size!r} invalid; valid: {list(IMAGE_SIZES)}")
    if sizes not in OBJECT_SIZES:
        raise ConfigError(f"unknown object sizes {sizes!r}; valid: {', '.join(OBJECT_SIZES)}")
    rng = np.random.default_rng(seed)
    if concept in NOVEL_SHAPES:
        kinds = [(concept, c) for c in COLORS]
    else:
        kinds = [(s, concept) for s in SHAPES]
    start = int(rng.integers(len(kinds)))
    picks = [kinds[(start + i) % len(kinds)] for i in range(n)]
    seeds = rng.integers(2**31, size=n)
    captions = [a_noun(s, c) for s, c in picks]
    if sizes == "random":
        specs = [PromptSpec(t, "concept", (ObjectSpec(s, c),))
                 for t, (s, c) in zip(captions, picks, strict=True)]
        images = [render_spec(spec, size, seed=int(k))[0]
                  for spec, k in zip(specs, seeds, strict=True)]
    else:
        images = [render(place_objects(np.random.default_rng(int(k)),
                                       [(s, c, SIZE_ORDER[i // len(kinds) % len(SIZE_ORDER)])],
                                       size, [0], None))
                  for i, ((s, c), k) in enumerate(zip(picks, seeds, strict=True))]
    return np.stack(images), captions
