"""The shapes world: scenes of non-overlapping objects, anti-aliased SDF rendering, render_spec.

Rendering uses analytic pixel coverage from signed distance functions (as in Inigo Quilez's
"2D distance functions" notes): coverage = clip(0.5 - sdf, 0, 1) with sdf in pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from difflab.data.suites import HELDOUT_PAIRS, SUITE_VERSION, SUITES, load_suite
from difflab.data.world import (
    ALL_COLORS,
    ALL_SHAPES,
    BACKGROUND,
    COLORS,
    RELATIONS,
    SHAPES,
    SIZES,
    PromptSpec,
)

__all__ = [
    "HELDOUT_PAIRS",
    "IMAGE_SIZES",
    "SUITES",
    "SUITE_VERSION",
    "Scene",
    "SceneObject",
    "load_suite",
    "object_masks",
    "place_objects",
    "relation_holds",
    "render",
    "render_spec",
    "render_specs",
    "shape_sdf",
]

IMAGE_SIZES: tuple[int, ...] = (16, 32, 64, 128)
SIZE_ORDER: tuple[str, ...] = ("large", "medium", "small")  # shrink order when placement fails
# Generated relations are unambiguous: the displacement along the relation's axis is at
# least this many times the displacement across it (relation_holds itself uses 1).
RELATION_DOMINANCE = 2.0


@dataclass(frozen=True)
class SceneObject:
    """One object: shape, colour and size names, centre (x, y) in pixels of a `scene_size` image."""

    shape: str
    color: str
    size: str
    x: float
    y: float
    scene_size: int

    @property
    def side(self) -> float:
        """The bounding-box side in pixels."""
        return SIZES[self.size] * self.scene_size

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) in pixels; y grows downwards."""
        h = self.side / 2
        return (self.x - h, self.y - h, self.x + h, self.y + h)


@dataclass(frozen=True)
class Scene:
    """A `size`x`size` image's objects (none overlap; see `place_objects`)."""

    size: int
    objects: tuple[SceneObject, ...]

    def boxes(self, normalized: bool = False) -> list[tuple[float, float, float, float]]:
        """Each object's (x0, y0, x1, y1) box in pixels, or as fractions of the side."""
        k = 1.0 / self.size if normalized else 1.0
        return [tuple(v * k for v in o.bbox) for o in self.objects]

    def count(self, shape: str | None = None, color: str | None = None) -> int:
        """How many objects match `shape` and `color` (None matches any)."""
        return sum(
            (shape is None or o.shape == shape) and (color is None or o.color == color)
            for o in self.objects
        )


def check_image_size(size: int) -> int:
    """Return `size` if the world renders it, else raise naming the valid sizes."""
    if size not in IMAGE_SIZES:
        raise ValueError(f"image size {size!r} is not supported; valid: {list(IMAGE_SIZES)}")
    return size


# ----------------------------------------------------------------------------- SDFs
# Each takes pixel offsets from the object centre px (1, w), py (h, 1) and the half side
# `r` (pixels) and returns signed distance (h, w): negative inside.


def _box(px: np.ndarray, py: np.ndarray, hx: float, hy: float) -> np.ndarray:
    qx, qy = np.abs(px) - hx, np.abs(py) - hy
    outside = np.hypot(np.maximum(qx, 0.0), np.maximum(qy, 0.0))
    return outside + np.minimum(np.maximum(qx, qy), 0.0)


def _sdf_circle(px, py, r):
    return np.hypot(px, py) - r


def _sdf_square(px, py, r):
    return _box(px, py, r, r)


def _sdf_triangle(px, py, r):
    # Upward triangle with apex (0, -r) and base corners (+-r, r): max of edge half-planes.
    s5 = math.sqrt(5.0)
    base = py - r
    left = (-2.0 * px - (py + r)) / s5
    right = (2.0 * px - (py + r)) / s5
    return np.maximum(base, np.maximum(left, right))


def _sdf_diamond(px, py, r):
    return (np.abs(px) + np.abs(py) - r) / math.sqrt(2.0)


def _sdf_cross(px, py, r):
    t = r / 3.0  # arm half-thickness: each arm is a third of the side wide
    return np.minimum(_box(px, py, r, t), _box(px, py, t, r))


def _sdf_ring(px, py, r):
    # Annulus from 0.5 r to r.
    return np.abs(np.hypot(px, py) - 0.75 * r) - 0.25 * r


