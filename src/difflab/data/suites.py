"""Fixed, versioned prompt suites with seeds, GenEval-style (single, binding, counting, spatial),
and the `layout` suite: spatial prompts that each come with one requested box per object.

"GenEval: An Object-Focused Framework for Evaluating Text-to-Image Alignment" (2023).
Suites are built by pure enumeration (no RNG), so their content cannot drift between
numpy versions or hash seeds; bump SUITE_VERSION whenever the content changes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

from difflab.config import ConfigError
from difflab.data.captions import a_noun, counted, noun, relation_text
from difflab.data.world import (
    COLORS,
    HELDOUT_PAIRS,
    NOVEL_COLORS,
    NOVEL_SHAPES,
    RELATIONS,
    SHAPES,
    SIZES,
    ObjectSpec,
    PromptSpec,
)
from difflab.registry import UnknownNameError

__all__ = ["HELDOUT_PAIRS", "LayoutPrompt", "NOVEL_SUITES", "SEED_STRIDE", "SPLITS", "SUITES",
           "SUITE_SIZES", "SUITE_VERSION",
           "TEST_FIRST_IMAGE", "TEST_ONLY_SUITES", "check_split", "expand_suite", "load_layouts",
           "load_suite",
           "suite_seeds"]

# Version 2 added the `reworded` suite; version 3 added the novel-concept suites (novel-shape,
# novel-color, novel-both); version 4 added the `layout` suite. The template suites are unchanged
# since version 1.
SUITE_VERSION = 4
SUITES: tuple[str, ...] = ("single", "binding", "counting", "spatial", "heldout", "all",
                           "reworded", "novel-shape", "novel-color", "novel-both", "layout")
# The template suites that "all" joins ("reworded" is a test-split suite of its own).
TEMPLATE_SUITES: tuple[str, ...] = ("single", "binding", "counting", "spatial", "heldout")
# Concepts the base model never saw (data.world NOVEL_SHAPES, NOVEL_COLORS), for scoring
# personalisation; scored with the evaluator's "extended" vocabulary, never part of "all".
NOVEL_SUITES: tuple[str, ...] = ("novel-shape", "novel-color", "novel-both")
_SEED_BASE = {"single": 1000, "binding": 2000, "counting": 3000, "spatial": 4000, "heldout": 5000,
              "novel-shape": 6000, "novel-color": 7000, "novel-both": 8000, "layout": 9000}

# Training pairs in a fixed order (shape-major): 6 shapes x 8 colours - 6 held out = 42.
TRAIN_PAIRS: tuple[tuple[str, str], ...] = tuple(
    (s, c) for s in SHAPES for c in COLORS if (s, c) not in HELDOUT_PAIRS
)
HELDOUT_ORDER: tuple[tuple[str, str], ...] = tuple(
    (s, c) for s in SHAPES for c in COLORS if (s, c) in HELDOUT_PAIRS
)


def _spread(pool: list, n: int, offset: int = 0) -> list:
    """`n` distinct items of `pool`, visited with a stride coprime to its length."""
    size = len(pool)
    stride = math.ceil(size * 0.618)
    while math.gcd(stride, size) != 1:
        stride += 1
    return [pool[(offset + i * stride) % size] for i in range(n)]


def _two_object_pool() -> list[tuple[tuple[str, str], tuple[str, str]]]:
    """Ordered pairs of training objects with different shapes and different colours."""
    return [(a, b) for a in TRAIN_PAIRS for b in TRAIN_PAIRS if a[0] != b[0] and a[1] != b[1]]


def _single() -> list[PromptSpec]:
    return [
        PromptSpec(a_noun(s, c), "single", (ObjectSpec(s, c),)) for s, c in TRAIN_PAIRS
    ]


def _binding(n: int = 64) -> list[PromptSpec]:
    return [
        PromptSpec(f"{a_noun(*a)} and {a_noun(*b)}", "binding", (ObjectSpec(*a), ObjectSpec(*b)))
        for a, b in _spread(_two_object_pool(), n)
    ]


# One kind per colour, every shape at least once, none held out: 8 kinds x counts 1-4 = 32.
COUNTING_KINDS: tuple[tuple[str, str], ...] = (
    ("circle", "red"),
    ("ring", "orange"),
    ("square", "yellow"),
    ("triangle", "green"),
    ("circle", "cyan"),
    ("diamond", "blue"),
    ("cross", "purple"),
    ("ring", "white"),
)
assert not HELDOUT_PAIRS & set(COUNTING_KINDS)


def _counting() -> list[PromptSpec]:
    return [
        PromptSpec(counted(s, c, n), "counting", (ObjectSpec(s, c, n),))
        for s, c in COUNTING_KINDS
        for n in (1, 2, 3, 4)
    ]


def _spatial(n: int = 64) -> list[PromptSpec]:
    pairs = _spread(_two_object_pool(), n, offset=17)
    return [
        PromptSpec(relation_text(a, b, rel), "spatial", (ObjectSpec(*a), ObjectSpec(*b)), rel)
        for i, (a, b) in enumerate(pairs)
        for rel in [RELATIONS[i % len(RELATIONS)]]
    ]


def _heldout() -> list[PromptSpec]:
    # 6 held-out pairs x (single, two/three of them, bound with, related to a training object).
    out = []
    for i, (s, c) in enumerate(HELDOUT_ORDER):
        other = next(p for p in _spread(list(TRAIN_PAIRS), 42, i) if p[0] != s and p[1] != c)
        n = 2 + i % 2
        rel = RELATIONS[i % len(RELATIONS)]
        out += [
            PromptSpec(a_noun(s, c), "heldout", (ObjectSpec(s, c),)),
            PromptSpec(counted(s, c, n), "heldout", (ObjectSpec(s, c, n),)),
            PromptSpec(
                f"{a_noun(s, c)} and {a_noun(*other)}",
                "heldout",
                (ObjectSpec(s, c), ObjectSpec(*other)),
            ),
            PromptSpec(
                relation_text((s, c), other, rel),
                "heldout",
                (ObjectSpec(s, c), ObjectSpec(*other)),
                rel,
            ),
        ]
    return out


def _reworded() -> list[PromptSpec]:
    """Every single, binding, counting and spatial prompt asked again twice: once in the train
    half's paraphrases ("reworded_seen"), once in the test half's ("reworded_unseen"), each
    with its template prompt's seed, so the two wordings compare pairwise on the same noise."""
    from difflab.data.paraphrase import reworded_text

    out = []
    bases = [p for name in ("single", "binding", "counting", "spatial") for p in _suite(name)]
    for half, category in (("train", "reworded_seen"), ("test", "reworded_unseen")):
        for i, p in enumerate(bases):
            objects = [(o.shape, o.color, o.count) for o in p.objects]
            text = reworded_text(objects, p.relation, half, i)
            out.append(PromptSpec(text, category, p.objects, p.relation, seed=p.seed))
    return out


