"""Score images of the shapes world for compositional correctness, the way GenEval does.

"GenEval: An Object-Focused Framework for Evaluating Text-to-Image Alignment" (Ghosh et al.,
2023) runs a detector and checks each prompt's objects, colours, counts and positions. The
shapes world is exactly specified, so the detector here is analytic, with no trained weights:

1. colour segmentation: each pixel is explained as background blended with one named colour,
   p ~ B + a (C - B); the colour whose blend line is closest wins, the pixel is foreground when
   its coverage a >= 0.5 and its distance to the line is within `tol` (washed-out or noisy
   pixels that fit no colour are not counted);
2. connected components per colour; components smaller than a fraction of the smallest
   object the world draws are dropped;
3. shape from geometry, by analysis by synthesis: each of the six shape definitions is drawn
   (4x4 supersampled coverage) in the component's sub-pixel bounding box and compared with
   the observed coverage by soft IoU; the best names the shape, or none if it fits poorly.

The `vocabulary` is "world" (the six shapes and eight colours the base model is trained on) or
"extended" (also the novel concepts of `difflab.data.world`: NOVEL_SHAPES, NOVEL_COLORS).

The verdicts are GenEval's (present, colour, count, relative position with its minimum
offset) plus one more, `exclusive`: the world's captions list every object, so an image
with objects that the prompt does not ask for fails. With `strict` (the default) a per-image
quality flag must hold too: off-palette pixel mass, debris (fragments too small to be an
object) and distorted shapes (a best-fitting drawing under STRICT_SHAPE_IOU) each fail it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from difflab.config import ConfigError
from difflab.data.shapes import shape_sdf
from difflab.data.world import (
    ALL_COLORS,
    ALL_SHAPES,
    BACKGROUND,
    COLORS,
    NOVEL_COLORS,
    NOVEL_SHAPES,
    RELATIONS,
    SHAPES,
    SIZES,
    ObjectSpec,
    PromptSpec,
)
from difflab.eval.features import to_uint8_images

if TYPE_CHECKING:
    import torch

    from difflab.data.shapes import Scene

COLOR_NAMES: tuple[str, ...] = tuple(COLORS)
_LINES = np.array([COLORS[c] for c in COLOR_NAMES], np.float32) - np.float32(BACKGROUND)  # (K, 3)
_BG = np.array(BACKGROUND, np.float32)
POSITION_THRESHOLD = 0.1  # GenEval's minimum offset, as a fraction of the two boxes' sizes
MIN_SHAPE_IOU = 0.6  # a blob that fits no shape's drawing better than this has no shape
# The quality flag: every object must fit its shape at least this well (ground-truth renders
# at 32 px fit at >= 0.80 clean, noised or blurred; near-miss shapes fit at 0.6-0.75), and
# off-palette or debris mass must stay under a third of the smallest object's area.
STRICT_SHAPE_IOU = 0.75


@dataclass(frozen=True)
class Vocabulary:
    """What the detector can name: shapes (in fitting order) and palette colours."""

    name: str
    shapes: tuple[str, ...]
    colors: tuple[str, ...]
    lines: np.ndarray  # (K, 3) each colour minus the background: its blend line's direction


VOCABULARIES: dict[str, Vocabulary] = {
    "world": Vocabulary("world", SHAPES, COLOR_NAMES, _LINES),
    "extended": Vocabulary("extended", ALL_SHAPES, tuple(ALL_COLORS),
                           np.array(list(ALL_COLORS.values()), np.float32) - _BG),
}


def get_vocabulary(name: str) -> Vocabulary:
    """The evaluator vocabulary called `name`, or a ConfigError naming the valid ones."""
    if name not in VOCABULARIES:
        raise ConfigError(f"unknown evaluator vocabulary {name!r}; valid: "
                          f"{', '.join(VOCABULARIES)}")
    return VOCABULARIES[name]


def specs_vocabulary(specs: Sequence[PromptSpec]) -> str:
    """"extended" when any spec names a novel shape or colour, else "world" (so base suites
    keep the exact evaluator their results were scored with)."""
    novel = set(NOVEL_SHAPES) | set(NOVEL_COLORS)
    named = {x for spec in specs for o in spec.objects for x in (o.shape, o.color)}
    return "extended" if named & novel else "world"


@dataclass(frozen=True)
class Detection:
    """One detected object: shape (None: fits no shape), colour, centre and box in pixels."""

    shape: str | None
    color: str
    center: tuple[float, float]  # (x, y) of the bbox centre, y down
    bbox: tuple[float, float, float, float]  # (x0, y0, x1, y1), sub-pixel
    area: float  # soft coverage in pixels
    shape_iou: float  # soft IoU of the coverage with the best-fitting shape drawing


# ----------------------------------------------------------------------------- segmentation


def _segment(img: np.ndarray, tol: float,
             lines: np.ndarray = _LINES) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(H, W, 3) uint8 -> colour index (H, W; -1 background), coverage and residual (H, W, K)
    for the palette whose blend-line directions are `lines` (K, 3)."""
    d = img.astype(np.float32) - _BG  # (H, W, 3)
    a = np.clip(d @ lines.T / (lines**2).sum(1), 0.0, 1.0)  # (H, W, K) coverage per colour
    resid = np.linalg.norm(d[:, :, None, :] - a[..., None] * lines, axis=-1)  # (H, W, K)
    k = resid.argmin(-1)
    a_k = np.take_along_axis(a, k[..., None], -1)[..., 0]
    r_k = np.take_along_axis(resid, k[..., None], -1)[..., 0]
    label = np.where((a_k >= 0.5) & (r_k <= tol), k, -1)
    return label, a, resid


