"""The evaluator audit on generated images: its arithmetic on tiny fixtures, the labels file's
checks, and the recorded images regenerating bit for bit from their seeds."""

import importlib.util
import json
from pathlib import Path

import pytest

from difflab.config import ConfigError
from difflab.eval.label_audit import (
    agreement,
    audit_generated,
    compare_modes,
    read_labels,
)
from difflab.eval.stats import wilson_interval

ROOT = Path(__file__).resolve().parents[2]
LABELS = ROOT / "benchmarks/results/evaluator_audit/labels.json"


def audit_script():
    path = ROOT / "benchmarks/evaluator_audit_generated.py"
    spec = importlib.util.spec_from_file_location("evaluator_audit_generated", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_precision_and_recall_count_the_confusion_matrix():
    labels = ["pass", "pass", "pass", "fail", "fail", "unsure", "fail"]
    verdicts = [True, True, False, True, False, True, False]
    a = agreement(labels, verdicts)
    assert (a["tp"], a["fp"], a["fn"], a["tn"], a["n"], a["unsure"]) == (2, 1, 1, 2, 6, 1)
    assert a["precision"]["value"] == pytest.approx(2 / 3)
    assert a["precision"]["interval"] == pytest.approx(list(wilson_interval(2, 3)))
    assert a["recall"]["value"] == pytest.approx(2 / 3)
    assert a["accuracy"]["k"] == 4
    # An evaluator that passes nothing has no precision (0 / 0), and recall 0.
    none = agreement(labels, [False] * len(labels))
    assert none["precision"]["value"] is None and none["recall"]["value"] == 0.0
    with pytest.raises(ValueError, match="2 labels but 1 verdicts"):
        agreement(["pass", "fail"], [True])


def test_mcnemar_counts_the_images_only_one_mode_gets_right():
    labels = ["fail"] * 6 + ["pass"] * 2 + ["unsure"]
    old = [True] * 6 + [True, True] + [True]  # passes all: wrong on the six failures
    new = [False] * 5 + [True] + [True, False] + [False]  # right on five, wrong on two
    c = compare_modes(labels, old, new)
    assert c["mcnemar"]["only_new_right"] == 5 and c["mcnemar"]["only_old_right"] == 1
    assert c["mcnemar"]["n"] == 8  # the unsure image is left out
    assert c["mcnemar"]["p_value"] == pytest.approx(2 * (1 + 6) / 64)  # 2 P(X <= 1), X~B(6,1/2)
    assert c["old"]["precision"]["value"] == pytest.approx(2 / 8)
    assert c["new"]["precision"]["value"] == pytest.approx(1 / 2)


def test_groups_split_by_model_and_suite():
    rows = [{"label": lab, "model": m, "suite": s, "reasons": r}
            for lab, m, s, r in [("pass", "a", "single", []), ("fail", "a", "counting",
                                 ["wrong_count"]), ("fail", "b", "single", ["garbage", "empty"])]]
    out = audit_generated(rows, [True, True, True], [True, False, False])
    assert set(out["per_model"]) == {"a", "b"} and set(out["per_suite"]) == {"single",
                                                                              "counting"}
    assert out["per_model"]["b"]["old"]["fp"] == 1 and out["per_model"]["b"]["new"]["tn"] == 1
    assert out["overall"]["reasons"]["garbage"] == 1 and out["overall"]["labels"]["fail"] == 2


def test_bad_labels_are_refused(tmp_path):
    data = json.loads(LABELS.read_text())
    data["images"] = data["images"][:2]
    path = tmp_path / "labels.json"
    for change, message in [({"label": "maybe"}, "label 'maybe'"),
                            ({"label": "fail", "reasons": []}, "needs at least one reason"),
                            ({"label": "fail", "reasons": ["ugly"]}, "reason 'ugly'"),
                            ({"model": "nope"}, "model 'nope'")]:
        data["images"][0].update(change)
        path.write_text(json.dumps(data))
        with pytest.raises(ConfigError, match=message):
            read_labels(path)
        data["images"][0] = json.loads(LABELS.read_text())["images"][0]
    script = audit_script()
    assert script.parse_label_lines("# rules\n3 fail wrong_count,garbage # two blobs\n\n4 pass"
                                    ) == {3: ("fail", ["wrong_count", "garbage"], "two blobs"),
                                          4: ("pass", [], "")}
    with pytest.raises(ConfigError, match="labels line 1"):
        script.parse_label_lines("3 bad")


def test_labelled_images_regenerate_from_their_seeds():
    """A few shipped-model images of the labels file, one per suite, bit for bit."""
    data = read_labels(LABELS)
    assert len(data["images"]) >= 300 and len(data["models"]) >= 3
    picks, seen = [], set()
    for row in data["images"]:
        if row["model"] == "shapes-base" and row["suite"] not in seen:
            seen.add(row["suite"])
            picks.append(row)
    script = audit_script()
    images = script.generate_rows(picks, data["models"])
    from difflab.eval.label_audit import pixels_sha256

    assert [pixels_sha256(img) for img in images] == [r["pixels_sha256"] for r in picks]
    # A different seed gives a different image: the check can fail.
    moved = [{**picks[0], "seed": picks[0]["seed"] + 1}]
    assert pixels_sha256(script.generate_rows(moved, data["models"])[0]) != picks[0][
        "pixels_sha256"]


def test_failed_checks_name_what_the_evaluator_rejects():
    from difflab.data.shapes import render_spec
    from difflab.data.suites import load_suite
    from difflab.eval.label_audit import error_breakdown, failed_checks
    from difflab.eval.shapeeval import score

    specs = {s.text: s for s in load_suite("single")}
    image = render_spec(specs["a red circle"], 32, seed=0)[0]
    assert failed_checks(score(image, specs["a red circle"])) == []
    wrong = failed_checks(score(image, specs["a blue circle"]))
    assert wrong == ["color", "count", "exclusive"]  # a circle is there, of another colour
    rows = [{"label": "fail", "reasons": ["wrong_color"]}, {"label": "pass", "reasons": []}]
    out = error_breakdown(rows, [True, False], [[], wrong])
    assert out["false_passes_by_reason"]["wrong_color"] == 1
    assert out["false_failures_by_check"]["color"] == 1
    assert out["false_failures_by_check"]["quality"] == 0