def _novel_shape() -> list[PromptSpec]:
    # Every novel shape in every world colour: "a red star", ..., "a white heart".
    return [PromptSpec(a_noun(s, c), "novel_shape", (ObjectSpec(s, c),))
            for s in NOVEL_SHAPES for c in COLORS]


def _novel_color() -> list[PromptSpec]:
    # Every world shape in every novel colour: "a pink circle", ..., "a pink ring".
    return [PromptSpec(a_noun(s, c), "novel_color", (ObjectSpec(s, c),))
            for c in NOVEL_COLORS for s in SHAPES]


def _novel_both() -> list[PromptSpec]:
    # Both novel at once ("a pink star"), then each novel object beside a known one, the novel
    # shape in a world colour and a world shape in the novel colour, in both orders.
    out = [PromptSpec(a_noun(s, c), "novel_both", (ObjectSpec(s, c),))
           for s in NOVEL_SHAPES for c in NOVEL_COLORS]
    colors = tuple(COLORS)
    for i, (s, c) in enumerate((s, c) for s in NOVEL_SHAPES for c in NOVEL_COLORS):
        known = (SHAPES[(2 * i) % len(SHAPES)], colors[(3 * i + 5) % len(colors)])
        shape_only = (s, colors[(3 * i + 1) % len(colors)])  # novel shape, world colour
        color_only = (SHAPES[(2 * i + 1) % len(SHAPES)], c)  # world shape, novel colour
        for a, b in (((s, c), known), (known, (s, c)), (color_only, shape_only),
                     (shape_only, color_only)):
            out.append(PromptSpec(f"{a_noun(*a)} and {a_noun(*b)}", "novel_both",
                                  (ObjectSpec(*a), ObjectSpec(*b))))
    return out


Box = tuple[float, float, float, float]  # (x0, y0, x1, y1) as fractions of the side, y down


@dataclass(frozen=True)
class LayoutPrompt:
    """A prompt with one requested box per object (spec.objects order) and its phrase."""

    spec: PromptSpec
    phrases: tuple[str, ...]  # "red circle": words of spec.text naming each object
    boxes: tuple[Box, ...]


def _square(cx: float, cy: float, side: float) -> Box:
    return (round(cx - side / 2, 4), round(cy - side / 2, 4),
            round(cx + side / 2, 4), round(cy + side / 2, 4))