def _min_area(size: int) -> float:
    """A third of the smallest object's area (small triangle: half its bbox) in pixels."""
    return max(2.0, (min(SIZES.values()) * size) ** 2 * 0.5 / 3)


def _soft_extent(profile: np.ndarray) -> tuple[float, float]:
    """Sub-pixel [lo, hi) of a 1-D coverage profile: partial edge pixels count by coverage."""
    idx = np.flatnonzero(profile > 0)
    lo, hi = idx[0], idx[-1]
    return lo + 1.0 - float(profile[lo]), hi + float(profile[hi])


# The world's shapes as point sets in units of the half side (u, v in [-1, 1], v down),
# as drawn by difflab.data.shapes: the triangle points up, the cross's arms are a third of
# the side wide, the ring keeps radii from 1/2 to 1; the novel shapes (star, heart) are the
# renderer's own signed distance functions at r = 1.
_INSIDE = {
    "circle": lambda u, v: u * u + v * v <= 1,
    "square": lambda u, v: (np.abs(u) <= 1) & (np.abs(v) <= 1),
    "triangle": lambda u, v: (v <= 1) & (2 * np.abs(u) <= v + 1),
    "diamond": lambda u, v: np.abs(u) + np.abs(v) <= 1,
    "cross": lambda u, v: ((np.abs(u) <= 1) & (np.abs(v) <= 1 / 3))
    | ((np.abs(u) <= 1 / 3) & (np.abs(v) <= 1)),
    "ring": lambda u, v: (u * u + v * v <= 1) & (u * u + v * v >= 0.25),
    **{s: lambda u, v, s=s: shape_sdf(s, u, v, 1.0) <= 0 for s in NOVEL_SHAPES},
}
assert set(_INSIDE) == set(ALL_SHAPES)


