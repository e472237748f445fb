"""Fixed, versioned prompt suites with seeds, GenEval-style (single, binding, counting, spatial).

"GenEval: An Object-Focused Framework for Evaluating Text-to-Image Alignment" (2023).
Suites are built by pure enumeration (no RNG), so their content cannot drift between
numpy versions or hash seeds; bump SUITE_VERSION whenever the content changes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import cache

from difflab.data.captions import a_noun, counted, relation_text
from difflab.data.world import COLORS, HELDOUT_PAIRS, RELATIONS, SHAPES, ObjectSpec, PromptSpec
from difflab.registry import UnknownNameError

__all__ = ["HELDOUT_PAIRS", "SEED_STRIDE", "SUITES", "SUITE_SIZES", "SUITE_VERSION", "expand_suite",
           "load_suite", "suite_seeds"]

SUITE_VERSION = 1
SUITES: tuple[str, ...] = ("single", "binding", "counting", "spatial", "heldout", "all")
_SEED_BASE = {"single": 1000, "binding": 2000, "counting": 3000, "spatial": 4000, "heldout": 5000}

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


_BUILDERS = {
    "single": _single,
    "binding": _binding,
    "counting": _counting,
    "spatial": _spatial,
    "heldout": _heldout,
}


@cache
def _suite(name: str) -> tuple[PromptSpec, ...]:
    if name == "all":
        return tuple(p for part in SUITES[:-1] for p in _suite(part))
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


# Image k of a suite prompt uses seed spec.seed + k * SEED_STRIDE. Prompt seeds lie in
# [1000, 6000) and the stride exceeds their spread, so no two prompts share a seed.
SEED_STRIDE = 100_003


def suite_seeds(spec: PromptSpec, count: int, first: int = 0) -> list[int]:
    """The seeds of images first..first+count-1 of a suite prompt: image k uses
    spec.seed + k * SEED_STRIDE (the one convention of eval, bench and demo)."""
    if count < 1 or first < 0:
        raise ValueError(f"need count >= 1 and first >= 0, got {count}, {first}")
    return [spec.seed + k * SEED_STRIDE for k in range(first, first + count)]


def expand_suite(specs: Sequence[PromptSpec], seeds_per_prompt: int,
                 first: int = 0) -> tuple[list[PromptSpec], list[int]]:
    """One (spec, seed) pair per image, by `suite_seeds`, seed-major: every prompt's image
    `first`, then every prompt's next image, and so on."""
    seeds = [suite_seeds(spec, seeds_per_prompt, first) for spec in specs]
    pairs = [(spec, row[k]) for k in range(seeds_per_prompt)
             for spec, row in zip(specs, seeds, strict=True)]
    return [p for p, _ in pairs], [s for _, s in pairs]
