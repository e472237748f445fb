"""Layouts: a prompt with one box per phrase, read from layout.json and checked line by line.

layout.json::

    {"prompt": "a red circle to the left of a blue square",
     "objects": [{"phrase": "red circle", "box": [0.1, 0.3, 0.45, 0.65]},
                 {"phrase": "blue square", "box": [0.55, 0.3, 0.9, 0.65]}],
     "size": 0}

Boxes are (x0, y0, x1, y1), y down: fractions of the image side, or pixels of a `size` x
`size` image when `size` > 0 (rescaled to the model's resolution; refused where a box would be
smaller than MIN_BOX_PIXELS there). A phrase must occur in the prompt.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from difflab.config import ConfigError, MissingFileError
from difflab.data.world import COLORS, SHAPES, SIZES

MAX_BOXES = 4  # the world's scenes hold at most four objects
MIN_BOX_PIXELS = 3.0  # a smaller box cannot hold a recognisable shape at the model's resolution
MAX_LAYOUT_SIZE = 4096
_KEYS = {"prompt", "objects", "size"}

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Layout:
    """A prompt and, per object, its phrase and box (fractions of the side, y down)."""

    prompt: str
    phrases: tuple[str, ...]
    boxes: tuple[Box, ...]

    def without_boxes(self) -> Layout:
        """The same prompt with no objects: what an adapter reads when given no layout."""
        return Layout(self.prompt, (), ())

    def pixel_boxes(self, size: int) -> list[Box]:
        return [tuple(v * size for v in b) for b in self.boxes]

    def objects(self) -> list[tuple[str | None, str | None]]:
        """(shape, colour) each phrase names in the world's vocabulary (None where it names
        none)."""
        return [phrase_object(p) for p in self.phrases]

    def to_dict(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "size": 0,
                "objects": [{"phrase": p, "box": list(b)}
                            for p, b in zip(self.phrases, self.boxes, strict=True)]}


def phrase_object(phrase: str) -> tuple[str | None, str | None]:
    """The world's (shape, colour) that a phrase names ("red circle" -> ("circle", "red"))."""
    words = phrase.lower().replace(",", " ").split()
    shape = next((s for s in SHAPES if s in words or s + "s" in words), None)
    color = next((c for c in COLORS if c in words), None)
    return shape, color


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not np.isfinite(value):
        raise ConfigError(f"layout {where} = {value!r} is not a finite number")
    return float(value)


def _box(value: Any, where: str, scale: float) -> Box:
    if not isinstance(value, list | tuple) or len(value) != 4:
        raise ConfigError(f"layout {where} = {value!r} must be [x0, y0, x1, y1]")
    x0, y0, x1, y1 = (_number(v, where) / scale for v in value)
    unit = "pixels of the layout's size" if scale != 1.0 else "fractions in [0, 1]"
    if not (0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0):
        raise ConfigError(f"layout {where} = {list(value)} is out of range: need "
                          f"0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1 ({unit})")
    return (x0, y0, x1, y1)


