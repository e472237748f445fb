"""The shapes evaluator against labels made by eye on generated images: precision and recall of
"the image satisfies its prompt" with Wilson intervals, per group, and McNemar's test of two
evaluator modes on agreement with the labels (GenEval's human-agreement check, "GenEval: An
Object-Focused Framework for Evaluating Text-to-Image Alignment", 2023)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from difflab.config import ConfigError, MissingFileError
from difflab.eval.stats import mcnemar_exact, wilson_interval

LABELS_VERSION = 1
LABELS = ("pass", "fail", "unsure")
# Why an image fails its prompt (one or more); "garbage": blobs, smears or debris beside or
# instead of the objects; "empty": nothing drawn.
REASONS = ("wrong_color", "wrong_shape", "wrong_count", "wrong_relation", "garbage", "empty")
IMAGE_KEYS = ("id", "model", "checkpoint_sha256", "prompt", "suite", "prompt_index",
              "image_index", "seed", "sample", "pixels_sha256", "label", "reasons")


def pixels_sha256(image: np.ndarray) -> str:
    """sha256 of a uint8 (H, W, 3) image's pixel bytes (row-major), to check regeneration."""
    img = np.ascontiguousarray(image)
    if img.dtype != np.uint8 or img.ndim != 3:
        raise ValueError(f"need a uint8 (H, W, C) image, got {img.dtype} {img.shape}")
    return hashlib.sha256(img.tobytes()).hexdigest()


def _check_image(row: Mapping[str, Any], where: str) -> None:
    missing = [k for k in IMAGE_KEYS if k not in row]
    if missing:
        raise ConfigError(f"{where}: missing {', '.join(missing)}")
    if row["label"] not in LABELS:
        raise ConfigError(f"{where}: label {row['label']!r}; valid: {', '.join(LABELS)}")
    bad = [r for r in row["reasons"] if r not in REASONS]
    if bad:
        raise ConfigError(f"{where}: reason {bad[0]!r}; valid: {', '.join(REASONS)}")
    if row["label"] == "fail" and not row["reasons"]:
        raise ConfigError(f"{where}: a 'fail' label needs at least one reason")
    if row["label"] == "pass" and row["reasons"]:
        raise ConfigError(f"{where}: a 'pass' label takes no reasons, got {row['reasons']}")


def read_labels(path: str | Path) -> dict[str, Any]:
    """A labels file (format LABELS_VERSION), every image row checked; bad rows raise
    ConfigError naming the image."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"no labels file at {path}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path} is not JSON: {e}") from e
    if data.get("version") != LABELS_VERSION:
        raise ConfigError(f"{path}: labels format {data.get('version')!r}; this difflab reads "
                          f"{LABELS_VERSION}")
    models = data.get("models", {})
    for i, row in enumerate(data.get("images", [])):
        where = f"{path} image {row.get('id', i)}"
        _check_image(row, where)
        if row["model"] not in models:
            raise ConfigError(f"{where}: model {row['model']!r} not under 'models'; valid: "
                              + ", ".join(models))
    return data


def _rate(k: int, n: int) -> dict[str, Any]:
    """k / n with its 95% Wilson interval; None where n = 0 (nothing to divide)."""
    if n == 0:
        return {"value": None, "interval": None, "k": k, "n": n}
    return {"value": k / n, "interval": list(wilson_interval(k, n)), "k": k, "n": n}


def agreement(labels: Sequence[str], verdicts: Sequence[bool]) -> dict[str, Any]:
    """Precision and recall of the evaluator's passes against labels ("pass" / "fail";
    "unsure" rows are left out and counted), with the confusion counts."""
    if len(labels) != len(verdicts):
        raise ValueError(f"{len(labels)} labels but {len(verdicts)} verdicts")
    pairs = [(lab == "pass", bool(v)) for lab, v in zip(labels, verdicts, strict=True)
             if lab != "unsure"]
    tp = sum(t and v for t, v in pairs)
    fp = sum(v and not t for t, v in pairs)
    fn = sum(t and not v for t, v in pairs)
    tn = sum(not t and not v for t, v in pairs)
    return {"n": len(pairs), "unsure": len(labels) - len(pairs), "tp": tp, "fp": fp, "fn": fn,
            "tn": tn, "precision": _rate(tp, tp + fp), "recall": _rate(tp, tp + fn),
            "accuracy": _rate(tp + tn, len(pairs)), "pass_rate": _rate(tp + fp, len(pairs))}


def compare_modes(labels: Sequence[str], old: Sequence[bool],
                  new: Sequence[bool]) -> dict[str, Any]:
    """Both modes' agreement with the labels, and the exact McNemar test of old against new
    on per-image agreement (labelled images only)."""
    sure = [i for i, lab in enumerate(labels) if lab != "unsure"]
    right_old = [(labels[i] == "pass") == bool(old[i]) for i in sure]
    right_new = [(labels[i] == "pass") == bool(new[i]) for i in sure]
    test = mcnemar_exact(right_old, right_new)
    return {"old": agreement(labels, old), "new": agreement(labels, new),
            "mcnemar": {"only_old_right": test.only_a, "only_new_right": test.only_b,
                        "n": test.n, "p_value": test.p_value}}


def audit_generated(rows: Sequence[Mapping[str, Any]], old: Sequence[bool],
                    new: Sequence[bool]) -> dict[str, Any]:
    """compare_modes overall, per model and per suite of labelled image rows (label, model,
    suite), with the label and reason counts of each group."""
    if not len(rows) == len(old) == len(new):
        raise ValueError(f"{len(rows)} rows, {len(old)} old and {len(new)} new verdicts")

    def group(idx: list[int]) -> dict[str, Any]:
        labels = [rows[i]["label"] for i in idx]
        out = compare_modes(labels, [old[i] for i in idx], [new[i] for i in idx])
        out["labels"] = {lab: labels.count(lab) for lab in LABELS}
        out["reasons"] = {r: sum(r in rows[i]["reasons"] for i in idx) for r in REASONS}
        return out

    result: dict[str, Any] = {"overall": group(list(range(len(rows))))}
    for key, name in (("model", "per_model"), ("suite", "per_suite")):
        values = list(dict.fromkeys(r[key] for r in rows))
        result[name] = {v: group([i for i, r in enumerate(rows) if r[key] == v])
                        for v in values}
    return result


def failed_checks(verdict: Any) -> list[str]:
    """The checks a `shapeeval.PromptVerdict` fails, by name: present, color, count (of any
    object), relation, exclusive, quality."""
    out = [name for name in ("present", "color", "count")
           if not all(getattr(o, name) for o in verdict.objects)]
    out += [name for name in ("relation", "exclusive", "quality")
            if getattr(verdict, name) is False]
    return out


def error_breakdown(rows: Sequence[Mapping[str, Any]], verdicts: Sequence[bool],
                    checks: Sequence[Sequence[str]]) -> dict[str, dict[str, int]]:
    """Where one evaluator mode disagrees with the labels: the labelled reasons of its false
    passes, and the checks that fail its false failures (an image may count under several)."""
    fp = [i for i, r in enumerate(rows) if verdicts[i] and r["label"] == "fail"]
    fn = [i for i, r in enumerate(rows) if not verdicts[i] and r["label"] == "pass"]
    names = ("present", "color", "count", "relation", "exclusive", "quality")
    return {"false_passes_by_reason": {r: sum(r in rows[i]["reasons"] for i in fp)
                                       for r in REASONS},
            "false_failures_by_check": {c: sum(c in checks[i] for i in fn) for c in names}}