def _polygon(px, py, verts: Sequence[tuple[float, float]]):
    """Exact signed distance to a simple polygon (Quilez's sdPolygon): the nearest edge's
    distance, negative inside by the crossing-number rule."""
    d2 = (px - verts[0][0]) ** 2 + (py - verts[0][1]) ** 2
    inside = np.zeros(np.broadcast(px, py).shape, bool)
    for (xi, yi), (xj, yj) in zip(verts, verts[-1:] + verts[:-1], strict=True):
        ex, ey, wx, wy = xj - xi, yj - yi, px - xi, py - yi
        t = np.clip((wx * ex + wy * ey) / (ex * ex + ey * ey), 0.0, 1.0)
        d2 = np.minimum(d2, (wx - ex * t) ** 2 + (wy - ey * t) ** 2)
        above, below, left = py >= yi, py < yj, ex * wy > ey * wx
        inside ^= (above & below & left) | ~(above | below | left)
    return np.where(inside, -1.0, 1.0) * np.sqrt(d2)


def _star_vertices(inner: float = 0.5) -> list[tuple[float, float]]:
    """A 5-pointed star (inner/outer radius `inner`), apex up, stretched (~5%) to touch all four
    sides of the [-1, 1] box: (u, v) per vertex, v down. The default 0.5 is stouter than the
    pentagram's 0.382, whose 7 px star fits its own drawing at soft IoU 0.71 (0.84 at 0.5)."""
    angles = [-math.pi / 2 + k * math.pi / 5 for k in range(10)]
    pts = [(rho * math.cos(a), rho * math.sin(a))
           for a, rho in zip(angles, [1.0, inner] * 5, strict=True)]
    x_half, y_lo, y_hi = math.sin(0.4 * math.pi), -1.0, math.cos(0.2 * math.pi)
    y_mid, y_half = (y_lo + y_hi) / 2, (y_hi - y_lo) / 2
    return [(x / x_half, (y - y_mid) / y_half) for x, y in pts]


def _heart_geometry() -> tuple[float, list[tuple[float, float]]]:
    """A heart in the [-1, 1] box (v down): two lobes of radius 1/2 centred at (+-1/2, -1/2)
    and the polygon from the tip (0, 1) along both lobes' outer tangents to their centres."""
    rho, (cx, cy), (tx, ty) = 0.5, (0.5, -0.5), (0.0, 1.0)
    d = math.hypot(tx - cx, ty - cy)
    phi = math.atan2(ty - cy, tx - cx) - math.acos(rho / d)  # the outer tangent point's angle
    px, py = cx + rho * math.cos(phi), cy + rho * math.sin(phi)
    return rho, [(tx, ty), (px, py), (cx, cy), (-cx, cy), (-px, py)]


STAR_VERTICES = _star_vertices()
HEART_LOBE, HEART_POLYGON = _heart_geometry()


def _sdf_star(px, py, r):
    return _polygon(px, py, [(u * r, v * r) for u, v in STAR_VERTICES])


def _sdf_heart(px, py, r):
    lobes = [np.hypot(px - sx * r / 2, py + r / 2) - HEART_LOBE * r for sx in (-1, 1)]
    return np.minimum(np.minimum(*lobes), _polygon(px, py, [(u * r, v * r)
                                                            for u, v in HEART_POLYGON]))


_SDFS = {
    "circle": _sdf_circle,
    "square": _sdf_square,
    "triangle": _sdf_triangle,
    "diamond": _sdf_diamond,
    "cross": _sdf_cross,
    "ring": _sdf_ring,
    "star": _sdf_star,
    "heart": _sdf_heart,
}
assert set(_SDFS) == set(ALL_SHAPES)


def shape_sdf(shape: str, px: np.ndarray, py: np.ndarray, r: float) -> np.ndarray:
    """Signed distance (negative inside) to `shape` of half side `r` centred at the origin."""
    if shape not in _SDFS:
        raise ValueError(f"unknown shape {shape!r}; valid: {list(ALL_SHAPES)}")
    return _SDFS[shape](px, py, r)


