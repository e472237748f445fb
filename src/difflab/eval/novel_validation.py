"""The shapes evaluator's "extended" vocabulary validated on ground-truth renders of the novel
concepts (data.world NOVEL_SHAPES, NOVEL_COLORS) beside the world's own shapes and colours."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from difflab.data.captions import a_noun
from difflab.data.shapes import render_spec
from difflab.data.world import (
    ALL_COLORS,
    ALL_SHAPES,
    NOVEL_COLORS,
    NOVEL_SHAPES,
    SHAPES,
    ObjectSpec,
    PromptSpec,
)
from difflab.eval.features import add_gaussian_noise, gaussian_blur
from difflab.eval.shapeeval import ImageInspection, check, inspect


def concept_validation_specs() -> tuple[list[PromptSpec], list[PromptSpec]]:
    """Every ALL_SHAPES x ALL_COLORS single object (72), and 20 two-object scenes: each novel
    shape beside every other shape, and every world shape in pink beside a world object."""
    colors = tuple(ALL_COLORS)
    singles = [PromptSpec(a_noun(s, c), "single", (ObjectSpec(s, c),))
               for s in ALL_SHAPES for c in colors]
    n = len(colors)
    shape_pairs = [(a, b) for a in NOVEL_SHAPES for b in ALL_SHAPES if b != a]
    kinds = [((a, colors[i % n]), (b, colors[(i + 3) % n])) for i, (a, b) in enumerate(shape_pairs)]
    pink = next(iter(NOVEL_COLORS))
    kinds += [((s, pink), (SHAPES[(i + 1) % len(SHAPES)], colors[i])) for i, s in enumerate(SHAPES)]
    pairs = [PromptSpec(f"{a_noun(*a)} and {a_noun(*b)}", "pair", (ObjectSpec(*a), ObjectSpec(*b)))
             for a, b in kinds]
    return singles, pairs


def _rate(flags: list[bool]) -> float:
    return float(np.mean(flags)) if flags else float("nan")


def _passes(seen: ImageInspection, spec: PromptSpec) -> bool:
    return check(seen.detections, spec).passed and seen.quality_ok


def _single_rows(singles, size, n_seeds, variants) -> tuple[dict, dict]:
    """Per shape and per colour: own-prompt pass rate per variant; per shape also `reject`, the
    rate at which a clean render fails every same-colour prompt naming another shape."""
    rows: dict[str, dict[str, dict[str, list[bool]]]] = {"shapes": {}, "colors": {}}
    confusions: dict[str, dict[str, int]] = {}
    for i, spec in enumerate(singles):
        (want,) = spec.objects
        images = np.stack([_render(spec, size, i * n_seeds + k)
                           for k in range(n_seeds)])
        for name, make in variants.items():
            for img in make(images, i):
                seen = inspect(img, vocabulary="extended")
                for table, key in (("shapes", want.shape), ("colors", want.color)):
                    row = rows[table].setdefault(key, {v: [] for v in variants})
                    row[name].append(_passes(seen, spec))
                if name == "clean":
                    others = [replace(spec, objects=(ObjectSpec(s, want.color),))
                              for s in ALL_SHAPES if s != want.shape]
                    row = rows["shapes"][want.shape]
                    row.setdefault("reject", []).append(not any(_passes(seen, o) for o in others))
                if not _passes(seen, spec):
                    got = ",".join(f"{d.color} {d.shape}" for d in seen.detections) or "nothing"
                    miss = confusions.setdefault(f"{want.color} {want.shape} ({name})", {})
                    miss[got] = miss.get(got, 0) + 1
    return rows, confusions


def validate_concepts(size: int = 32, n_seeds: int = 4, noise: float = 8 / 255,
                      blur: float = 0.5, seed: int = 0) -> dict:
    """The extended evaluator on ground-truth renders of every ALL_SHAPES x ALL_COLORS single
    object and two-object scenes with novel concepts, clean, noised and blurred: pass rates per
    shape, per colour and for the pairs, with what was seen instead when a render failed
    (renders use fixed seeds; `seed` seeds the noise)."""
    if n_seeds < 1:
        raise ValueError(f"n_seeds must be >= 1, got {n_seeds}")
    variants = {"clean": lambda imgs, i: imgs,
                "noise": lambda imgs, i: add_gaussian_noise(imgs, noise, seed=seed + i),
                "blur": lambda imgs, i: gaussian_blur(imgs, blur)}
    singles, pairs = concept_validation_specs()
    rows, confusions = _single_rows(singles, size, n_seeds, variants)
    pair_row: dict[str, list[bool]] = {name: [] for name in variants}
    for i, spec in enumerate(pairs):
        images = np.stack([_render(spec, size, 10_000 + i * n_seeds + k)
                           for k in range(n_seeds)])
        for name, make in variants.items():
            pair_row[name] += [_passes(inspect(img, vocabulary="extended"), spec)
                               for img in make(images, len(singles) + i)]
    table = {name: {key: {k: _rate(v) for k, v in r.items()} | {"n": len(r["clean"])}
                    for key, r in part.items()} for name, part in rows.items()}
    table["pairs"] = {k: _rate(v) for k, v in pair_row.items()} | {"n": len(pair_row["clean"])}
    return {"size": size, "n_seeds": n_seeds, "noise": noise, "blur": blur, "seed": seed,
            "vocabulary": "extended", "table": table, "confusions": confusions}


def _render(spec: PromptSpec, size: int, seed: int) -> np.ndarray:
    return render_spec(spec, size, seed=seed)[0]
