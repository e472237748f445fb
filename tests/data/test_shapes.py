"""Shapes world: rendering, render_spec, suites, training sampler and held-out exclusion."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys

import numpy as np
import pytest

from difflab.data.shapes import (
    HELDOUT_PAIRS,
    SUITES,
    Scene,
    SceneObject,
    load_suite,
    place_objects,
    relation_holds,
    render,
    render_spec,
)
from difflab.data.shapes_dataset import ShapesConfig, ShapesDataset, sample_scene
from difflab.data.suites import TEMPLATE_SUITES
from difflab.data.world import BACKGROUND, COLORS, RELATIONS, SHAPES, SIZES, ObjectSpec, PromptSpec
from difflab.registry import UnknownNameError


def _colour_votes(pixels: np.ndarray) -> np.ndarray:
    """Votes per colour of COLORS: each pixel votes, weighted by its contrast to the
    background, for the colour whose direction from the background it lies along (so
    anti-aliased edge pixels, which are blends with the background, vote correctly)."""
    bg = np.array(BACKGROUND, np.float32)
    d = pixels.astype(np.float32) - bg  # (N, 3)
    dirs = np.array(list(COLORS.values()), np.float32) - bg  # (C, 3)
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    strength = np.linalg.norm(d, axis=1)
    best = (d @ dirs.T / np.maximum(strength[:, None], 1e-6)).argmax(1)
    return np.bincount(best, weights=strength, minlength=len(COLORS))


@pytest.mark.parametrize("size", [16, 32, 64])
@pytest.mark.parametrize("size_name", list(SIZES))
def test_every_shape_and_colour_renders_inside_with_its_colour(size, size_name):
    for (shape, colour) in itertools.product(SHAPES, COLORS):
        obj = SceneObject(shape, colour, size_name, size / 2, size / 2, size)
        img = render(Scene(size, (obj,)))
        assert img.shape == (size, size, 3) and img.dtype == np.uint8
        x0, y0, x1, y1 = obj.bbox
        ys, xs = np.nonzero((img != BACKGROUND).any(-1))
        # Anti-aliasing may touch the pixel that straddles the bbox edge, no further.
        assert xs.min() >= np.floor(x0) and xs.max() <= np.ceil(x1) - 1
        assert ys.min() >= np.floor(y0) and ys.max() <= np.ceil(y1) - 1
        votes = _colour_votes(img[ys, xs])
        assert votes.argmax() == list(COLORS).index(colour), (shape, colour)
        assert votes.max() > 0.8 * votes.sum(), (shape, colour)


def test_render_is_deterministic_and_seeds_differ():
    cfg = ShapesConfig()
    a = sample_scene(np.random.default_rng(3), cfg)
    b = sample_scene(np.random.default_rng(3), cfg)
    c = sample_scene(np.random.default_rng(4), cfg)
    assert a == b and np.array_equal(render(a[0]), render(b[0]))
    assert not np.array_equal(render(a[0]), render(c[0]))
    ds = ShapesDataset(cfg)
    assert np.array_equal(ds.sample(7).image, ds.sample(7).image)
    assert not np.array_equal(ds.sample(7).image, ds.sample(8).image)


def test_objects_never_overlap_and_stay_inside():
    ds = ShapesDataset(ShapesConfig(size=32, kinds=("count", "multi")))
    for i in range(300):
        scene = ds.sample(i).scene
        for o in scene.objects:
            x0, y0, x1, y1 = o.bbox
            assert x0 >= 0 and y0 >= 0 and x1 <= 32 and y1 <= 32
        for a, b in itertools.combinations(scene.objects, 2):
            ax0, ay0, ax1, ay1 = a.bbox
            bx0, by0, bx1, by1 = b.bbox
            assert ax1 < bx0 or bx1 < ax0 or ay1 < by0 or by1 < ay0, (a, b)


def test_render_spec_satisfies_every_suite_prompt():
    for spec in load_suite("all"):
        img, scene = render_spec(spec, size=32, seed=spec.seed)
        assert img.shape == (32, 32, 3)
        assert len(scene.objects) == sum(o.count for o in spec.objects)
        for req in spec.objects:
            assert scene.count(req.shape, req.color) == req.count, spec.text
        if spec.relation:
            a = [o for o in scene.objects if (o.shape, o.color) == (spec.objects[0].shape,
                                                                     spec.objects[0].color)]
            b = [o for o in scene.objects if (o.shape, o.color) == (spec.objects[1].shape,
                                                                     spec.objects[1].color)]
            assert all(relation_holds(p, q, spec.relation) for p in a for q in b), spec.text


def test_render_spec_with_any_attribute_keeps_counts_exact():
    spec = PromptSpec("three red things and a circle", "custom",
                      (ObjectSpec(None, "red", 3), ObjectSpec("circle", None, 1)))
    for seed in range(20):
        _, scene = render_spec(spec, size=64, seed=seed)
        assert scene.count(color="red") == 3 and scene.count(shape="circle") == 1
    ambiguous = PromptSpec("x", "custom", (ObjectSpec(None, "red"), ObjectSpec("circle", "red")))
    with pytest.raises(ValueError, match="cannot be told apart"):
        render_spec(ambiguous)


def test_relation_holds_reads_image_coordinates():
    a = SceneObject("circle", "red", "small", 5, 16, 32)
    b = SceneObject("square", "blue", "small", 25, 16, 32)
    assert relation_holds(a, b, "left of") and relation_holds(b, a, "right of")
    assert not relation_holds(a, b, "above") and not relation_holds(a, b, "below")
    top = SceneObject("ring", "white", "small", 2, 12, 32)  # y grows downwards
    assert relation_holds(top, b, "above") is False  # dx dominates here
    assert relation_holds(top, SceneObject("ring", "red", "small", 16, 28, 32), "above")
    with pytest.raises(ValueError, match="valid"):
        relation_holds(a, b, "behind")


def test_place_objects_relation_for_every_relation():
    rng = np.random.default_rng(0)
    for rel in RELATIONS:
        kinds = [("circle", "red", "medium"), ("square", "blue", "medium")]
        scene = place_objects(rng, kinds, 32, [0, 1], rel)
        assert relation_holds(scene.objects[0], scene.objects[1], rel)


def test_suites_are_stable_sized_and_seeded():
    sizes = {name: len(load_suite(name)) for name in SUITES}
    assert sizes["all"] == sum(sizes[k] for k in TEMPLATE_SUITES) <= 400
    assert load_suite("all") == load_suite("all")
    seeds = [p.seed for p in load_suite("all")]
    assert len(set(seeds)) == len(seeds)
    heldout = load_suite("heldout")
    assert all(any((o.shape, o.color) in HELDOUT_PAIRS for o in p.objects) for p in heldout)
    others = [p for p in load_suite("all") if p.category != "heldout"]
    assert not any((o.shape, o.color) in HELDOUT_PAIRS for p in others for o in p.objects)
    with pytest.raises(UnknownNameError, match="single"):
        load_suite("nope")


def test_suites_do_not_depend_on_hash_seed():
    code = "from difflab.data.shapes import load_suite; print(repr(load_suite('all')))"
    outs = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       env={**os.environ, "PYTHONHASHSEED": seed}).stdout
        for seed in ("1", "2")
    }
    assert len(outs) == 1 and repr(load_suite("all")) in outs.pop()


def test_heldout_pairs_never_sampled_for_training():
    ds = ShapesDataset(ShapesConfig(size=16, length=3000))
    seen = {(o.shape, o.color) for i in range(3000) for o in ds.sample(i).scene.objects}
    assert not seen & HELDOUT_PAIRS
    assert len(seen) == len(SHAPES) * len(COLORS) - len(HELDOUT_PAIRS)
    ds_all = ShapesDataset(ShapesConfig(size=16, length=3000, exclude_heldout=False))
    seen_all = {(o.shape, o.color) for i in range(3000) for o in ds_all.sample(i).scene.objects}
    assert HELDOUT_PAIRS <= seen_all
