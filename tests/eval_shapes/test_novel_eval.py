"""The evaluator's vocabularies: "world" unchanged, "extended" scores the novel concepts."""

from __future__ import annotations

import numpy as np
import pytest

from difflab.config import ConfigError
from difflab.data.captions import a_noun
from difflab.data.shapes import load_suite, render_spec
from difflab.data.suites import NOVEL_SUITES, TEMPLATE_SUITES
from difflab.data.world import ALL_COLORS, ALL_SHAPES, NOVEL_SHAPES, ObjectSpec, PromptSpec
from difflab.eval.features import add_gaussian_noise
from difflab.eval.novel_validation import concept_validation_specs, validate_concepts
from difflab.eval.shapeeval import (
    VOCABULARIES,
    detect,
    evaluate,
    inspect,
    score,
    specs_vocabulary,
)

WORLD_SPECS = load_suite("all")[::6]  # 38 prompts of every category


def _single(shape: str, color: str) -> PromptSpec:
    return PromptSpec(a_noun(shape, color), "single", (ObjectSpec(shape, color),))


@pytest.mark.parametrize("size", [64])  # 32 px: test_concept_validation_...
def test_extended_detects_every_shape_and_colour_alone(size):
    for i, (shape, color) in enumerate((s, c) for s in ALL_SHAPES for c in ALL_COLORS):
        img = render_spec(_single(shape, color), size, seed=i)[0]
        (det,) = detect(img, vocabulary="extended")
        assert (det.shape, det.color) == (shape, color)
        assert score(img, _single(shape, color), vocabulary="extended").passed


@pytest.mark.parametrize("shape", NOVEL_SHAPES)
def test_novel_shapes_are_told_apart_from_round_and_pointed_shapes(shape):
    for seed in range(6):  # seeds vary the size: small objects are 7 px wide at 32 px
        img = render_spec(_single(shape, "red"), 32, seed=seed)[0]
        for other in ("circle", "diamond", "triangle", "square"):
            assert not score(img, _single(other, "red"), vocabulary="extended").passed


def test_default_vocabulary_is_the_world_and_unchanged_by_the_extension():
    assert VOCABULARIES["world"].shapes == ("circle", "square", "triangle", "diamond", "cross",
                                            "ring")
    clean = np.stack([render_spec(s, 32, seed=s.seed)[0] for s in WORLD_SPECS])
    noisy = add_gaussian_noise(clean, 0.06, seed=0)
    for images in (clean, noisy):
        default = evaluate(images, WORLD_SPECS)
        world = evaluate(images, WORLD_SPECS, vocabulary="world")
        extended = evaluate(images, WORLD_SPECS, vocabulary="extended")
        assert default.prompts == world.prompts  # the same detections and verdicts
        # The extension names no world object a star, a heart or pink.
        assert [v.passed for v in extended.prompts] == [v.passed for v in world.prompts]
        for a, b in zip(world.prompts, extended.prompts, strict=True):
            assert [(d.shape, d.color) for d in a.detections] == [
                (d.shape, d.color) for d in b.detections]


def test_world_vocabulary_cannot_name_novel_concepts():
    img = render_spec(_single("star", "pink"), 32, seed=0)[0]
    assert all(d.shape != "star" and d.color != "pink" for d in detect(img))
    assert not score(img, _single("star", "pink")).passed  # the world evaluator fails it


def test_unknown_vocabulary_is_a_user_error():
    img = render_spec(_single("circle", "red"), 32, seed=0)[0]
    for call in (lambda: inspect(img, vocabulary="novel"),
                 lambda: evaluate(img[None], [_single("circle", "red")], vocabulary="novel")):
        with pytest.raises(ConfigError, match="'novel'; valid: world, extended"):
            call()


def test_specs_vocabulary_is_extended_exactly_for_novel_suites():
    for name in NOVEL_SUITES:
        assert specs_vocabulary(load_suite(name)) == "extended"
    for name in (*TEMPLATE_SUITES, "all", "reworded"):
        assert specs_vocabulary(load_suite(name)) == "world"


def test_concept_validation_covers_every_concept_and_passes_at_32px():
    singles, pairs = concept_validation_specs()
    assert {(s.objects[0].shape, s.objects[0].color) for s in singles} == {
        (s, c) for s in ALL_SHAPES for c in ALL_COLORS}
    assert all(len(p.objects) == 2 for p in pairs) and len(pairs) == 20
    table = validate_concepts(32, n_seeds=1)["table"]
    assert set(table["shapes"]) == set(ALL_SHAPES) and set(table["colors"]) == set(ALL_COLORS)
    for row in [*table["shapes"].values(), *table["colors"].values(), table["pairs"]]:
        assert row["clean"] == 1.0 and row["noise"] == 1.0
    assert all(row["reject"] == 1.0 for row in table["shapes"].values())


def test_eval_of_a_novel_suite_records_the_extended_vocabulary(tiny_pipeline):
    from difflab.evaluate import evaluate_suite
    from difflab.runtime import sample_config

    result = evaluate_suite(tiny_pipeline, "novel-color", sample_config({"steps": 1}),
                            progress=False)
    assert result.vocabulary == "extended" and result.metrics()["vocabulary"] == "extended"
    assert len(result.report.prompts) == len(load_suite("novel-color"))
