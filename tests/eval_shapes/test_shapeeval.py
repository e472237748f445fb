"""The analytic shapes evaluator: detection, GenEval-style verdicts, validation on renders."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from difflab.data.shapes import load_suite, render_spec
from difflab.data.world import BACKGROUND, COLORS, SHAPES, ObjectSpec, PromptSpec
from difflab.eval.features import add_gaussian_noise
from difflab.eval.shapeeval import (
    Detection,
    check,
    detect,
    evaluate,
    relative_position,
    scene_detections,
    score,
    validate,
)


@pytest.mark.parametrize("size", [32, 64])
def test_every_shape_and_colour_is_detected_alone(size):
    for i, shape in enumerate(SHAPES):
        for j, color in enumerate(COLORS):
            spec = PromptSpec(f"a {color} {shape}", "single", (ObjectSpec(shape, color),))
            img, scene = render_spec(spec, size, seed=100 * i + j)
            (det,) = detect(img)
            (obj,) = scene.objects
            assert (det.shape, det.color) == (shape, color)
            assert abs(det.center[0] - obj.x) < 1 and abs(det.center[1] - obj.y) < 1
            assert abs((det.bbox[2] - det.bbox[0]) - obj.side) < 1.5


def test_validation_at_32px_all_suites():
    table = validate(32, n_seeds=1, suite="all")["table"]
    for cat, row in table.items():
        assert row["truth"] == 1.0, cat  # true scenes satisfy their prompts by these rules
        assert row["clean"] >= 0.99, (cat, row)
        assert row["noise"] >= 0.95 and row["blur"] >= 0.95, (cat, row)
        assert row["reject"] >= 0.99, (cat, row)


@pytest.mark.parametrize("suite", ["spatial", "counting"])
def test_validation_at_64px(suite):
    row = validate(64, n_seeds=1, suite=suite)["table"]["overall"]
    assert row["clean"] >= 0.99 and row["reject"] >= 0.99, row
    assert row["noise"] >= 0.95 and row["blur"] >= 0.95, row


def test_noisy_or_washed_out_background_is_not_counted():
    bg = np.broadcast_to(np.array(BACKGROUND, np.uint8), (10, 32, 32, 3)).copy()
    assert all(detect(img) == [] for img in add_gaussian_noise(bg, 0.1, seed=0))
    # A faint red blob: blended at 30% coverage it is not an object.
    faint = bg[0].copy()
    faint[8:20, 8:20] = (0.3 * np.array(COLORS["red"]) + 0.7 * np.array(BACKGROUND)).astype(
        np.uint8)
    assert detect(faint) == []


def _det(shape, color, x, y, side=6.0):
    h = side / 2
    return Detection(shape, color, (x, y), (x - h, y - h, x + h, y + h), side * side, 1.0)


def test_counts_are_exact_and_extra_objects_fail():
    spec = PromptSpec("two red circles", "counting", (ObjectSpec("circle", "red", 2),))
    two = [_det("circle", "red", 5, 5), _det("circle", "red", 20, 20)]
    assert check(two, spec).passed
    three = check(two + [_det("circle", "red", 5, 20)], spec)
    assert not three.passed and three.objects[0].color and not three.objects[0].count
    extra = check(two + [_det("square", "blue", 20, 5)], spec)
    assert extra.objects[0].count and not extra.exclusive and not extra.passed
    wrong_color = check([_det("circle", "blue", 5, 5), _det("circle", "blue", 20, 20)], spec)
    assert wrong_color.objects[0].present and not wrong_color.objects[0].color


def test_any_shape_or_colour_matches_anything():
    spec = PromptSpec("two red things", "counting", (ObjectSpec(None, "red", 2),))
    assert check([_det("circle", "red", 5, 5), _det("cross", "red", 20, 20)], spec).passed
    assert not check([_det("circle", "red", 5, 5)], spec).passed


@pytest.mark.parametrize("rel,dx,dy", [("left of", -1, 0), ("right of", 1, 0),
                                       ("above", 0, -1), ("below", 0, 1)])
def test_relative_position_follows_geneval_minimum_offset(rel, dx, dy):
    b = _det("square", "blue", 16, 16, side=6)
    far = _det("circle", "red", 16 + 10 * dx, 16 + 10 * dy, side=6)
    assert relative_position(far, b) == {rel}
    # Offsets below 0.1 x (sum of the box sizes) = 1.2 px along the axis say nothing.
    near = _det("circle", "red", 16 + 1.0 * dx, 16 + 1.0 * dy, side=6)
    assert relative_position(near, b) == set()
    spec = PromptSpec("r", "spatial", (ObjectSpec("circle", "red"), ObjectSpec("square", "blue")),
                      rel)
    assert check([far, b], spec).relation is True
    assert check([near, b], spec).relation is False


def test_evaluate_reports_per_category_and_accepts_float_tensors():
    specs = load_suite("spatial")[:6] + load_suite("counting")[4:10]
    renders = [render_spec(s, 32, seed=s.seed) for s in specs]
    images = np.stack([img for img, _ in renders])
    wrong = specs[1:] + specs[:1]  # each image against its neighbour's prompt
    report = evaluate(np.concatenate([images, images]), specs + wrong)
    # Ground truth: the true scenes pass their own prompts, and pass a neighbour's only if
    # its requirements happen to hold for them.
    scenes = [scene_detections(sc) for _, sc in renders]
    truth = [check(sc, s).passed for sc, s in zip(scenes, specs, strict=True)]
    truth += [check(sc, w).passed for sc, w in zip(scenes, wrong, strict=True)]
    assert [v.passed for v in report.prompts] == truth
    assert report.overall == pytest.approx(np.mean(truth)) and 0 < report.overall < 1
    assert set(report.per_category) == {"spatial", "counting"}
    json.dumps(report.to_dict(detections=True))
    as_float = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    again = evaluate(as_float, specs)
    assert again.overall == 1.0 and again.criteria["relation"] == 1.0
    with pytest.raises(ValueError, match="one spec per image"):
        evaluate(images, specs[:-1])


def test_wrong_prompts_fail_on_their_true_scene_and_image():
    specs = load_suite("binding")[:8]
    for s, other in zip(specs, specs[1:], strict=False):
        img, scene = render_spec(s, 32, seed=s.seed)
        assert not check(scene_detections(scene), other).passed
        assert not score(img, other).passed and score(img, s).passed
