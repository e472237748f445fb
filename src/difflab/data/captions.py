"""Captions for shapes scenes: several templates and paraphrases per scene kind.

Paraphrased captions for one image follow the caption-augmentation practice of
"Improving Image Generation with Better Captions" (DALL-E 3, 2023), here by template.
"""

from __future__ import annotations

import numpy as np

from difflab.data.world import NUMBERS, PLURALS, RELATIONS

# How each relation reads after the first object, and its mirror (for swapped templates).
RELATION_PHRASES: dict[str, str] = {
    "left of": "to the left of",
    "right of": "to the right of",
    "above": "above",
    "below": "below",
}
MIRROR: dict[str, str] = {
    "left of": "right of",
    "right of": "left of",
    "above": "below",
    "below": "above",
}
# "left: a; right: b" style labels for (first, second) object of each relation.
SIDE_LABELS: dict[str, tuple[str, str]] = {
    "left of": ("left", "right"),
    "right of": ("right", "left"),
    "above": ("top", "bottom"),
    "below": ("bottom", "top"),
}
NEXT_TO: dict[str, str] = {
    "left of": "on its right",
    "right of": "on its left",
    "above": "below it",
    "below": "above it",
}
assert set(RELATION_PHRASES) == set(RELATIONS)


def _pick(rng: np.random.Generator, options: list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def noun(shape: str, color: str, size: str | None = None) -> str:
    """'red circle' or 'small red circle'."""
    return f"{size} {color} {shape}" if size else f"{color} {shape}"


def a_noun(shape: str, color: str, size: str | None = None) -> str:
    """'a red circle' (no English word here starts with a vowel sound but 'orange')."""
    words = noun(shape, color, size)
    return ("an " if words[0] in "aeiou" else "a ") + words


def counted(shape: str, color: str, n: int) -> str:
    """'a red circle' for one, 'three red circles' otherwise."""
    return a_noun(shape, color) if n == 1 else f"{NUMBERS[n]} {color} {PLURALS[shape]}"


def relation_text(a: tuple[str, str], b: tuple[str, str], relation: str) -> str:
    """Canonical: 'a red circle to the left of a blue square'."""
    return f"{a_noun(*a)} {RELATION_PHRASES[relation]} {a_noun(*b)}"


def caption_single(rng: np.random.Generator, shape: str, color: str, size: str) -> str:
    """One object, in one of several phrasings (sometimes with its size)."""
    sz = size if rng.random() < 0.3 else None
    return _pick(
        rng,
        [
            a_noun(shape, color, sz),
            noun(shape, color, sz),
            f"one {noun(shape, color, sz)}",
            f"a {shape} that is {color}",
            f"a {shape}, {color}",
            f"{a_noun(shape, color, sz)} on a dark background",
        ],
    )


def caption_count(rng: np.random.Generator, shape: str, color: str, n: int) -> str:
    """`n` objects of one kind: 'two green triangles', '2 green triangles', ..."""
    if n == 1:
        return caption_single(rng, shape, color, size="")
    options = [
        counted(shape, color, n),
        f"{n} {color} {PLURALS[shape]}",
        f"{NUMBERS[n]} {PLURALS[shape]}, all {color}",
        f"{NUMBERS[n]} {color} {PLURALS[shape]} on a dark background",
    ]
    if n == 2:
        options.append(f"a pair of {color} {PLURALS[shape]}")
    return _pick(rng, options)


def caption_relation(
    rng: np.random.Generator, a: tuple[str, str], b: tuple[str, str], relation: str,
    binding_form: bool = False,
) -> str:
    """Object `a` (shape, colour) in `relation` to `b`, in one of several phrasings;
    `binding_form` adds the binding suite's "a red circle and a blue square" (either order),
    which no other scene kind but `multi` otherwise teaches."""
    first, second = SIDE_LABELS[relation]
    mirror = MIRROR[relation]
    options = [
        relation_text(a, b, relation),
        f"{a_noun(*a)} {relation} {a_noun(*b)}",
        f"{relation_text(b, a, mirror)}",
        f"{first}: {noun(*a)}; {second}: {noun(*b)}",
        f"a {a[0]}, {a[1]}, next to {a_noun(*b)} {NEXT_TO[relation]}",
    ]
    if binding_form:
        options += [f"{a_noun(*a)} and {a_noun(*b)}", f"{a_noun(*b)} and {a_noun(*a)}"]
    return _pick(rng, options)


def caption_multi(rng: np.random.Generator, groups: list[tuple[str, str, int]]) -> str:
    """Several kinds of object, each (shape, colour, count): 'a red circle and two blue squares'."""
    order = rng.permutation(len(groups))
    parts = [counted(*groups[i]) for i in order]
    if len(parts) == 1:
        return parts[0]
    listed = ", ".join(parts[:-1]) + " and " + parts[-1]
    return _pick(rng, [listed, f"{listed} on a dark background", "; ".join(parts)])


TEMPLATE_WORDS: tuple[str, ...] = tuple(
    "a an and one on dark background that is all pair of to the next it its".split()
    + [w for p in RELATION_PHRASES.values() for w in p.split()]
    + [w for p in NEXT_TO.values() for w in p.split()]
    + [w for p in SIDE_LABELS.values() for w in p]
    + [w for r in RELATIONS for w in r.split()]
)
