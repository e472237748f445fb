"""The shapes world's vocabulary and the structured prompt spec shared by data and evaluator."""

from __future__ import annotations

from dataclasses import dataclass

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "cross", "ring")

# Named colours (sRGB 0-255), spread in hue so that nearest-colour segmentation is exact.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "orange": (245, 145, 30),
    "yellow": (240, 225, 40),
    "green": (40, 185, 60),
    "cyan": (40, 215, 225),
    "blue": (45, 75, 235),
    "purple": (155, 60, 210),
    "white": (245, 245, 245),
}
BACKGROUND: tuple[int, int, int] = (20, 20, 20)

# Object sizes as a fraction of the image side (the object's bounding-box side).
SIZES: dict[str, float] = {"small": 0.22, "medium": 0.32, "large": 0.44}

RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")

NUMBERS: dict[int, str] = {1: "one", 2: "two", 3: "three", 4: "four"}


@dataclass(frozen=True)
class ObjectSpec:
    """One requirement of a prompt: `count` objects of `shape` in `color` (None: any)."""

    shape: str | None
    color: str | None
    count: int = 1


@dataclass(frozen=True)
class PromptSpec:
    """A scored prompt, GenEval-style: required objects and an optional relation.

    `relation` relates objects[0] to objects[1] ("a red circle left of a blue square").
    """

    text: str
    category: str
    objects: tuple[ObjectSpec, ...]
    relation: str | None = None
    seed: int = 0


# Shape-colour combinations that never appear in training scenes (when the sampler's
# held-out exclusion is on); the "heldout" suite asks for them, so it measures
# compositional generalisation. One pair per shape, each with a different colour.
HELDOUT_PAIRS: frozenset[tuple[str, str]] = frozenset(
    {
        ("circle", "purple"),
        ("square", "orange"),
        ("triangle", "cyan"),
        ("diamond", "red"),
        ("cross", "yellow"),
        ("ring", "blue"),
    }
)

# Novel concepts: words and looks that no training scene, caption or base suite uses, for
# personalisation (adapters, DreamBooth, Textual Inversion) to teach a trained base model.
NOVEL_SHAPES: tuple[str, ...] = ("star", "heart")
# Pink lies > 2 x the evaluator's tolerance (60) from every world colour and the background
# (nearest: purple, 125), and its blend line ~97 from theirs, so adding it to the evaluator's
# palette leaves a world colour's pixels with their colour.
NOVEL_COLORS: dict[str, tuple[int, int, int]] = {"pink": (255, 120, 165)}
ALL_SHAPES: tuple[str, ...] = SHAPES + NOVEL_SHAPES
ALL_COLORS: dict[str, tuple[int, int, int]] = {**COLORS, **NOVEL_COLORS}

PLURALS: dict[str, str] = {s: s + ("es" if s.endswith("ss") else "s") for s in ALL_SHAPES}
