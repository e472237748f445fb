"""Rewards for alignment: the shapes evaluator per image and per requirement, and prompt specs.

The evaluator (`difflab.eval.shapeeval`, GenEval-style: "GenEval: An Object-Focused Framework
for Evaluating Text-to-Image Alignment", 2023) gives each image a verdict per requirement of its
prompt. `requirement_scores` turns a verdict into REQUIREMENTS scores in [0, 1] (the share of
the prompt's objects that are present, have their colour, have their count; the relation; the
prompt-level pass), and `evaluator_reward` into one number: the mean of the applicable scores,
which is 1 exactly when the image passes. It is exact and non-differentiable; `RewardNet`
(`difflab.align.rewardnet`) learns it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
from torch import Tensor

from difflab.config import ConfigError
from difflab.data.captions import RELATION_PHRASES
from difflab.data.world import COLORS, NUMBERS, PLURALS, SHAPES, ObjectSpec, PromptSpec
from difflab.eval.features import to_uint8_images
from difflab.eval.shapeeval import PromptVerdict, check, inspect

REQUIREMENTS: tuple[str, ...] = ("objects", "colors", "count", "relation", "passed")

_WORD = {**{v: k for k, v in NUMBERS.items()}, "a": 1, "an": 1}
_SINGULAR = {**{s: s for s in SHAPES}, **{PLURALS[s]: s for s in SHAPES}}
_PHRASE = {phrase: rel for rel, phrase in RELATION_PHRASES.items()}
_OBJECT = (rf"({'|'.join(_WORD)}) ({'|'.join(COLORS)}) "
           rf"({'|'.join(sorted(_SINGULAR, key=len, reverse=True))})")
_PROMPT = re.compile(rf"^{_OBJECT}(?: (and|{'|'.join(_PHRASE)}) {_OBJECT})?$")


def parse_prompt(text: str) -> PromptSpec:
    """The PromptSpec of a prompt in the suites' templates ('two red circles', 'a red circle and
    a blue square', 'a red circle to the left of a blue square'); anything else raises."""
    m = _PROMPT.match(" ".join(text.lower().split()))
    if m is None:
        raise ConfigError(f"prompt {text!r} is not one the evaluator can score; use the suite "
                          "templates, e.g. 'two red circles', 'a red circle and a blue square', "
                          "'a red circle to the left of a blue square'")
    n1, c1, s1, link, n2, c2, s2 = m.groups()
    objects = [ObjectSpec(_SINGULAR[s1], c1, _WORD[n1])]
    if link is None:
        category = "single" if objects[0].count == 1 else "counting"
        return PromptSpec(text, category, tuple(objects))
    objects.append(ObjectSpec(_SINGULAR[s2], c2, _WORD[n2]))
    relation = _PHRASE.get(link)
    return PromptSpec(text, "binding" if relation is None else "spatial", tuple(objects),
                      relation)


def requirement_scores(verdict: PromptVerdict) -> np.ndarray:
    """(len(REQUIREMENTS),) scores in [0, 1]; NaN for a requirement the prompt does not state
    (the relation of a prompt without one)."""
    objs = verdict.objects
    relation = np.nan if verdict.relation is None else float(verdict.relation)
    return np.array([np.mean([o.present for o in objs]), np.mean([o.color for o in objs]),
                     np.mean([o.count for o in objs]), relation, float(verdict.passed)],
                    np.float32)


def reward_from_scores(scores: np.ndarray) -> np.ndarray:
    """(..., R) requirement scores (NaN: not applicable) -> (...,) reward: their mean."""
    return np.nanmean(scores, axis=-1)


def score_specs(image: np.ndarray, specs: Sequence[PromptSpec]) -> np.ndarray:
    """(len(specs), R) requirement scores of one (H, W, 3) uint8 image against several specs
    (the objects are detected once)."""
    seen = inspect(image)
    return np.stack([requirement_scores(replace(check(seen.detections, s),
                                                quality=seen.quality_ok)) for s in specs])


def evaluator_scores(images: np.ndarray | Tensor, specs: Sequence[PromptSpec]) -> np.ndarray:
    """(N, R) requirement scores of images (uint8 (N, H, W, 3) or float [-1, 1] (N, 3, H, W))
    against specs[i]."""
    images = to_uint8_images(images)
    if len(images) != len(specs):
        raise ValueError(f"{len(images)} images but {len(specs)} specs")
    return np.stack([score_specs(img, [s])[0] for img, s in zip(images, specs, strict=True)])


def evaluator_reward(images: np.ndarray | Tensor, specs: Sequence[PromptSpec]) -> np.ndarray:
    """(N,) evaluator reward in [0, 1] (1 iff the image passes) of images against specs[i]."""
    return reward_from_scores(evaluator_scores(images, specs))