def parse_layout(data: Any, resolution: int, max_boxes: int = MAX_BOXES) -> Layout:
    """A Layout from layout.json's parsed content, for a model drawing `resolution` pixels;
    every problem raises a one-line ConfigError."""
    if not isinstance(data, dict):
        raise ConfigError(f"layout must be a JSON object with {sorted(_KEYS)}, got "
                          f"{type(data).__name__}")
    unknown = sorted(set(data) - _KEYS)
    if unknown:
        raise ConfigError(f"layout has unknown keys {unknown}; valid: {sorted(_KEYS)}")
    prompt, objects = data.get("prompt"), data.get("objects")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ConfigError("layout 'prompt' must be a non-empty string")
    if not isinstance(objects, list) or not objects:
        raise ConfigError("layout 'objects' must be a non-empty list of {phrase, box}")
    if len(objects) > max_boxes:
        raise ConfigError(f"layout has {len(objects)} boxes; at most {max_boxes} are allowed")
    size = data.get("size", 0)
    if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= MAX_LAYOUT_SIZE:
        raise ConfigError(f"layout 'size' = {size!r}: 0 (boxes as fractions) or the pixel "
                          f"side 1..{MAX_LAYOUT_SIZE} the boxes are given in")
    phrases, boxes = [], []
    for i, obj in enumerate(objects):
        where = f"objects[{i}]"
        if not isinstance(obj, dict) or set(obj) != {"phrase", "box"}:
            raise ConfigError(f"layout {where} must be {{\"phrase\": ..., \"box\": [x0, y0, x1, "
                              f"y1]}}, got {obj!r}")
        phrase = obj["phrase"]
        if not isinstance(phrase, str) or not phrase.strip():
            raise ConfigError(f"layout {where}.phrase must be a non-empty string")
        if phrase.lower() not in prompt.lower():
            raise ConfigError(f"layout {where}.phrase {phrase!r} is not in the prompt "
                              f"{prompt!r}")
        box = _box(obj["box"], f"{where}.box", float(size) if size else 1.0)
        small = min(box[2] - box[0], box[3] - box[1]) * resolution
        if small < MIN_BOX_PIXELS:
            raise ConfigError(f"layout {where}.box is {small:.1f} px at the model's {resolution} "
                              f"px resolution; the smallest it can draw is {MIN_BOX_PIXELS:g} px")
        phrases.append(phrase)
        boxes.append(box)
    return Layout(prompt, tuple(phrases), tuple(boxes))


def read_layout(path: str | Path, resolution: int) -> Layout:
    """Read and check layout.json (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"layout file {path} does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"layout file {path} is not valid JSON: {e}") from e
    return parse_layout(data, resolution)


def layout_scene(layout: Layout, size: int):
    """The world's scene that the layout asks for (each object at its box's centre, with the
    world size nearest its box's side): its exact ground truth."""
    from difflab.data.shapes import Scene, SceneObject

    objects = []
    for (shape, color), b in zip(layout.objects(), layout.boxes, strict=True):
        if shape is None or color is None:
            raise ConfigError(f"layout phrase for box {list(b)} names no world shape and colour")
        side = min(b[2] - b[0], b[3] - b[1])
        name = min(SIZES, key=lambda k: abs(SIZES[k] - side))
        objects.append(SceneObject(shape, color, name, (b[0] + b[2]) / 2 * size,
                                   (b[1] + b[3]) / 2 * size, size))
    return Scene(size, tuple(objects))


PLANNERS = ("world", "grid")
_PLAN_STREAM = 0x504C414E  # planning draws its own numbers, never those of a seed's render


def plan_layout(spec: Any, seed: int = 0, planner: str = "world", side: float = 0.36,
                jitter: float = 0.05) -> Layout:
    """A layout for a prompt that gives no boxes: the first stage of layout-planned generation
    ("LLM Blueprint", Gani et al. 2023; here the suites' parse replaces the language model).
    "world": the boxes of a scene the world's own sampler draws for the prompt (sizes and
    positions as its training scenes have them, the relation kept), from a random stream of
    `seed` apart from the one its ground-truth render of `seed` uses. "grid": one square box of
    `side` per object (counts expanded), two side by side (or as the relation asks), three or
    four in a 2 x 2 grid, one in the middle, each moved by up to `jitter` from `seed`."""
    from difflab.data.captions import noun

    if planner not in PLANNERS:
        raise ConfigError(f"unknown layout planner {planner!r}; valid: {', '.join(PLANNERS)}")
    phrases = tuple(noun(o.shape, o.color) for o in spec.objects for _ in range(o.count))
    if not phrases or len(phrases) > MAX_BOXES:
        raise ConfigError(f"cannot plan {len(phrases)} boxes for {spec.text!r} (1 to "
                          f"{MAX_BOXES})")
    if planner == "world":
        from difflab.data.shapes import render_spec

        stream = int(np.random.SeedSequence([_PLAN_STREAM, seed]).generate_state(1)[0])
        scene = render_spec(spec, seed=stream)[1]
        return Layout(spec.text, tuple(noun(o.shape, o.color) for o in scene.objects),
                      tuple(scene.boxes(normalized=True)))
    near, far = 0.27, 0.73
    pairs = {None: [(near, 0.5), (far, 0.5)], "left of": [(near, 0.5), (far, 0.5)],
             "right of": [(far, 0.5), (near, 0.5)], "above": [(0.5, near), (0.5, far)],
             "below": [(0.5, far), (0.5, near)]}  # the first object `relation` the second
    centres = {1: [(0.5, 0.5)], 2: pairs[getattr(spec, "relation", None)]}.get(
        len(phrases), [(near, near), (far, near), (near, far), (far, far)])
    rng = np.random.default_rng(seed)
    boxes = []
    for cx, cy in centres[: len(phrases)]:
        dx, dy = rng.uniform(-jitter, jitter, 2)
        x0 = float(np.clip(cx + dx - side / 2, 0.0, 1.0 - side))
        y0 = float(np.clip(cy + dy - side / 2, 0.0, 1.0 - side))
        boxes.append((x0, y0, x0 + side, y0 + side))
    return Layout(spec.text, phrases, tuple(boxes))


