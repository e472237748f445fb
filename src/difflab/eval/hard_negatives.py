"""Hard negatives for the shapes evaluator: images that nearly satisfy a prompt but do not.

Each generator takes a suite prompt, an image size and a seed and returns an image that a
careful reader would fail against that prompt (or None where the kind does not apply):
near-miss and stretched shapes, off-by-one counts, swapped colours, the wrong relation,
off-palette garbage, palette-coloured debris, and two objects merged into one blob.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from difflab.data.shapes import _SDFS, Scene, render, render_spec
from difflab.data.world import BACKGROUND, COLORS, PromptSpec

Image = np.ndarray  # (S, S, 3) uint8
SdfFn = Callable[[np.ndarray, np.ndarray, float], np.ndarray]

STRETCH = 1.7  # aspect ratio of a stretched shape
_LINES = np.array(list(COLORS.values()), np.float64) - np.array(BACKGROUND, np.float64)


def _paint(img: np.ndarray, cx: float, cy: float, r: float, color: tuple[int, int, int],
           sdf: SdfFn) -> None:
    """Draw one anti-aliased shape (signed distance `sdf`) into float image `img` in place."""
    size = img.shape[0]
    x0, x1 = max(int(cx - 2 * r) - 1, 0), min(int(math.ceil(cx + 2 * r)) + 1, size)
    y0, y1 = max(int(cy - 2 * r) - 1, 0), min(int(math.ceil(cy + 2 * r)) + 1, size)
    px = (np.arange(x0, x1, dtype=np.float32) + 0.5 - cx)[None, :]
    py = (np.arange(y0, y1, dtype=np.float32) + 0.5 - cy)[:, None]
    alpha = np.clip(0.5 - sdf(px, py, r), 0.0, 1.0)[..., None]
    win = img[y0:y1, x0:x1]
    win += alpha * (np.asarray(color, np.float32) - win)


def _redraw_first(spec: PromptSpec, size: int, seed: int, sdf_of: Callable[[str], SdfFn]
                  ) -> Image:
    """The prompt's true render with its first object drawn by another signed distance."""
    _, scene = render_spec(spec, size, seed)
    target = scene.objects[0]
    rest = Scene(scene.size, tuple(o for o in scene.objects if o is not target))
    img = render(rest).astype(np.float32)
    _paint(img, target.x, target.y, target.side / 2, COLORS[target.color], sdf_of(target.shape))
    return np.rint(img).astype(np.uint8)


def _render_or_none(spec: PromptSpec, size: int, seed: int) -> Image | None:
    """A true render of `spec`, or None where its objects do not fit the image."""
    try:
        return render_spec(spec, size, seed)[0]
    except RuntimeError:
        return None


def near_miss_shape(spec: PromptSpec, size: int, seed: int) -> Image | None:
    """The first object with its top-right quarter bitten out (a pac-man circle, an L-shaped
    square, a C-shaped ring, a cross missing two half-arms)."""
    def bitten(shape: str) -> SdfFn:
        # Outside the shape, or inside the quadrant px > 0, py < 0 (its SDF: max(-px, py)).
        return lambda px, py, r: np.maximum(_SDFS[shape](px, py, r), np.minimum(px, -py))
    return _redraw_first(spec, size, seed, bitten)


def stretched_shape(spec: PromptSpec, size: int, seed: int) -> Image | None:
    """The first object squashed to STRETCH : 1 (an ellipse for a circle)."""
    def squash(shape: str) -> SdfFn:
        return lambda px, py, r: _SDFS[shape](px, py * STRETCH, r) / STRETCH
    return _redraw_first(spec, size, seed, squash)


def off_by_one_count(spec: PromptSpec, size: int, seed: int) -> Image | None:
    """One object more (or, for four, one fewer) of the first counted kind."""
    first = spec.objects[0]
    n = first.count + 1 if first.count < 4 else first.count - 1
    objects = (replace(first, count=n), *spec.objects[1:])
    return _render_or_none(replace(spec, objects=objects), size, seed)


def swapped_colors(spec: PromptSpec, size: int, seed: int) -> Image | None:
    """Two objects of different colours drawn with their colours exchanged."""
    if len(spec.objects) != 2 or spec.objects[0].color == spec.objects[1].color:
        return None
    a, b = spec.objects
    objects = (replace(a, color=b.color), replace(b, color=a.color))
    if any((o.shape, o.color) == (p.shape, p.color) for o in objects for p in spec.objects):
        return None  # the swap would still satisfy the prompt
    return _render_or_none(replace(spec, objects=objects), size, seed)


def wrong_relation(spec: PromptSpec, size: int, seed: int) -> Image | None:
    """The two objects in the mirrored relation."""
    from difflab.data.captions import MIRROR

    if spec.relation is None:
        return None
    return _render_or_none(replace(spec, relation=MIRROR[spec.relation]), size, seed)


def _off_palette_color(rng: np.random.Generator) -> np.ndarray:
    """A colour far from the background and from every palette colour's blend line."""
    while True:
        c = rng.integers(0, 256, size=3).astype(np.float64)
        d = c - np.array(BACKGROUND)
        a = np.clip(_LINES @ d / (_LINES**2).sum(1), 0, 1)
        resid = np.linalg.norm(d[None] - a[:, None] * _LINES, axis=1)
        if resid.min() > 100 and np.linalg.norm(d) > 100:
            return c


def _free_square(img: Image, side: int, rng: np.random.Generator) -> tuple[int, int] | None:
    """Top-left corner of a side x side window of pure background, or None."""
    bg = np.all(img == np.array(BACKGROUND, np.uint8), axis=-1)
    size = img.shape[0]
    for _ in range(200):
        y, x = rng.integers(0, size - side + 1, size=2)
        if bg[max(y - 1, 0):y + side + 1, max(x - 1, 0):x + side + 1].all():
            return int(y), int(x)
    return None