def render(scene: Scene, size: int | None = None) -> np.ndarray:
    """Render `scene` (rescaled to `size`, default its own) as an (H, W, 3) uint8 image."""
    size = check_image_size(scene.size if size is None else size)
    k = size / scene.size
    img = np.empty((size, size, 3), np.float32)
    img[:] = BACKGROUND
    for o in scene.objects:
        cx, cy, r = o.x * k, o.y * k, o.side * k / 2
        # Only the bbox window (+1 px of anti-aliasing) is touched: (h, w) per object.
        x0, x1 = max(int(cx - r) - 1, 0), min(int(math.ceil(cx + r)) + 1, size)
        y0, y1 = max(int(cy - r) - 1, 0), min(int(math.ceil(cy + r)) + 1, size)
        px = (np.arange(x0, x1, dtype=np.float32) + 0.5 - cx)[None, :]
        py = (np.arange(y0, y1, dtype=np.float32) + 0.5 - cy)[:, None]
        alpha = np.clip(0.5 - _SDFS[o.shape](px, py, r), 0.0, 1.0)[..., None]  # (h, w, 1)
        win = img[y0:y1, x0:x1]
        win += alpha * (np.asarray(ALL_COLORS[o.color], np.float32) - win)
    return np.rint(img).astype(np.uint8)


def object_masks(scene: Scene, size: int | None = None) -> np.ndarray:
    """Each object's pixel mask (N, H, W) bool at `size` (default the scene's): the pixels it
    covers at least half of, as `render` draws it (objects never overlap)."""
    size = check_image_size(scene.size if size is None else size)
    k = size / scene.size
    centres = np.arange(size, dtype=np.float32) + 0.5
    masks = np.zeros((len(scene.objects), size, size), bool)
    for i, o in enumerate(scene.objects):
        px, py = (centres - o.x * k)[None, :], (centres - o.y * k)[:, None]
        masks[i] = np.clip(0.5 - _SDFS[o.shape](px, py, o.side * k / 2), 0.0, 1.0) >= 0.5
    return masks


# ----------------------------------------------------------------------------- placement


def relation_holds(a: SceneObject, b: SceneObject, relation: str, dominance: float = 1.0) -> bool:
    """True when `a` is `relation` `b` by centres, along the relation's dominant axis.

    "a left of b": b.x - a.x > 0 and |dx| > dominance * |dy| (y grows downwards).
    """
    if relation not in RELATIONS:
        raise ValueError(f"unknown relation {relation!r}; valid: {list(RELATIONS)}")
    dx, dy = b.x - a.x, b.y - a.y
    along, across = {
        "left of": (dx, dy),
        "right of": (-dx, dy),
        "above": (dy, dx),
        "below": (-dy, dx),
    }[relation]
    return along > 0 and abs(along) > dominance * abs(across)


def _margin(size: int) -> float:
    return max(1.0, 0.04 * size)


def _candidate_ok(
    xs: np.ndarray, ys: np.ndarray, half: float, placed: list[SceneObject], gap: float
) -> np.ndarray:
    """Which candidate centres (K,) keep a `gap` between their bbox and every placed bbox."""
    ok = np.ones(xs.shape, bool)
    for o in placed:
        reach = half + o.side / 2 + gap
        ok &= (np.abs(xs - o.x) >= reach) | (np.abs(ys - o.y) >= reach)
    return ok


def _relation_ok(
    xs: np.ndarray, ys: np.ndarray, g: int, placed: list[SceneObject], groups: list[int], rel: str
) -> np.ndarray:
    """Which candidates (K,) of group `g` keep `rel` (group 0 to group 1) with placed objects."""
    ok = np.ones(xs.shape, bool)
    sign = 1.0 if rel in ("left of", "above") else -1.0  # along-axis displacement must be > 0
    for o, go in zip(placed, groups, strict=False):  # groups also lists unplaced objects
        if {g, go} != {0, 1}:
            continue
        # Displacement from the group-0 object to the group-1 object: (K,)
        dx, dy = (o.x - xs, o.y - ys) if g == 0 else (xs - o.x, ys - o.y)
        along, across = (dx, dy) if rel in ("left of", "right of") else (dy, dx)
        ok &= (sign * along > 0) & (np.abs(along) > RELATION_DOMINANCE * np.abs(across))
    return ok


