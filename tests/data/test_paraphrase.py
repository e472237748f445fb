"""Paraphrase halves, caption augmentation, the reworded suite and the dev/test splits."""

from __future__ import annotations

import re

import pytest

from difflab.config import ConfigError
from difflab.data.captions import TEMPLATE_WORDS
from difflab.data.paraphrase import (
    COLOR_WORDS,
    SHAPE_WORDS,
    half_words,
    paraphrase_caption,
)
from difflab.data.shapes_dataset import ShapesConfig, ShapesDataset
from difflab.data.suites import (
    SEED_STRIDE,
    TEST_FIRST_IMAGE,
    expand_suite,
    load_suite,
    suite_seeds,
)
from difflab.data.world import COLORS, NUMBERS, PLURALS, SHAPES, SIZES

TEMPLATE_VOCAB = (set(TEMPLATE_WORDS) | set(SHAPES) | set(PLURALS.values()) | set(COLORS)
                  | set(SIZES) | set(NUMBERS.values()) | {"1", "2", "3", "4", "one"})
TRAIN_NEW = half_words("train") - TEMPLATE_VOCAB
TEST_NEW = half_words("test") - TEMPLATE_VOCAB


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text))


def test_halves_introduce_disjoint_new_words():
    assert TRAIN_NEW and TEST_NEW
    assert not TRAIN_NEW & TEST_NEW
    # Every colour and shape has a new word in each half.
    for table in (COLOR_WORDS, SHAPE_WORDS):
        for train, test in table.values():
            assert words(str(train)) & TRAIN_NEW and words(str(test)) & TEST_NEW


def test_training_captions_never_use_test_words():
    ds = ShapesDataset(ShapesConfig(size=16, paraphrase=True, length=3000))
    caps = [ds.sample(i).caption for i in range(1500)]
    used = set().union(*(words(c) for c in caps))
    assert not used & TEST_NEW
    assert len(used & TRAIN_NEW) > 0.8 * len(TRAIN_NEW)  # the train half is really used
    assert not any(re.search(r"\ban [^aeiou]|\ba [aeiou]", c) for c in caps), "articles"


def test_paraphrase_off_keeps_template_vocabulary_and_binding_form_needs_it():
    binding = re.compile(r"^an? \w+ \w+ and an? \w+ \w+$")
    kinds = ("relation",)
    plain = ShapesDataset(ShapesConfig(size=16, kinds=kinds, max_objects=2))
    caps = [plain.sample(i).caption for i in range(400)]
    assert set().union(*(words(c) for c in caps)) <= TEMPLATE_VOCAB
    assert not any(binding.match(c) for c in caps)
    para = ShapesDataset(ShapesConfig(size=16, kinds=kinds, max_objects=2, paraphrase=True))
    assert any(binding.match(para.sample(i).caption) for i in range(400))


def test_paraphrase_caption_rewrites_each_word_kind():
    import numpy as np

    rng = np.random.default_rng(0)
    out = paraphrase_caption(rng, "an orange ring to the left of three red circles",
                             p_word=1.0, p_frame=0.0)
    assert out == "a tangerine donut on the left of a trio of crimson discs"


@pytest.mark.parametrize("category,half", [("reworded_seen", "train"),
                                           ("reworded_unseen", "test")])
def test_reworded_suite_words_and_scenes(category, half):
    suite = [p for p in load_suite("reworded") if p.category == category]
    bases = [p for n in ("single", "binding", "counting", "spatial") for p in load_suite(n)]
    assert len(suite) == len(bases)
    own, other = (TRAIN_NEW, TEST_NEW) if half == "train" else (TEST_NEW, TRAIN_NEW)
    for p, base in zip(suite, bases, strict=True):
        assert (p.objects, p.relation, p.seed) == (base.objects, base.relation, base.seed)
        w = words(p.text)
        assert w & own and not w & other, p.text
        assert p.text != base.text
        for o in p.objects:  # each object's colour and shape is named, in some wording
            h = 0 if half == "train" else 1
            assert w & {o.color, COLOR_WORDS[o.color][h]}, p.text
            names = {o.shape, PLURALS[o.shape], *words(" ".join(SHAPE_WORDS[o.shape][h]))}
            assert w & names, p.text


def test_splits_have_disjoint_seeds():
    spec = load_suite("single")[0]
    dev = suite_seeds(spec, 5)
    test = suite_seeds(spec, 5, split="test")
    assert dev == [spec.seed + k * SEED_STRIDE for k in range(5)]
    assert test == [spec.seed + (TEST_FIRST_IMAGE + k) * SEED_STRIDE for k in range(5)]
    all_dev = {s for p in load_suite("all") for s in suite_seeds(p, 3)}
    all_test = {s for p in load_suite("all") for s in suite_seeds(p, 3, split="test")}
    assert not all_dev & all_test
    with pytest.raises(ConfigError, match="test split"):
        suite_seeds(spec, 2, first=TEST_FIRST_IMAGE - 1)
    with pytest.raises(ConfigError, match="valid: dev, test"):
        suite_seeds(spec, 1, split="train")
    specs, seeds = expand_suite(load_suite("reworded")[:3], 2, split="test")
    assert len(specs) == len(seeds) == 6