def off_palette_garbage(spec: PromptSpec, size: int, seed: int) -> Image | None:
    """The true render plus a blotch of an off-palette colour in free space."""
    img, _ = render_spec(spec, size, seed)
    rng = np.random.default_rng(seed)
    side = max(3, round(0.22 * size))
    corner = _free_square(img, side, rng)
    if corner is None:
        return None
    y, x = corner
    mask = rng.random((side, side)) < 0.7  # a ragged blotch, ~70% of a small object's box
    out = img.copy()
    out[y:y + side, x:x + side][mask] = _off_palette_color(rng).astype(np.uint8)
    return out


def palette_debris(spec: PromptSpec, size: int, seed: int) -> Image | None:
    """The true render plus scattered one-pixel specks of palette colours in free space."""
    img, _ = render_spec(spec, size, seed)
    rng = np.random.default_rng(seed)
    out = img.copy()
    n = max(12, size * size // 60)
    colors = list(COLORS.values())
    placed = 0
    for _ in range(20 * n):
        corner = _free_square(out, 1, rng)
        if corner is None or placed == n:
            break
        out[corner] = colors[int(rng.integers(len(colors)))]
        placed += 1
    return out if placed == n else None


def merged_objects(spec: PromptSpec, size: int, seed: int) -> Image | None:
    """The first object drawn twice, overlapping into one blob (a count of two asked)."""
    first = spec.objects[0]
    if first.count != 2 or len(spec.objects) != 1:
        return None
    _, scene = render_spec(replace(spec, objects=(replace(first, count=1),)), size, seed)
    o = scene.objects[0]
    img = render(scene).astype(np.float32)
    shift = 0.6 * o.side * (1 if o.x < size / 2 else -1)
    _paint(img, o.x + shift, o.y, o.side / 2, COLORS[o.color], _SDFS[o.shape])
    return np.rint(img).astype(np.uint8)


HARD_NEGATIVES: dict[str, Callable[[PromptSpec, int, int], Image | None]] = {
    "near_miss_shape": near_miss_shape,
    "stretched_shape": stretched_shape,
    "off_by_one_count": off_by_one_count,
    "swapped_colors": swapped_colors,
    "wrong_relation": wrong_relation,
    "off_palette_garbage": off_palette_garbage,
    "palette_debris": palette_debris,
    "merged_objects": merged_objects,
}
POSITIVES = ("clean", "noise", "blur")


def audit_images(size: int, n_seeds: int, suite: str = "all"
                 ) -> list[tuple[str, bool, PromptSpec, Image]]:
    """(category, should pass, prompt, image) rows: true renders clean, noised (std 8/255)
    and blurred (std 0.5 px at 32 px) that should pass, and every hard negative, which should
    fail; seeds differ from the suites' own."""
    from difflab.data.suites import load_suite
    from difflab.eval.features import add_gaussian_noise, gaussian_blur

    rows = []
    for k in range(n_seeds):
        for spec in load_suite(suite):
            seed = spec.seed * 1000 + 7 + k
            img = render_spec(spec, size, seed)[0]
            variants = {"clean": img, "noise": add_gaussian_noise(img[None], 8 / 255, seed)[0],
                        "blur": gaussian_blur(img[None], 0.5 * size / 32)[0]}
            rows += [(name, True, spec, v) for name, v in variants.items()]
            for name, make in HARD_NEGATIVES.items():
                neg = make(spec, size, seed)
                if neg is not None:
                    rows.append((name, False, spec, neg))
    return rows


def precision_recall(rows: list[tuple[str, bool, bool]]) -> dict[str, float]:
    """Precision and recall of "the prompt is satisfied" from (category, truth, verdict)."""
    tp = sum(t and v for _, t, v in rows)
    fp = sum(v and not t for _, t, v in rows)
    fn = sum(t and not v for _, t, v in rows)
    nan = float("nan")
    return {"precision": tp / (tp + fp) if tp + fp else nan,
            "recall": tp / (tp + fn) if tp + fn else nan, "tp": tp, "fp": fp, "fn": fn}


def audit(size: int = 32, n_seeds: int = 1, suite: str = "all") -> dict:
    """The evaluator old (lenient) and new (strict) on true renders and hard negatives: pass
    rate per category, and precision / recall overall and per negative category (its
    negatives against all positives)."""
    from difflab.eval.shapeeval import score

    rows = audit_images(size, n_seeds, suite)
    verdicts = {mode: [(c, t, score(img, spec, strict=mode == "new").passed)
                       for c, t, spec, img in rows] for mode in ("old", "new")}
    cats = list(dict.fromkeys(c for c, _, _, _ in rows))
    out: dict = {"size": size, "n_seeds": n_seeds, "suite": suite, "categories": {}}
    for c in cats:
        entry: dict = {"n": sum(r[0] == c for r in rows), "should_pass": c in POSITIVES}
        for mode, vs in verdicts.items():
            mine = [v for cat, _, v in vs if cat == c]
            entry[f"pass_rate_{mode}"] = float(np.mean(mine))
            if c not in POSITIVES:
                pos = [r for r in vs if r[0] in POSITIVES]
                entry[f"precision_{mode}"] = precision_recall(
                    pos + [r for r in vs if r[0] == c])["precision"]
        out["categories"][c] = entry
    out["overall"] = {mode: precision_recall(vs) for mode, vs in verdicts.items()}
    return out
