"""The strict evaluator on hard negatives: near misses fail, true renders still pass."""

from __future__ import annotations

import numpy as np
import pytest

from difflab.data.shapes import load_suite, render_spec
from difflab.eval.features import add_gaussian_noise, gaussian_blur
from difflab.eval.hard_negatives import HARD_NEGATIVES, precision_recall
from difflab.eval.shapeeval import STRICT_SHAPE_IOU, inspect, score

SPECS = load_suite("all")[::4]  # 57 prompts of every category


def _seed(spec) -> int:
    return spec.seed * 1000 + 11


@pytest.mark.parametrize("size", [32, 64])
def test_true_renders_pass_the_strict_evaluator(size):
    for spec in SPECS:
        img = render_spec(spec, size, _seed(spec))[0]
        noisy = add_gaussian_noise(img[None], 8 / 255, seed=1)[0]
        blurred = gaussian_blur(img[None], 0.5 * size / 32)[0]
        for variant in (img, noisy, blurred):
            verdict = score(variant, spec)
            assert verdict.passed and verdict.quality, (spec.text, size)


# The least share of each kind the strict evaluator must reject at 32 px. A bitten triangle
# loses only its thin apex's right half, so near misses are caught for five shapes of six.
REJECT_AT_LEAST = {"near_miss_shape": 0.75, "stretched_shape": 0.85, "off_by_one_count": 1.0,
                   "swapped_colors": 1.0, "wrong_relation": 1.0, "off_palette_garbage": 1.0,
                   "palette_debris": 1.0, "merged_objects": 1.0}


@pytest.mark.parametrize("kind", list(HARD_NEGATIVES))
def test_hard_negatives_fail(kind):
    assert set(REJECT_AT_LEAST) == set(HARD_NEGATIVES)
    made = [(spec, HARD_NEGATIVES[kind](spec, 32, _seed(spec))) for spec in load_suite("all")]
    made = [(s, img) for s, img in made if img is not None][:60]
    assert made, kind
    rejected = np.mean([not score(img, spec).passed for spec, img in made])
    assert rejected >= REJECT_AT_LEAST[kind], (kind, rejected)


def test_lenient_evaluator_misses_what_the_quality_flag_catches():
    spec = load_suite("single")[0]
    for kind in ("off_palette_garbage", "palette_debris"):
        img = HARD_NEGATIVES[kind](spec, 32, _seed(spec))
        assert score(img, spec, strict=False).passed  # the old evaluator's blind spot
        assert not score(img, spec).passed and score(img, spec).quality is False
    seen = inspect(HARD_NEGATIVES["off_palette_garbage"](spec, 32, _seed(spec)))
    assert seen.off_palette >= seen.min_area and seen.debris < seen.min_area
    bitten = inspect(HARD_NEGATIVES["near_miss_shape"](spec, 32, _seed(spec)))
    assert bitten.detections[0].shape_iou < STRICT_SHAPE_IOU


def test_precision_recall_counts():
    rows = [("a", True, True), ("a", True, False), ("b", False, True), ("b", False, False)]
    assert precision_recall(rows) == {"precision": 0.5, "recall": 0.5, "tp": 1, "fp": 1, "fn": 1}
