"""The world's boxes and masks, the layout suite, the layout evaluator and the layout schema."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from difflab.config import ConfigError
from difflab.control.layout import (
    MAX_BOXES,
    Layout,
    draw_boxes,
    layout_map,
    layout_scene,
    parse_layout,
    plan_layout,
    read_layout,
)
from difflab.data.shapes import object_masks, relation_holds, render, render_spec
from difflab.data.suites import load_layouts, load_suite, suite_seeds
from difflab.data.world import BACKGROUND, COLORS
from difflab.eval.shapeeval import box_iou, score, score_layout

PROMPT = "a red circle to the left of a blue square"


def _layout(lp) -> Layout:
    return Layout(lp.spec.text, lp.phrases, lp.boxes)


def test_layout_suite_boxes_fit_and_agree_with_the_relation():
    layouts = load_layouts()
    assert len(layouts) == len(load_suite("layout")) == 64
    for lp in layouts:
        assert len(lp.boxes) == len(lp.spec.objects) == len(lp.phrases) == 2
        assert all(0 <= b[0] < b[2] <= 1 and 0 <= b[1] < b[3] <= 1 for b in lp.boxes)
        assert all(p in lp.spec.text for p in lp.phrases)
        a, b = layout_scene(_layout(lp), 32).objects
        assert relation_holds(a, b, lp.spec.relation, dominance=2.0)
    assert suite_seeds(layouts[0].spec, 1, 0, "test") != suite_seeds(layouts[0].spec, 1, 0)


def test_rendered_ground_truth_has_box_iou_one():
    for lp in load_layouts()[:16]:
        scene = layout_scene(_layout(lp), 32)
        exported = scene.boxes(normalized=True)
        assert [box_iou(e, b) for e, b in zip(exported, lp.boxes, strict=True)] == \
            pytest.approx([1.0, 1.0], abs=1e-12)
        image = render(scene)
        assert score(image, lp.spec).passed
        objects = [(o.shape, o.color) for o in lp.spec.objects]
        placed = score_layout(image, objects, _layout(lp).pixel_boxes(32))
        assert all(p.found and p.box_iou > 0.85 and p.mask_iou > 0.9 for p in placed)


def test_a_misplaced_object_scores_low_box_iou():
    lp = load_layouts()[0]
    scene = layout_scene(_layout(lp), 32)
    swapped = list(reversed(_layout(lp).pixel_boxes(32)))  # each object asked in the other box
    placed = score_layout(render(scene), [(o.shape, o.color) for o in lp.spec.objects], swapped)
    assert all(p.box_iou < 0.3 for p in placed)
    missing = score_layout(np.full((32, 32, 3), BACKGROUND, np.uint8), [("circle", "red")],
                           [(0, 0, 10, 10)])
    assert not missing[0].found and missing[0].box_iou == 0.0


def test_object_masks_cover_exactly_the_drawn_pixels():
    image, scene = render_spec(load_suite("binding")[0], 32, seed=3)
    masks = object_masks(scene)
    assert masks.shape == (2, 32, 32) and not (masks[0] & masks[1]).any()
    for mask, obj in zip(masks, scene.objects, strict=True):
        line = np.array(COLORS[obj.color], float) - BACKGROUND
        alpha = (image.astype(float) - BACKGROUND) @ line / (line @ line)  # coverage (H, W)
        near = np.zeros_like(mask)
        x0, y0, x1, y1 = (int(v) for v in obj.bbox)
        near[max(y0 - 1, 0):y1 + 2, max(x0 - 1, 0):x1 + 2] = True  # this object's window
        assert (alpha[mask] > 0.45).all() and not (near & ~mask & (alpha > 0.55)).any()


def test_layout_map_fills_each_box_with_its_phrase():
    m = layout_map([("circle", "red"), ("square", "blue")], [(0, 0, 0.5, 0.5), (0.5, 0.5, 1, 1)],
                   8)
    assert m[-1].sum() == 32 and m[-1, 0, 0] == 1 and m[-1, 0, 7] == 0
    assert m[3, 0, 0] == 1 and m[4, 7, 7] == 1  # circle one-hot top-left, square bottom-right
    drawn = draw_boxes(np.zeros((8, 8, 3), np.uint8), [(0, 0, 4, 4)], scale=2)
    assert drawn.shape == (16, 16, 3) and drawn[0, 0].all() and not drawn[4, 4].any()


def _data(**changes):
    data = {"prompt": PROMPT, "objects": [{"phrase": "red circle", "box": [0.1, 0.3, 0.4, 0.6]},
                                          {"phrase": "blue square", "box": [0.6, 0.3, 0.9, 0.6]}]}
    return {**data, **changes}


def test_a_valid_layout_parses_and_pixel_layouts_are_rescaled():
    lay = parse_layout(_data(), 32)
    assert lay.phrases == ("red circle", "blue square") and lay.boxes[0] == (0.1, 0.3, 0.4, 0.6)
    px = parse_layout(_data(size=64, objects=[{"phrase": "red circle",
                                               "box": [8, 16, 32, 40]}]), 32)
    assert px.pixel_boxes(32) == [(4.0, 8.0, 16.0, 20.0)]


@pytest.mark.parametrize("data, message", [
    ([1, 2], "must be a JSON object"),
    (_data(extra=1), "unknown keys ['extra']"),
    (_data(prompt=""), "'prompt' must be a non-empty string"),
    (_data(objects=[]), "'objects' must be a non-empty list"),
    (_data(objects=[{"phrase": "red circle", "box": [0.1, 0.3, 1.4, 0.6]}]), "out of range"),
    (_data(objects=[{"phrase": "red circle", "box": [0.5, 0.3, 0.4, 0.6]}]), "out of range"),
    (_data(objects=[{"phrase": "red circle", "box": [0.1, 0.3]}]), "must be [x0, y0, x1, y1]"),
    (_data(objects=[{"phrase": "red circle", "box": [0.1, "a", 0.4, 0.6]}]), "finite number"),
    (_data(objects=[{"phrase": "green ring", "box": [0.1, 0.3, 0.4, 0.6]}]), "not in the prompt"),
    (_data(objects=[{"phrase": "red circle", "box": [0.1, 0.3, 0.4, 0.6]}] * (MAX_BOXES + 1)),
     "at most 4"),
    (_data(objects=[{"phrase": "red circle", "box": [0.1, 0.3, 0.12, 0.6]}]), "smallest"),
    (_data(size=-3), "'size'"),
    (_data(objects=[{"phrase": "red circle"}]), "must be {"),
])
def test_bad_layouts_are_refused_with_one_line(data, message):
    with pytest.raises(ConfigError) as err:
        parse_layout(data, 32)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_bad_json_and_missing_files_are_refused(tmp_path):
    bad = tmp_path / "layout.json"
    bad.write_text("{'prompt': ")
    with pytest.raises(ConfigError, match="not valid JSON"):
        read_layout(bad, 32)
    with pytest.raises(ConfigError, match="does not exist"):
        read_layout(tmp_path / "none.json", 32)
    bad.write_text(json.dumps(_data()))
    assert read_layout(bad, 32).prompt == PROMPT


@pytest.mark.parametrize("planner", ["world", "grid"])
@pytest.mark.parametrize("suite", ["single", "binding", "counting", "spatial"])
def test_a_planned_layout_gives_every_object_its_own_box_in_the_image(suite, planner):
    for spec in load_suite(suite):
        n = sum(o.count for o in spec.objects)
        lay = plan_layout(spec, seed=spec.seed, planner=planner)
        assert lay.prompt == spec.text and len(lay.boxes) == n == len(lay.phrases)
        assert all(p in spec.text for p in lay.phrases)
        asked = {(x.shape, x.color) for x in spec.objects}
        assert all(o in asked for o in lay.objects())
        for i, a in enumerate(lay.boxes):
            assert 0.0 <= a[0] < a[2] <= 1.0 and 0.0 <= a[1] < a[3] <= 1.0
            assert all(box_iou(a, b) == 0.0 for b in lay.boxes[i + 1:])  # apart
        assert plan_layout(spec, seed=spec.seed, planner=planner) == lay  # the seed fixes it
        if spec.relation:  # the boxes' ground truth holds the relation the prompt asks for
            scene = layout_scene(lay, 32)
            a, b = (next(o for o in scene.objects if (o.shape, o.color) == (x.shape, x.color))
                    for x in spec.objects)
            assert relation_holds(a, b, spec.relation)
        if planner == "world":  # a scene of its own, not the one the seed's render draws
            assert lay.boxes != tuple(render_spec(spec, seed=spec.seed)[1].boxes(True))


def test_a_layout_cannot_be_planned_for_more_objects_than_a_scene_holds():
    spec = next(s for s in load_suite("counting") if s.objects[0].count == MAX_BOXES)
    crowded = replace(spec, objects=(replace(spec.objects[0], count=MAX_BOXES + 1),))
    with pytest.raises(ConfigError, match="cannot plan 5 boxes"):
        plan_layout(crowded)