def _layout_boxes(i: int, relation: str) -> tuple[Box, Box]:
    """Boxes for layout prompt `i`: the first object's box stands in `relation` to the second's
    (centres 0.46 apart along the relation's axis, at most 0.1 across it); sides are the world's
    medium or large sizes, cycled by index, so every box lies inside the image with a margin."""
    sides = (SIZES["medium"], SIZES["large"])
    side_a, side_b = sides[i % 2], sides[(i // 2) % 2]
    across = (0.35, 0.5, 0.65)[(i // 4) % 3]
    shift = (-0.05, 0.0, 0.05)[(i // 12) % 3]  # the second object's offset across the axis
    near, far = 0.27, 0.73
    first, second = (near, far) if relation in ("left of", "above") else (far, near)
    if relation in ("left of", "right of"):
        return _square(first, across, side_a), _square(second, across + shift, side_b)
    return _square(across, first, side_a), _square(across + shift, second, side_b)


def _layout_prompts(n: int = 64) -> list[tuple[PromptSpec, tuple[str, ...], tuple[Box, ...]]]:
    pairs = _spread(_two_object_pool(), n, offset=29)
    out = []
    for i, (a, b) in enumerate(pairs):
        rel = RELATIONS[(i + i // 4) % len(RELATIONS)]
        spec = PromptSpec(relation_text(a, b, rel), "layout", (ObjectSpec(*a), ObjectSpec(*b)),
                          rel)
        out.append((spec, (noun(*a), noun(*b)), _layout_boxes(i, rel)))
    return out


def _layout() -> list[PromptSpec]:
    return [spec for spec, _, _ in _layout_prompts()]


def load_layouts() -> list[LayoutPrompt]:
    """The `layout` suite with its boxes and phrases, each prompt with its fixed seed."""
    specs = _suite("layout")
    return [LayoutPrompt(spec, phrases, boxes)
            for spec, (_, phrases, boxes) in zip(specs, _layout_prompts(), strict=True)]


_BUILDERS = {
    "single": _single,
    "binding": _binding,
    "counting": _counting,
    "spatial": _spatial,
    "heldout": _heldout,
    "novel-shape": _novel_shape,
    "novel-color": _novel_color,
    "novel-both": _novel_both,
    "layout": _layout,
}


@cache
def _suite(name: str) -> tuple[PromptSpec, ...]:
    if name == "all":
        return tuple(p for part in TEMPLATE_SUITES for p in _suite(part))
    if name == "reworded":
        return tuple(_reworded())
    specs = _BUILDERS[name]()
    base = _SEED_BASE[name]
    return tuple(
        PromptSpec(p.text, p.category, p.objects, p.relation, seed=base + i)
        for i, p in enumerate(specs)
    )


def load_suite(name: str) -> list[PromptSpec]:
    """The prompts of suite `name` (version SUITE_VERSION), each with its fixed seed."""
    if name not in SUITES:
        raise UnknownNameError(f"unknown prompt suite {name!r}; valid: {', '.join(SUITES)}")
    return list(_suite(name))


SUITE_SIZES: dict[str, int] = {name: len(_suite(name)) for name in SUITES}


# Image k of a suite prompt uses seed spec.seed + k * SEED_STRIDE. Template prompt seeds lie in
# [1000, 6000), novel-concept ones in [6000, 9000), layout ones in [9000, 9064), and the stride
# exceeds their spread, so no two such prompts share a seed (a reworded prompt shares its
# template prompt's seeds on purpose: same scene, other words).
SEED_STRIDE = 100_003

# Splits. `dev`: images k < TEST_FIRST_IMAGE of the template suites, where recipes, samplers
# and hyper-parameters may be chosen. `test`: images k >= TEST_FIRST_IMAGE (image k of the test
# split is image TEST_FIRST_IMAGE + k), plus the reworded suite; it only reports.
SPLITS: tuple[str, ...] = ("dev", "test")
TEST_FIRST_IMAGE = 1000
TEST_ONLY_SUITES: tuple[str, ...] = ("reworded",)


def check_split(split: str, suite: str | None = None) -> str:
    """Return `split` if it is valid (and `suite` may be scored on it), else raise naming
    the valid choices."""
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    if suite in TEST_ONLY_SUITES and split != "test":
        raise ConfigError(f"suite {suite!r} belongs to the test split only; use split 'test'")
    return split


def suite_seeds(spec: PromptSpec, count: int, first: int = 0, split: str = "dev") -> list[int]:
    """The seeds of images first..first+count-1 of a suite prompt in `split`: image k uses
    spec.seed + k * SEED_STRIDE (the one convention of eval, bench and demo), with k counted
    from TEST_FIRST_IMAGE in the test split; dev images never reach the test split's."""
    check_split(split)
    if count < 1 or first < 0:
        raise ValueError(f"need count >= 1 and first >= 0, got {count}, {first}")
    if split == "dev" and first + count > TEST_FIRST_IMAGE:
        raise ConfigError(f"dev images are k < {TEST_FIRST_IMAGE}; images {first}.."
                          f"{first + count - 1} reach the test split's seeds")
    base = first + (TEST_FIRST_IMAGE if split == "test" else 0)
    return [spec.seed + k * SEED_STRIDE for k in range(base, base + count)]


def expand_suite(specs: Sequence[PromptSpec], seeds_per_prompt: int, first: int = 0,
                 split: str = "dev") -> tuple[list[PromptSpec], list[int]]:
    """One (spec, seed) pair per image, by `suite_seeds` in `split`, seed-major: every
    prompt's image `first`, then every prompt's next image, and so on."""
    seeds = [suite_seeds(spec, seeds_per_prompt, first, split) for spec in specs]
    pairs = [(spec, row[k]) for k in range(seeds_per_prompt)
             for spec, row in zip(specs, seeds, strict=True)]
    return [p for p, _ in pairs], [s for _, s in pairs]
