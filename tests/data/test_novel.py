"""Novel concepts (star, heart, pink): kept out of the world, drawn by the renderer, suites and
concept image sets."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys

import numpy as np
import pytest

from difflab.config import ConfigError
from difflab.data.captions import a_noun
from difflab.data.concepts import CONCEPTS, concept_images
from difflab.data.shapes import (
    Scene,
    SceneObject,
    _box,
    _polygon,
    load_suite,
    render,
    render_spec,
    shape_sdf,
)
from difflab.data.shapes_dataset import ShapesConfig, ShapesDataset
from difflab.data.suites import (
    NOVEL_SUITES,
    SUITES,
    TEMPLATE_SUITES,
    expand_suite,
    suite_seeds,
)
from difflab.data.world import (
    ALL_COLORS,
    ALL_SHAPES,
    BACKGROUND,
    COLORS,
    NOVEL_COLORS,
    NOVEL_SHAPES,
    PLURALS,
    SHAPES,
    SIZES,
    ObjectSpec,
    PromptSpec,
)
from difflab.eval import shapeeval
from difflab.text.learned import world_vocabulary

NOVEL_WORDS = set(NOVEL_SHAPES) | set(NOVEL_COLORS)


def _names(spec: PromptSpec) -> set[str | None]:
    return {x for o in spec.objects for x in (o.shape, o.color)}


def test_novel_vocabulary_stays_out_of_the_world():
    assert not set(NOVEL_SHAPES) & set(SHAPES) and not set(NOVEL_COLORS) & set(COLORS)
    assert ALL_SHAPES == SHAPES + NOVEL_SHAPES and ALL_COLORS == {**COLORS, **NOVEL_COLORS}
    assert all(PLURALS[s] == s + "s" for s in NOVEL_SHAPES)
    vocab = world_vocabulary()  # the learned text encoder's ids must not move
    assert not NOVEL_WORDS & set(vocab) and not {PLURALS[s] for s in NOVEL_SHAPES} & set(vocab)


def test_pink_is_beyond_twice_the_evaluator_tolerance_from_every_colour():
    tol = inspect.signature(shapeeval.inspect).parameters["tol"].default
    for rgb in NOVEL_COLORS.values():
        for other in [*COLORS.values(), BACKGROUND]:
            assert np.linalg.norm(np.subtract(rgb, other)) > 2 * tol, other


def test_polygon_distance_is_exact_on_a_square():
    px = np.linspace(-3, 3, 61)[None, :]
    py = np.linspace(-3, 3, 61)[:, None]
    square = [(-1.5, -1.5), (1.5, -1.5), (1.5, 1.5), (-1.5, 1.5)]
    np.testing.assert_allclose(_polygon(px, py, square), _box(px, py, 1.5, 1.5), atol=1e-9)


@pytest.mark.parametrize("shape", NOVEL_SHAPES)
@pytest.mark.parametrize("size", [32, 128])
@pytest.mark.parametrize("size_name", list(SIZES))
def test_novel_shapes_fill_their_box_in_their_colour(shape, size, size_name):
    o = SceneObject(shape, "pink", size_name, size / 2 + 0.3, size / 2 - 0.2, size)
    img = render(Scene(size, (o,))).astype(float)
    alpha = (img - BACKGROUND) / np.subtract(ALL_COLORS["pink"], BACKGROUND)  # (H, W, 3)
    assert np.allclose(alpha, alpha[..., :1], atol=0.02)  # every pixel is a blend with pink
    ys, xs = np.nonzero(alpha[..., 0] > 0.01)
    x0, y0, x1, y1 = o.bbox
    # Drawn inside the box, and touching all four of its sides (to the pixel).
    assert x0 - 1 <= xs.min() <= x0 + 1 and x1 - 1 <= xs.max() + 1 <= x1 + 1
    assert y0 - 1 <= ys.min() <= y0 + 1 and y1 - 1 <= ys.max() + 1 <= y1 + 1
    area = alpha[..., 0].sum() / o.side**2  # the share of the box the shape fills
    assert 0.3 < area < 0.95


def test_star_points_up_and_heart_points_down():
    u = np.linspace(-1.2, 1.2, 241)[None, :]
    star = shape_sdf("star", u, np.array([[-0.98]]), 1.0)[0]  # a row just under the top
    assert np.all(star[np.abs(u[0]) > 0.05] > 0) and star[120] < 0  # only the apex is inside
    heart = shape_sdf("heart", u, np.array([[0.98]]), 1.0)[0]  # a row just above the bottom
    assert np.all(heart[np.abs(u[0]) > 0.05] > 0) and heart[120] < 0  # only the tip
    assert shape_sdf("heart", np.array(0.0), np.array(-0.8), 1.0) > 0  # the notch between lobes
    with pytest.raises(ValueError, match="moon"):
        shape_sdf("moon", u, u, 1.0)


def test_training_draws_never_show_a_novel_concept():
    for cfg in (ShapesConfig(size=16, length=400), ShapesConfig(size=16, exclude_heldout=False)):
        ds = ShapesDataset(cfg)
        for i in range(300):
            s = ds.sample(i)
            assert all(o.shape in SHAPES and o.color in COLORS for o in s.scene.objects)
            assert not NOVEL_WORDS & set(s.caption.replace(",", " ").split())


def test_render_spec_draws_free_attributes_from_the_world_only():
    star = PromptSpec("a star", "x", (ObjectSpec("star", None),))
    pink = PromptSpec("two pink things", "x", (ObjectSpec(None, "pink", 2),))
    for seed in range(40):
        (o,) = render_spec(star, 32, seed)[1].objects
        assert o.shape == "star" and o.color in COLORS
        scene = render_spec(pink, 32, seed)[1]
        assert all(o.color == "pink" and o.shape in SHAPES for o in scene.objects)


def test_novel_suites_ask_for_novel_concepts_and_stay_out_of_all():
    base = [p for name in TEMPLATE_SUITES + ("all", "reworded") for p in load_suite(name)]
    assert not any(_names(p) & NOVEL_WORDS for p in base)
    assert all(p.seed < 6000 for p in base)
    assert len(load_suite("all")) == sum(len(load_suite(n)) for n in TEMPLATE_SUITES)
    novel = {name: load_suite(name) for name in NOVEL_SUITES}
    assert set(NOVEL_SUITES) <= set(SUITES)
    assert {p.text for p in novel["novel-shape"]} == {a_noun(s, c) for s in NOVEL_SHAPES
                                                        for c in COLORS}
    assert {p.text for p in novel["novel-color"]} == {f"a pink {s}" for s in SHAPES}
    assert {"a pink star", "a pink heart"} <= {p.text for p in novel["novel-both"]}
    for specs in novel.values():
        assert all(_names(p) & NOVEL_WORDS for p in specs)
    seeds = [p.seed for specs in novel.values() for p in specs] + [p.seed for p in
                                                                   load_suite("all")]
    assert len(set(seeds)) == len(seeds)


def test_novel_suites_expand_like_template_suites_and_render_exactly():
    specs = load_suite("novel-both")
    dev = {s for p in specs for s in suite_seeds(p, 3)}
    test = {s for p in specs for s in suite_seeds(p, 3, split="test")}
    assert not dev & test
    expanded, seeds = expand_suite(specs, 2, split="test")
    assert len(expanded) == len(seeds) == 2 * len(specs)
    for spec, seed in zip(expanded, seeds, strict=True):
        scene = render_spec(spec, 32, seed)[1]
        truth = shapeeval.check(shapeeval.scene_detections(scene), spec)
        assert truth.passed, spec.text


def test_novel_suites_do_not_depend_on_hash_seed():
    code = ("from difflab.data.suites import load_suite, NOVEL_SUITES; "
            "print(repr([load_suite(n) for n in NOVEL_SUITES]))")
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True, env={**os.environ, "PYTHONHASHSEED": seed}).stdout
            for seed in ("1", "2")}
    assert len(outs) == 1


@pytest.mark.parametrize("concept", CONCEPTS)
def test_concept_images_show_the_concept_and_are_deterministic(concept):
    images, captions = concept_images(concept, 9, size=32, seed=3)
    again, captions_again = concept_images(concept, 9, size=32, seed=3)
    assert images.shape == (9, 32, 32, 3) and images.dtype == np.uint8
    assert np.array_equal(images, again) and captions == captions_again
    assert not np.array_equal(images, concept_images(concept, 9, size=32, seed=4)[0])
    assert all(concept in c.split() for c in captions)
    # Captions in the training form, naming the one object each image shows.
    known = {a_noun(s, c): (s, c) for s in ALL_SHAPES for c in ALL_COLORS}
    for img, caption in zip(images, captions, strict=True):
        shape, color = known[caption]
        assert (shape in SHAPES) or (color in COLORS)  # the other attribute is the world's
        (det,) = shapeeval.detect(img, vocabulary="extended")
        assert (det.shape, det.color) == (shape, color)
    assert len(set(captions)) >= 6  # varied world colours / shapes


@pytest.mark.parametrize("concept", CONCEPTS)
def test_largest_first_draws_every_kind_large_before_any_twice(concept):
    """sizes largest-first: the captions are the random draw's; each kind is drawn smaller on
    the second pass over the concept's kinds than on the first, and is still detected."""
    images, captions = concept_images(concept, 14, seed=3, sizes="largest-first")
    assert captions == concept_images(concept, 14, seed=3)[1]
    kinds = len(set(captions))
    area = [int((np.abs(im.astype(int) - im[0, 0].astype(int)).sum(-1) > 30).sum())
            for im in images]
    assert all(area[i] < area[i - kinds] for i in range(kinds, 14))  # same kind, smaller
    for img, caption in zip(images, captions, strict=True):
        (det,) = shapeeval.detect(img, vocabulary="extended")
        assert a_noun(det.shape, det.color) == caption
    with pytest.raises(ConfigError, match="unknown object sizes 'huge'"):
        concept_images(concept, 4, sizes="huge")


def test_concept_images_reject_bad_arguments():
    with pytest.raises(ConfigError, match="unknown concept 'moon'; valid: star, heart, pink"):
        concept_images("moon", 4)
    with pytest.raises(ConfigError, match="n = 0"):
        concept_images("star", 0)
    with pytest.raises(ConfigError, match="size 33"):
        concept_images("pink", 4, size=33)