# The control map's channels: RGB of the phrase's colour, one-hot of its shape, occupancy.
MAP_CHANNELS = 3 + len(SHAPES) + 1


def layout_map(objects: Sequence[tuple[str | None, str | None]], boxes: Sequence[Box],
               size: int) -> torch.Tensor:
    """The (MAP_CHANNELS, size, size) control map of a layout: each box filled with its
    phrase's colour (in [-1, 1]), shape one-hot and 1 for occupancy; background 0. Boxes are
    fractions of the side; a pixel belongs to a box when its centre lies inside it."""
    out = torch.zeros(MAP_CHANNELS, size, size)
    centres = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    for (shape, color), (x0, y0, x1, y1) in zip(objects, boxes, strict=True):
        inside = (((centres >= y0) & (centres < y1))[:, None]
                  & ((centres >= x0) & (centres < x1))[None, :])  # (size, size)
        value = torch.zeros(MAP_CHANNELS)
        if color is not None:
            value[:3] = torch.tensor(COLORS[color], dtype=torch.float32) / 127.5 - 1.0
        if shape is not None:
            value[3 + SHAPES.index(shape)] = 1.0
        value[-1] = 1.0
        out[:, inside] = value[:, None]
    return out


def phrase_token_indices(tokenizer: Any, prompt: str, phrase: str,
                         last_word: bool = False) -> list[int]:
    """Positions of the tokens of `phrase` (or of its last word) in the tokenised `prompt`
    (a transformers fast tokenizer: the offsets map characters to tokens)."""
    start = prompt.lower().find(phrase.lower())
    if start < 0:
        raise ConfigError(f"phrase {phrase!r} is not in the prompt {prompt!r}")
    end = start + len(phrase)
    if last_word:
        start = start + phrase.rstrip().rfind(" ") + 1
    offsets = tokenizer(prompt, return_offsets_mapping=True)["offset_mapping"]
    idx = [i for i, (a, b) in enumerate(offsets) if b > a and a < end and b > start]
    if not idx:
        raise ConfigError(f"phrase {phrase!r} has no tokens in the prompt {prompt!r}")
    return idx


def draw_boxes(image: np.ndarray, boxes: Sequence[Box], scale: int = 4,
               color: tuple[int, int, int] = (255, 255, 255)) -> np.ndarray:
    """An (H, W, 3) uint8 image enlarged `scale` times (nearest) with each pixel box's outline
    drawn one pixel wide: how the docs show requested boxes over samples."""
    out = np.repeat(np.repeat(image, scale, 0), scale, 1).copy()
    side = out.shape[0]
    for x0, y0, x1, y1 in boxes:
        a, b = (int(np.clip(round(v * scale), 0, side - 1)) for v in (x0, y0))
        c, d = (int(np.clip(round(v * scale) - 1, 0, side - 1)) for v in (x1, y1))
        out[b, a:c + 1] = out[d, a:c + 1] = color
        out[b:d + 1, a] = out[b:d + 1, c] = color
    return out