def place_objects(
    rng: np.random.Generator,
    kinds: list[tuple[str, str, str]],
    size: int,
    groups: list[int] | None = None,
    relation: str | None = None,
    tries: int = 20,
) -> Scene:
    """Place objects given as (shape, colour, size name) without overlap, with a margin.

    With `relation`, every object of group 0 must stand in `relation` to every object of
    group 1 (groups[i] is object i's group). Objects that cannot fit are shrunk a size.
    """
    check_image_size(size)
    groups = groups if groups is not None else [0] * len(kinds)
    if len(groups) != len(kinds):
        raise ValueError(f"{len(groups)} groups for {len(kinds)} objects")
    if relation is not None and relation not in RELATIONS:
        raise ValueError(f"unknown relation {relation!r}; valid: {list(RELATIONS)}")
    gap = _margin(size)
    for _ in range(tries):
        placed: list[SceneObject] = []
        for (shape, color, size_name), g in zip(kinds, groups, strict=True):
            obj = _place_one(rng, shape, color, size_name, size, placed, groups, g, relation, gap)
            if obj is None:
                break
            placed.append(obj)
        if len(placed) == len(kinds):
            return Scene(size, tuple(placed))
    raise RuntimeError(f"could not place {len(kinds)} objects in a {size}px image: {kinds}")


def _place_one(rng, shape, color, size_name, size, placed, groups, g, relation, gap, k=64):
    """Sample `k` candidate centres at once; take the first valid one, shrinking if none is."""
    for name in SIZE_ORDER[SIZE_ORDER.index(size_name) :]:
        half = SIZES[name] * size / 2
        lo, hi = half + gap / 2, size - half - gap / 2
        xs, ys = rng.uniform(lo, hi, k), rng.uniform(lo, hi, k)
        ok = _candidate_ok(xs, ys, half, placed, gap)
        if relation is not None:
            ok &= _relation_ok(xs, ys, g, placed, groups, relation)
        hits = np.flatnonzero(ok)
        if hits.size:
            i = hits[0]
            return SceneObject(shape, color, name, float(xs[i]), float(ys[i]), size)
    return None


# ----------------------------------------------------------------------------- render_spec


def _free_choice(rng, value: str | None, options: tuple[str, ...]) -> str:
    return value if value is not None else options[int(rng.integers(len(options)))]


def _spec_kinds(spec: PromptSpec, rng: np.random.Generator) -> tuple[list, list[int]]:
    """(shape, colour, size) per object and its group, with `None` attributes drawn at random
    such that no object also matches another group's requirement (so counts stay exact)."""
    kinds, groups = [], []
    n_total = sum(o.count for o in spec.objects)
    sizes = SIZE_ORDER if n_total <= 2 else SIZE_ORDER[1:]
    for gi, req in enumerate(spec.objects):
        others = [o for j, o in enumerate(spec.objects) if j != gi]
        for _ in range(req.count):
            for _attempt in range(100):
                shape = _free_choice(rng, req.shape, SHAPES)
                color = _free_choice(rng, req.color, tuple(COLORS))
                if not any(
                    (o.shape in (None, shape)) and (o.color in (None, color)) for o in others
                ):
                    break
            else:
                raise ValueError(f"spec {spec.text!r}: object groups cannot be told apart")
            kinds.append((shape, color, sizes[int(rng.integers(len(sizes)))]))
            groups.append(gi)
    return kinds, groups


def render_spec(spec: PromptSpec, size: int = 32, seed: int = 0) -> tuple[np.ndarray, Scene]:
    """A random scene that satisfies `spec` exactly (objects, counts, relation), rendered."""
    check_image_size(size)
    if spec.relation is not None and len(spec.objects) < 2:
        raise ValueError(f"spec {spec.text!r} has a relation but fewer than two objects")
    rng = np.random.default_rng(seed)
    kinds, groups = _spec_kinds(spec, rng)
    order = rng.permutation(len(kinds))  # random placement order, so group 0 is not favoured
    scene = place_objects(
        rng, [kinds[i] for i in order], size, [groups[i] for i in order], spec.relation
    )
    return render(scene), scene


def render_specs(specs: Sequence[PromptSpec], seeds: Sequence[int], size: int) -> np.ndarray:
    """Ground-truth renders (N, size, size, 3) uint8 of specs[i] with seeds[i]: the real set
    that Fréchet distance and the other feature metrics compare generated images to."""
    pairs = zip(specs, seeds, strict=True)
    return np.stack([render_spec(spec, size=size, seed=seed)[0] for spec, seed in pairs])
