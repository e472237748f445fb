"""Unknown words: the made-up-word caption augmentation and the unknown-word probe prompts."""

from __future__ import annotations

import re

import numpy as np
import pytest

from difflab.config import ConfigError
from difflab.data.captions import TEMPLATE_WORDS
from difflab.data.paraphrase import (
    UNKNOWN_SLOTS,
    UNKNOWN_WORDS,
    half_words,
    unknown_word_caption,
    unknown_word_prompts,
)
from difflab.data.shapes import render_spec
from difflab.data.shapes_dataset import ShapesConfig, ShapesDataset
from difflab.data.suites import load_suite
from difflab.data.world import ALL_COLORS, ALL_SHAPES, NUMBERS, PLURALS, SIZES
from difflab.eval.shapeeval import score

KNOWN = (set(TEMPLATE_WORDS) | set(ALL_SHAPES) | set(PLURALS.values()) | set(ALL_COLORS)
         | set(SIZES) | set(NUMBERS.values()) | half_words("train") | half_words("test"))
KINDS = ("single", "relation", "count")


def test_unknown_words_are_outside_every_vocabulary():
    assert len(set(UNKNOWN_WORDS)) == len(UNKNOWN_WORDS)
    assert not set(UNKNOWN_WORDS) & KNOWN


@pytest.mark.parametrize("seed", range(20))
def test_unknown_word_caption_adds_or_swaps_exactly_one_word(seed):
    rng = np.random.default_rng(seed)
    caption = "a red circle to the left of two blue squares"
    out = unknown_word_caption(rng, caption).split()
    before = caption.split()
    new = [w for w in out if w not in KNOWN]
    assert len(new) == 1 and re.fullmatch(r"[a-z]{4,8}", new[0])
    rest = [w for w in out if w != new[0]]
    # Inserted: every old word kept; swapped: one old word gone (articles may change a/an).
    if len(out) == len(before) + 1:
        assert [w for w in rest if w not in ("a", "an")] == [
            w for w in before if w not in ("a", "an")]
    else:
        assert len(out) == len(before) and len(set(before) - set(rest)) <= 2


def test_unknown_words_option_changes_captions_only():
    base = ShapesConfig(size=16, kinds=KINDS, length=200)
    plain, zero = ShapesDataset(base), ShapesDataset(ShapesConfig(**{
        **base.__dict__, "unknown_words": 0.0}))
    noisy = ShapesDataset(ShapesConfig(**{**base.__dict__, "unknown_words": 1.0}))
    for i in range(60):
        a, b, c = plain.sample(i), zero.sample(i), noisy.sample(i)
        assert a.caption == b.caption and np.array_equal(a.image, c.image)
        assert len([w for w in re.findall(r"[a-z]+", c.caption) if w not in KNOWN]) >= 1
        assert a.caption != c.caption


@pytest.mark.parametrize("value", [-0.1, 1.5])
def test_unknown_words_option_rejects_bad_probability(value):
    with pytest.raises(ConfigError, match="unknown_words"):
        ShapesConfig(unknown_words=value)


def test_unknown_word_prompts_keep_the_rest_of_the_single_prompt():
    singles = load_suite("single")
    probes = unknown_word_prompts("test")
    assert len(probes) == len(UNKNOWN_SLOTS) * len(singles)
    assert [p.category for p in probes[:3]] == list(UNKNOWN_SLOTS)
    for i, p in enumerate(probes):
        base = singles[i // len(UNKNOWN_SLOTS)]
        ((shape, color),) = [(o.shape, o.color) for o in base.objects]
        words = p.text.split()
        assert p.seed == base.seed and sum(w in UNKNOWN_WORDS for w in words) == 1
        (want,) = p.objects
        assert (want.shape in (None, shape)) and (want.color in (None, color))
        assert (want.shape is None) == (shape not in words)
        assert (want.color is None) == (color not in words)
    with pytest.raises(ConfigError, match="split"):
        unknown_word_prompts("train")


def test_a_render_of_the_template_scene_passes_its_unknown_word_prompt():
    singles = load_suite("single")
    for p in unknown_word_prompts()[:: 7]:
        base = singles[[s.seed for s in singles].index(p.seed)]
        image, _ = render_spec(base, 32, seed=p.seed)
        assert score(image, p).passed, p.text
        blank = np.full_like(image, 20)
        assert not score(blank, p).passed and not score(blank, p).detections