def template(shape: str, shape_hw: tuple[int, int], placements: np.ndarray) -> np.ndarray:
    """Pixel coverage (P, h, w) of `shape` at each placement (cx, cy, r) of `placements` (P, 3),
    by supersampling (4x4 per pixel for small shapes, 2x2 from r = 8 px on)."""
    h, w = shape_hw
    n = 4 if placements[:, 2].max() < 8 else 2
    sub = (np.arange(n) + 0.5) / n
    xs = (np.arange(w)[:, None] + sub).reshape(-1)  # (n w,) sample positions
    ys = (np.arange(h)[:, None] + sub).reshape(-1)  # (n h,)
    cx, cy, r = (placements[:, i, None, None] for i in range(3))  # (P, 1, 1) each
    inside = _INSIDE[shape]((xs[None, None, :] - cx) / r, (ys[None, :, None] - cy) / r)
    return inside.reshape(-1, h, n, w, n).sum(axis=(2, 4), dtype=np.float32) / (n * n)


def _placements(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    """Candidate (cx, cy, r) rows (P, 3) for a square-boxed shape seen with box [x0, x1) x [y0, y1).

    A thin apex (the triangle's) is under-measured, so when the box is not square the short
    side's box may be centred or aligned with either of its ends; tips fade under blur and
    pixel averaging, so the side may be up to a pixel longer than measured."""
    w, h = x1 - x0, y1 - y0
    side = max(w, h)
    xs, ys = [(x0 + x1) / 2], [(y0 + y1) / 2]
    if side - min(w, h) > 0.25:  # pixels
        ends = xs if w < h else ys
        lo, hi = (x0, x1) if w < h else (y0, y1)
        ends += [lo + side / 2, hi - side / 2]
    return np.array([(cx, cy, (side + grow) / 2) for cx in xs for cy in ys
                     for grow in (0.0, 0.5, 1.0)])


def fit_shape(alpha: np.ndarray, shapes: Sequence[str] = SHAPES,
              ) -> tuple[str, float, tuple[float, float, float, float]]:
    """Best of `shapes` for a coverage window (h, w) in [0, 1]: (shape, soft IoU, its box).

    Analysis by synthesis: each shape is drawn at each candidate placement from the window's
    sub-pixel box and compared with the observed coverage by soft IoU (sum min / sum max).
    """
    x0, x1 = _soft_extent(alpha.max(0))
    y0, y1 = _soft_extent(alpha.max(1))
    places = _placements(x0, y0, x1, y1)
    best = ("", -1.0, (x0, y0, x1, y1))
    for shape in shapes:
        pred = _floor(template(shape, alpha.shape, places))  # (P, h, w)
        iou = np.minimum(alpha, pred).sum((1, 2)) / np.maximum(
            np.maximum(alpha, pred).sum((1, 2)), 1e-9)
        i = int(iou.argmax())
        if iou[i] > best[1]:
            cx, cy, r = places[i]
            best = (shape, float(iou[i]), (cx - r, cy - r, cx + r, cy + r))
    return best


def _floor(alpha: np.ndarray) -> np.ndarray:
    """Soft threshold (a - 0.1) / 0.8: removes the background noise floor, keeps a = 0.5."""
    return np.clip((alpha - 0.1) / 0.8, 0.0, 1.0)


@dataclass(frozen=True)
class ImageInspection:
    """What one image holds: its objects, plus the mass that no object explains."""

    detections: tuple[Detection, ...]
    off_palette: int  # pixels far from the background that fit no palette colour's blend line
    debris: int  # palette-coloured pixels in components too small to be an object
    min_area: float  # the world's smallest object area / 3 at this size (the mass threshold)

    @property
    def quality_ok(self) -> bool:
        """No off-palette or debris mass worth an object, and every object well drawn."""
        return (self.off_palette < self.min_area and self.debris < self.min_area
                and all(d.shape_iou >= STRICT_SHAPE_IOU for d in self.detections))


def inspect(image: np.ndarray, tol: float = 60.0, vocabulary: str = "world") -> ImageInspection:
    """Detect the objects of one (H, W, 3) uint8 image (sorted top-left first) and measure
    the off-palette and debris mass beside them."""
    vocab = get_vocabulary(vocabulary)
    img = to_uint8_images(image)[0]
    label, a, resid = _segment(img, tol, vocab.lines)
    min_area = _min_area(min(img.shape[:2]))
    comps = np.zeros(label.shape, np.int32)  # component id per pixel, 0 = none
    kept: list[tuple[int, tuple[slice, slice]]] = []
    debris = 0
    for k in np.unique(label[label >= 0]):
        lab, n = ndimage.label(label == k, structure=np.ones((3, 3)))
        sizes = ndimage.sum_labels(np.ones_like(lab), lab, index=np.arange(1, n + 1))
        for i, box in enumerate(ndimage.find_objects(lab)):
            if sizes[i] >= min_area:
                comps[lab == i + 1] = len(kept) + 1
                kept.append((int(k), box))
            else:
                debris += int(sizes[i])
    dets = [_measure(a, resid, comps, i + 1, k, box, tol, vocab)
            for i, (k, box) in enumerate(kept)]
    # Off-palette: clearly not background, and on no colour's blend line (anti-aliased edges
    # lie on their colour's line, so they do not count).
    far = np.linalg.norm(img.astype(np.float32) - _BG, axis=-1) > tol
    off = int((far & (resid.min(-1) > tol)).sum())
    dets.sort(key=lambda d: (round(d.center[1]), d.center[0]))
    return ImageInspection(tuple(dets), off, debris, min_area)


def detect(image: np.ndarray, tol: float = 60.0, vocabulary: str = "world") -> list[Detection]:
    """The objects in one (H, W, 3) uint8 image, sorted by position (top-left first)."""
    return list(inspect(image, tol, vocabulary).detections)


def _measure(a, resid, comps, cid: int, k: int, box, tol: float,
             vocab: Vocabulary = VOCABULARIES["world"]) -> Detection:
    """Describe component `cid` of colour `k` from its soft coverage in a padded window."""
    h, w = comps.shape
    ys = slice(max(box[0].start - 2, 0), min(box[0].stop + 2, h))
    xs = slice(max(box[1].start - 2, 0), min(box[1].stop + 2, w))
    alpha = a[ys, xs, k].copy()
    # Why: other objects and off-colour pixels nearby must not leak into this shape.
    alpha[(resid[ys, xs, k] > tol) | ((comps[ys, xs] != cid) & (comps[ys, xs] != 0))] = 0
    alpha = _floor(alpha) * ndimage.binary_dilation(comps[ys, xs] == cid)  # this one + its rim
    shape, iou, (x0, y0, x1, y1) = fit_shape(alpha, vocab.shapes)
    bbox = (x0 + xs.start, y0 + ys.start, x1 + xs.start, y1 + ys.start)
    center = ((bbox[0] + bbox[2]) / 2, (bbox[1] + bbox[3]) / 2)
    return Detection(shape if iou >= MIN_SHAPE_IOU else None, vocab.colors[k], center, bbox,
                     float(alpha.sum()), iou)


# ----------------------------------------------------------------------------- verdicts


@dataclass(frozen=True)
class ObjectVerdict:
    """GenEval's checks for one ObjectSpec."""

    spec: ObjectSpec
    present: bool  # an object of the asked shape (any colour; any shape if shape is None)
    color: bool  # at least `count` of those have the asked colour
    count: bool  # exactly `count` objects match both shape and colour
    found: int  # how many objects match both


@dataclass(frozen=True)
class PromptVerdict:
    """All checks for one image against its PromptSpec, and what was detected."""

    spec: PromptSpec
    objects: tuple[ObjectVerdict, ...]
    relation: bool | None  # None when the prompt states no relation
    exclusive: bool  # no object beyond those the prompt asks for
    detections: tuple[Detection, ...] = field(default=())
    quality: bool | None = None  # the image's quality flag (None: not checked, lenient mode)

    @property
    def passed(self) -> bool:
        """The prompt-level verdict: every check holds, the quality flag included."""
        checks = [v.present and v.color and v.count for v in self.objects]
        return (all(checks) and self.relation is not False and self.exclusive
                and self.quality is not False)

    def to_dict(self) -> dict:
        """JSON-ready dict, with the prompt-level verdict under "passed"."""
        return {**asdict(self), "passed": self.passed}


def _matches(det: Detection, req: ObjectSpec) -> bool:
    return (req.shape is None or det.shape == req.shape) and (
        req.color is None or det.color == req.color
    )


def relative_position(a: Detection, b: Detection) -> set[str]:
    """Relations of `a` to `b` by box centres, GenEval's rule: the offset along each axis is
    first reduced by POSITION_THRESHOLD x the two boxes' sizes, then must dominate."""
    boxes = np.array([a.bbox, b.bbox]).reshape(2, 2, 2)  # (object, corner, xy)
    center_a, center_b = boxes.mean(axis=1)
    dims = np.abs(boxes[:, 1] - boxes[:, 0])  # (2, xy)
    offset = center_a - center_b
    revised = np.maximum(np.abs(offset) - POSITION_THRESHOLD * dims.sum(0), 0) * np.sign(offset)
    if np.all(np.abs(revised) < 1e-3):
        return set()
    dx, dy = revised / np.linalg.norm(offset)
    rels = {"left of": dx < -0.5, "right of": dx > 0.5, "above": dy < -0.5, "below": dy > 0.5}
    return {name for name, holds in rels.items() if holds}


def check(detections: list[Detection] | tuple[Detection, ...], spec: PromptSpec) -> PromptVerdict:
    """Score a list of detections against `spec` (present, colour, count, relation, exclusive)."""
    verdicts, groups = [], []
    for req in spec.objects:
        of_shape = [d for d in detections if req.shape is None or d.shape == req.shape]
        if req.shape is None:  # "two red things": presence is about the colour
            of_shape = [d for d in detections if _matches(d, req)]
        both = [d for d in detections if _matches(d, req)]
        verdicts.append(ObjectVerdict(req, bool(of_shape), len(both) >= req.count,
                                      len(both) == req.count, len(both)))
        groups.append(both)
    relation = None
    if spec.relation is not None:
        if spec.relation not in RELATIONS:
            raise ValueError(f"unknown relation {spec.relation!r}; valid: {list(RELATIONS)}")
        a, b = groups[0], groups[1]
        relation = bool(a and b) and all(
            spec.relation in relative_position(x, y) for x in a for y in b
        )
    exclusive = all(any(_matches(d, req) for req in spec.objects) for d in detections)
    return PromptVerdict(spec, tuple(verdicts), relation, exclusive, tuple(detections))


def score(image: np.ndarray, spec: PromptSpec, tol: float = 60.0,
          strict: bool = True, vocabulary: str = "world") -> PromptVerdict:
    """Detect the objects of one (H, W, 3) uint8 image and score them against `spec`; with
    `strict`, the image's quality flag counts too (off `strict` is the lenient evaluator that
    ignored off-palette mass, debris and shapes fitting between 0.6 and STRICT_SHAPE_IOU)."""
    seen = inspect(image, tol, vocabulary)
    verdict = check(seen.detections, spec)
    return replace(verdict, quality=seen.quality_ok) if strict else verdict


# ----------------------------------------------------------------------------- evaluate


@dataclass(frozen=True)
class ShapeEvalReport:
    """Accuracy (fraction of prompts passed) overall, per category and per check."""

    overall: float
    per_category: dict[str, float]
    criteria: dict[str, float]  # pass rate of each check over the objects / prompts it applies to
    prompts: tuple[PromptVerdict, ...]

    def to_dict(self, detections: bool = False) -> dict:
        """JSON-ready dict; per-prompt detections only when asked (they are bulky)."""
        rows = []
        for v in self.prompts:
            row = v.to_dict()
            if not detections:
                row.pop("detections")
            rows.append(row)
        return {"overall": self.overall, "per_category": self.per_category,
                "criteria": self.criteria, "prompts": rows}


def _rate(flags: list[bool]) -> float:
    return float(np.mean(flags)) if flags else float("nan")


def evaluate(images: np.ndarray | torch.Tensor | list, specs: list[PromptSpec],
             tol: float = 60.0, strict: bool = True,
             vocabulary: str = "world") -> ShapeEvalReport:
    """Score images (uint8 (N, H, W, 3) or float [-1, 1] (N, 3, H, W)) against their specs
    (`strict`: the quality flag counts; see `score`) with the evaluator `vocabulary`."""
    get_vocabulary(vocabulary)
    images = to_uint8_images(images)
    if len(images) != len(specs):
        raise ValueError(f"got {len(images)} images but {len(specs)} prompt specs; "
                         "pass one spec per image")
    verdicts = tuple(score(img, spec, tol, strict, vocabulary)
                     for img, spec in zip(images, specs, strict=True))
    cats: dict[str, list[bool]] = {}
    for v in verdicts:
        cats.setdefault(v.spec.category, []).append(v.passed)
    objs = [o for v in verdicts for o in v.objects]
    criteria = {
        "present": _rate([o.present for o in objs]),
        "color": _rate([o.color for o in objs]),
        "count": _rate([o.count for o in objs]),
        "relation": _rate([v.relation for v in verdicts if v.relation is not None]),
        "exclusive": _rate([v.exclusive for v in verdicts]),
        "quality": _rate([v.quality for v in verdicts if v.quality is not None]),
    }
    return ShapeEvalReport(_rate([v.passed for v in verdicts]),
                           {c: _rate(f) for c, f in sorted(cats.items())}, criteria, verdicts)


# ----------------------------------------------------------------------------- validation


def scene_detections(scene: Scene) -> list[Detection]:
    """The exact objects of a `difflab.data.shapes.Scene`, as detections (ground truth)."""
    return [Detection(o.shape, o.color, (o.x, o.y), o.bbox, o.side**2, 1.0) for o in scene.objects]


def validate(size: int = 32, n_seeds: int = 2, suite: str = "all", noise: float = 8 / 255,
             blur: float = 0.5, seed: int = 0, vocabulary: str | None = None) -> dict:
    """Accuracy of the evaluator on ground-truth renders of `suite`: clean, noised, blurred,
    and the rate at which it rejects a render scored against a prompt it does not satisfy
    (`vocabulary` None: the one `specs_vocabulary` picks for the suite)."""
    from difflab.data.shapes import load_suite, render_spec
    from difflab.eval.features import add_gaussian_noise, gaussian_blur

    if n_seeds < 1:
        raise ValueError(f"n_seeds must be >= 1, got {n_seeds}")
    specs = load_suite(suite)
    vocabulary = get_vocabulary(vocabulary or specs_vocabulary(specs)).name
    rng = np.random.default_rng(seed)
    rows: dict[str, dict[str, list[bool]]] = {}
    for s in range(n_seeds):
        renders = [render_spec(spec, size, seed=spec.seed * 1000 + s) for spec in specs]
        images = np.stack([img for img, _ in renders])
        variants = {"clean": images, "noise": add_gaussian_noise(images, noise, seed=seed + s),
                    "blur": gaussian_blur(images, blur)}
        for i, (spec, (_, scene)) in enumerate(zip(specs, renders, strict=True)):
            row = rows.setdefault(spec.category, {k: [] for k in (*variants, "reject", "truth")})
            row["truth"].append(check(scene_detections(scene), spec).passed)
            for name, imgs in variants.items():
                row[name].append(score(imgs[i], spec, vocabulary=vocabulary).passed)
            # A wrong prompt: a random other spec that the true scene does not satisfy.
            wrong = (specs[j] for j in rng.permutation(len(specs)))
            other = next((o for o in wrong if not check(scene_detections(scene), o).passed), None)
            if other is not None:
                row["reject"].append(not score(images[i], other, vocabulary=vocabulary).passed)
    table = {cat: {k: _rate(v) for k, v in r.items()} | {"n": len(r["clean"])}
             for cat, r in sorted(rows.items())}
    pooled = {k: [x for r in rows.values() for x in r[k]] for k in next(iter(rows.values()))}
    table["overall"] = {k: _rate(v) for k, v in pooled.items()} | {"n": len(pooled["clean"])}
    return {"size": size, "n_seeds": n_seeds, "suite": suite, "noise": noise, "blur": blur,
            "vocabulary": vocabulary, "table": table}



# ----------------------------------------------------------------------------- layouts


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes (0 when either is empty)."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def requested_mask(shape: str, box: Sequence[float], size: int) -> np.ndarray:
    """The (size, size) bool mask of `shape` drawn in pixel box `box` as the world draws it:
    centred, with the side of the box's shorter edge (the world's objects are square-boxed)."""
    x0, y0, x1, y1 = box
    r = min(x1 - x0, y1 - y0) / 2
    c = np.arange(size, dtype=np.float32) + 0.5
    sdf = shape_sdf(shape, (c - (x0 + x1) / 2)[None, :], (c - (y0 + y1) / 2)[:, None], r)
    return np.clip(0.5 - sdf, 0.0, 1.0) >= 0.5


def detected_mask(image: np.ndarray, det: Detection, tol: float = 60.0,
                  vocabulary: str = "world") -> np.ndarray:
    """The pixel mask (H, W) bool of detection `det`: the component of its colour that
    overlaps its box most."""
    vocab = get_vocabulary(vocabulary)
    label, _, _ = _segment(to_uint8_images(image)[0], tol, vocab.lines)
    lab, n = ndimage.label(label == vocab.colors.index(det.color), structure=np.ones((3, 3)))
    x0, y0, x1, y1 = (int(np.floor(det.bbox[0])), int(np.floor(det.bbox[1])),
                      int(np.ceil(det.bbox[2])), int(np.ceil(det.bbox[3])))
    window = lab[max(y0, 0):y1, max(x0, 0):x1]
    ids, counts = np.unique(window[window > 0], return_counts=True)
    return lab == ids[counts.argmax()] if ids.size else np.zeros(label.shape, bool)


@dataclass(frozen=True)
class ObjectPlacement:
    """How well one requested object landed in its box: box and mask IoU (0 when absent)."""

    shape: str
    color: str
    box: tuple[float, float, float, float]  # requested, pixels
    found: bool
    box_iou: float
    mask_iou: float


def score_layout(image: np.ndarray, objects: Sequence[tuple[str, str]],
                 boxes: Sequence[Sequence[float]], tol: float = 60.0) -> list[ObjectPlacement]:
    """Per requested (shape, colour) object and its pixel box: the matching detection with the
    highest box IoU, its box IoU and the IoU of its pixel mask with the requested mask."""
    img = to_uint8_images(image)[0]
    dets = detect(img, tol)
    out = []
    for (shape, color), box in zip(objects, boxes, strict=True):
        cands = [d for d in dets if d.shape == shape and d.color == color]
        best = max(cands, key=lambda d: box_iou(d.bbox, box), default=None)
        if best is None:
            out.append(ObjectPlacement(shape, color, tuple(box), False, 0.0, 0.0))
            continue
        want, got = requested_mask(shape, box, img.shape[0]), detected_mask(img, best, tol)
        union = (want | got).sum()
        mask_iou = float((want & got).sum() / union) if union else 0.0
        out.append(ObjectPlacement(shape, color, tuple(box), True, box_iou(best.bbox, box),
                                   mask_iou))
    return out
