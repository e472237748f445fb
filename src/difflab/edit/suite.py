"""The `edit` suite: shapes scenes with one requested change each, and how edits are scored.

Case k of a split is drawn from seed EDIT_SEED_BASE + k' * SEED_STRIDE, where k' = k in the dev
split and TEST_FIRST_IMAGE + k in the test split (the prompt suites' convention,
`difflab.data.suites`), so dev and test never share a scene. Kinds cycle recolor, reshape, move,
remove. Scenes hold 1-3 objects (2-3 for remove) of distinct shapes and distinct colours, none a
held-out pair before or after the change, so every word names one object and a recolour or
reshape is a one-word swap of the caption ("a red circle and a blue square" -> "a green circle
and a blue square"). The world gives the target scene exactly: an edit succeeds when the
evaluator passes the edited image against the target's PromptSpec, and preservation is the PSNR
against the source outside the edit box (the union of the edited object's boxes before and
after, grown by 1 px).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from difflab.config import ConfigError
from difflab.data.captions import a_noun
from difflab.data.shapes import Scene, SceneObject, place_objects, render
from difflab.data.suites import SEED_STRIDE, TEST_FIRST_IMAGE, TRAIN_PAIRS, check_split
from difflab.data.world import COLORS, HELDOUT_PAIRS, SHAPES, ObjectSpec, PromptSpec
from difflab.eval.shapeeval import score

EDIT_KINDS: tuple[str, ...] = ("recolor", "reshape", "move", "remove")
EDIT_SEED_BASE = 9000  # after the novel-concept suites' seeds (6000-8999)
PSNR_CAP = 100.0  # dB reported for an unchanged region (its MSE is 0)
BOX_MARGIN = 1.0  # px added around the edited object's boxes (anti-aliased edges)


@dataclass(frozen=True)
class EditCase:
    """One requested change: source and target scene, their captions and specs, the edit box."""

    index: int
    seed: int
    kind: str
    source: Scene
    target: Scene
    edited: int  # index of the changed object in source.objects
    source_prompt: str
    target_prompt: str
    source_object: str  # "a red circle": the edited object before
    target_object: str  # after ("" when removed)

    @property
    def target_spec(self) -> PromptSpec:
        return scene_spec(self.target, self.target_prompt, f"edit-{self.kind}", self.seed)

    @property
    def source_spec(self) -> PromptSpec:
        return scene_spec(self.source, self.source_prompt, f"edit-{self.kind}", self.seed)

    @property
    def one_word(self) -> bool:
        """Whether the prompts differ in one word (what text-only editing can express)."""
        return self.kind in ("recolor", "reshape")

    def box(self) -> np.ndarray:
        """(H, W) bool: the pixels the edit may change."""
        boxes = [self.source.objects[self.edited].bbox]
        if self.kind == "move":
            boxes.append(self.target.objects[self.edited].bbox)
        return box_mask(boxes, self.source.size, BOX_MARGIN)

    def boxes(self) -> tuple[np.ndarray, np.ndarray | None]:
        """(source object's box, target object's box or None when removed), each (H, W)."""
        size = self.source.size
        before = box_mask([self.source.objects[self.edited].bbox], size, BOX_MARGIN)
        if self.kind == "remove":
            return before, None
        return before, box_mask([self.target.objects[self.edited].bbox], size, BOX_MARGIN)


def scene_spec(scene: Scene, text: str, category: str, seed: int = 0) -> PromptSpec:
    """The PromptSpec a scene satisfies exactly: each of its objects once."""
    return PromptSpec(text, category, tuple(ObjectSpec(o.shape, o.color) for o in scene.objects),
                      seed=seed)


def caption(scene: Scene) -> str:
    """'a red circle and a blue square' (the binding suite's form), in object order."""
    return " and ".join(a_noun(o.shape, o.color) for o in scene.objects)


def box_mask(boxes: Sequence[tuple[float, float, float, float]], size: int,
             margin: float = 0.0) -> np.ndarray:
    """(size, size) bool: pixels whose square meets any box (x0, y0, x1, y1) grown by margin."""
    out = np.zeros((size, size), bool)
    idx = np.arange(size)
    for x0, y0, x1, y1 in boxes:
        cols = (idx + 1 > x0 - margin) & (idx < x1 + margin)
        rows = (idx + 1 > y0 - margin) & (idx < y1 + margin)
        out |= rows[:, None] & cols[None, :]
    return out


def _pick(rng: np.random.Generator, options: Sequence) -> object:
    return options[int(rng.integers(len(options)))]


def _moved(rng: np.random.Generator, scene: Scene, i: int) -> SceneObject | None:
    """Object i at a new place: clear of the other objects and of its own old box."""
    o, size = scene.objects[i], scene.size
    half, gap = o.side / 2, max(1.0, 0.04 * size)
    xs, ys = rng.uniform(half + gap / 2, size - half - gap / 2, (2, 256))
    ok = np.ones(256, bool)
    for other in scene.objects:  # the old place counts as an obstacle too
        reach = half + other.side / 2 + gap
        ok &= (np.abs(xs - other.x) >= reach) | (np.abs(ys - other.y) >= reach)
    hits = np.flatnonzero(ok)
    if not hits.size:
        return None
    j = hits[0]
    return SceneObject(o.shape, o.color, o.size, float(xs[j]), float(ys[j]), size)


def edit_case(index: int, seed: int, kind: str, size: int = 32) -> EditCase:
    """The case drawn from `seed`: a scene, one object of it and its change of `kind`."""
    if kind not in EDIT_KINDS:
        raise ConfigError(f"unknown edit kind {kind!r}; valid: {', '.join(EDIT_KINDS)}")
    rng = np.random.default_rng(seed)
    for _ in range(100):
        n = int(rng.integers(2, 4)) if kind == "remove" else int(rng.integers(1, 4))
        order = rng.permutation(len(TRAIN_PAIRS))
        pairs: list[tuple[str, str]] = []
        for j in order:  # distinct shapes and distinct colours
            s, c = TRAIN_PAIRS[j]
            if all(s != p[0] and c != p[1] for p in pairs):
                pairs.append((s, c))
            if len(pairs) == n:
                break
        sizes = ("medium", "large") if n <= 2 else ("medium",)
        try:
            scene = place_objects(rng, [(s, c, _pick(rng, sizes)) for s, c in pairs], size)
        except RuntimeError:
            continue
        i = int(rng.integers(n))
        new = None if kind == "remove" else _change(rng, scene, i, kind)
        if new is not None or kind == "remove":
            break
    else:
        raise RuntimeError(f"edit case {index} (seed {seed}): no valid {kind} edit found")
    objects = list(scene.objects)
    if new is None:
        objects.pop(i)
    else:
        objects[i] = new
    target = Scene(size, tuple(objects))
    o = scene.objects[i]
    return EditCase(index, seed, kind, scene, target, i, caption(scene), caption(target),
                    a_noun(o.shape, o.color),
                    "" if kind == "remove" else a_noun(objects[i].shape, objects[i].color))


def _change(rng: np.random.Generator, scene: Scene, i: int, kind: str) -> SceneObject | None:
    """Object i recoloured, reshaped or moved (None when no place is free for a move)."""
    o = scene.objects[i]
    if kind == "move":
        return _moved(rng, scene, i)
    if kind == "recolor":
        used = {p.color for p in scene.objects}
        options = [c for c in COLORS if c not in used and (o.shape, c) not in HELDOUT_PAIRS]
        return SceneObject(o.shape, str(_pick(rng, options)), o.size, o.x, o.y, o.scene_size)
    used = {p.shape for p in scene.objects}
    options = [s for s in SHAPES if s not in used and (s, o.color) not in HELDOUT_PAIRS]
    return SceneObject(str(_pick(rng, options)), o.color, o.size, o.x, o.y, o.scene_size)


def case_seed(k: int, split: str) -> int:
    """The seed of case k of `split` (k counted from TEST_FIRST_IMAGE in the test split)."""
    return EDIT_SEED_BASE + (k + (TEST_FIRST_IMAGE if split == "test" else 0)) * SEED_STRIDE


def edit_suite(split: str, count: int, first: int = 0, size: int = 32,
               kinds: Sequence[str] = EDIT_KINDS) -> list[EditCase]:
    """Cases first..first+count-1 of `split`, kinds cycling; `kinds` keeps only those kinds."""
    check_split(split)
    if count < 1 or first < 0:
        raise ConfigError(f"need count >= 1 and first >= 0, got {count}, {first}")
    if split == "dev" and first + count > TEST_FIRST_IMAGE:
        raise ConfigError(f"dev cases are k < {TEST_FIRST_IMAGE}; cases {first}.."
                          f"{first + count - 1} reach the test split's seeds")
    bad = [k for k in kinds if k not in EDIT_KINDS]
    if bad:
        raise ConfigError(f"unknown edit kinds {bad}; valid: {', '.join(EDIT_KINDS)}")
    ks = range(first, first + count)
    return [edit_case(k, case_seed(k, split), EDIT_KINDS[k % len(EDIT_KINDS)], size)
            for k in ks if EDIT_KINDS[k % len(EDIT_KINDS)] in kinds]


def source_images(cases: Sequence[EditCase]) -> np.ndarray:
    """(N, H, W, 3) uint8 renders of the source scenes."""
    return np.stack([render(c.source) for c in cases])


def psnr_outside(image: np.ndarray, reference: np.ndarray, region: np.ndarray) -> float:
    """PSNR (dB) of `image` against `reference` (uint8 (H, W, 3)) over the pixels outside
    `region` (H, W); PSNR_CAP when they are equal there."""
    keep = ~region
    d = image[keep].astype(np.float64) - reference[keep].astype(np.float64)
    mse = float((d**2).mean()) if d.size else 0.0
    return PSNR_CAP if mse == 0 else min(PSNR_CAP, 10 * np.log10(255.0**2 / mse))


def score_edits(images: np.ndarray, cases: Sequence[EditCase],
                min_psnr: float = 30.0) -> list[dict]:
    """Per case: success (the evaluator passes the target spec; for a move, the object is also
    found inside its new box), PSNR outside the edit box, and `ok` = success and PSNR >=
    min_psnr."""
    if len(images) != len(cases):
        raise ConfigError(f"{len(images)} images for {len(cases)} edit cases")
    rows = []
    for img, case in zip(images, cases, strict=True):
        verdict = score(img, case.target_spec)
        passed = verdict.passed and (case.kind != "move" or _moved_there(case, verdict))
        p = psnr_outside(img, render(case.source), case.box())
        rows.append({"index": case.index, "kind": case.kind, "success": bool(passed),
                     "psnr_outside": round(p, 3), "ok": bool(passed and p >= min_psnr)})
    return rows


def _moved_there(case: EditCase, verdict) -> bool:
    """Whether the moved object is detected with its centre inside its new box."""
    o = case.target.objects[case.edited]
    x0, y0, x1, y1 = o.bbox
    return any(d.shape == o.shape and d.color == o.color and x0 <= d.center[0] <= x1
               and y0 <= d.center[1] <= y1 for d in verdict.detections)


def move_guide(case: EditCase) -> np.ndarray:
    """For a move: the source render with the object's box copied, pixel for pixel, to its
    new place (shifted by the whole-pixel offset), uint8 (H, W, 3) - the layout a user drags
    into being; its old place still shows it (the edit's inpainting removes it)."""
    if case.kind != "move":
        raise ConfigError(f"a move guide is for move cases, not {case.kind}")
    source = render(case.source)
    guide = source.copy()
    old, new = case.source.objects[case.edited], case.target.objects[case.edited]
    dx, dy = round(new.x - old.x), round(new.y - old.y)
    before, _ = case.boxes()
    rows, cols = np.nonzero(before)
    r, c = rows + dy, cols + dx
    keep = (r >= 0) & (r < case.source.size) & (c >= 0) & (c < case.source.size)
    guide[r[keep], c[keep]] = source[rows[keep], cols[keep]]
    return guide


def object_regions(case: EditCase, background: str = "") -> list[tuple[np.ndarray, str]]:
    """The regions an object edit regenerates, each with its prompt: the new object's box under
    the new object's words; for a move or a removal, the old box under `background`."""
    before, after = case.boxes()
    if case.kind in ("recolor", "reshape"):
        return [(before | after, case.target_object)]
    if case.kind == "remove":
        return [(before, background)]
    return [(before & ~after, background), (after, case.target_object)]


def edit_objects(pipe: Any, cases: Sequence[EditCase], config: Any, *, strength: float = 0.8,
                 fresh: bool = True, isolate: bool = True, background: str = "@target",
                 paste: bool = True, pasted_strength: float | None = 0.5) -> torch.Tensor:
    """Edit each case's source from the world's boxes (`object_regions`): the new object's box
    is regenerated under the object's words alone, in a blank context when `isolate` (outside
    the box its denoising sees the empty canvas, so the object can only appear inside); an
    emptied box under `background` ("@target": the caption of what remains); with `paste`, a
    move starts from the object's pixels copied to the new box (`move_guide`), harmonised at
    `pasted_strength`. Returns the edited images (N, C, H, W) in [-1, 1]."""
    from difflab.data.world import BACKGROUND
    from difflab.edit.editing import Region, run_edit

    src = source_images(cases)
    x = torch.from_numpy(src).permute(0, 3, 1, 2).float() / 127.5 - 1
    blank = torch.tensor(BACKGROUND, dtype=torch.float32).view(3, 1, 1) / 127.5 - 1
    regions = []
    for c in cases:
        rows = []
        for mask, prompt in object_regions(c, background):
            emptied = prompt == background
            rows.append(Region(torch.from_numpy(mask),
                               c.target_prompt if emptied and background == "@target" else prompt,
                               None if emptied or not isolate else blank.expand(*x.shape[1:]),
                               pasted_strength if paste and c.kind == "move" and not emptied
                               else None))
        regions.append(rows)
    guides = None
    if paste:
        moved = [move_guide(c) if c.kind == "move" else img for c, img in zip(cases, src,
                                                                             strict=True)]
        guides = torch.from_numpy(np.stack(moved)).permute(0, 3, 1, 2).float() / 127.5 - 1
    return run_edit("masked", pipe, x, [c.source_prompt for c in cases],
                    [c.target_prompt for c in cases], config, regions=regions,
                    strength=strength, fresh=fresh, guides=guides)
