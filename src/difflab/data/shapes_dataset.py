"""Training samples from the shapes world: scene sampler, `ShapesConfig` and a map-style Dataset.

Item `i` is a pure function of (seed, i), so DataLoader workers and DistributedSampler
ranks see exactly what direct indexing sees.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from difflab.config import ConfigError
from difflab.data import captions
from difflab.data.shapes import IMAGE_SIZES, Scene, place_objects, render
from difflab.data.world import COLORS, HELDOUT_PAIRS, RELATIONS, SHAPES

SCENE_KINDS: tuple[str, ...] = ("single", "relation", "count", "multi")
ALL_PAIRS: tuple[tuple[str, str], ...] = tuple((s, c) for s in SHAPES for c in COLORS)
TRAIN_PAIRS: tuple[tuple[str, str], ...] = tuple(p for p in ALL_PAIRS if p not in HELDOUT_PAIRS)
NUM_CLASSES = len(ALL_PAIRS)  # class id = shape index * len(COLORS) + colour index
_SIZE_NAMES = ("small", "medium", "large")


def class_index(shape: str, color: str) -> int:
    """The class-conditional label of a (shape, colour) pair, in [0, NUM_CLASSES)."""
    return ALL_PAIRS.index((shape, color))


@dataclass(frozen=True)
class ShapesConfig:
    """What the shapes training set draws: image size, scene kinds, held-out exclusion, labels."""

    size: int = 32
    max_objects: int = 4
    kinds: tuple[str, ...] = SCENE_KINDS
    exclude_heldout: bool = True
    conditioning: Literal["text", "class", "none"] = "text"
    length: int = 100_000
    seed: int = 0
    # Reword captions with the train half of `data.paraphrase` (synonyms, count phrases,
    # sentence frames) and teach relation scenes the binding form "a red circle and a blue
    # square" too. Off by default, so existing configs keep their exact data.
    paraphrase: bool = False
    # Probability that a caption carries one made-up word (replacing or inserted before a
    # random word; `data.paraphrase.unknown_word_caption`). 0 keeps the exact data.
    unknown_words: float = 0.0

    def __post_init__(self) -> None:
        if self.size not in IMAGE_SIZES:
            raise ConfigError(f"shapes size {self.size!r} invalid; valid: {list(IMAGE_SIZES)}")
        if not 1 <= self.max_objects <= 4:
            raise ConfigError(f"max_objects {self.max_objects!r} invalid; valid: 1 to 4")
        bad = [k for k in self.kinds if k not in SCENE_KINDS]
        if bad or not self.kinds:
            raise ConfigError(f"scene kinds {list(self.kinds)!r} invalid; valid: {SCENE_KINDS}")
        if self.conditioning not in ("text", "class", "none"):
            raise ConfigError(
                f"conditioning {self.conditioning!r} invalid; valid: text, class, none"
            )
        if self.conditioning == "class" and set(self.kinds) != {"single"}:
            raise ConfigError("conditioning 'class' needs kinds = ['single'] (one object each)")
        if "relation" in self.kinds and self.max_objects < 2:
            raise ConfigError("scene kind 'relation' needs max_objects >= 2")
        if not 0.0 <= self.unknown_words <= 1.0:
            raise ConfigError(f"unknown_words {self.unknown_words!r} invalid; valid: 0 to 1")
        if self.length < 1:
            raise ConfigError(f"length {self.length!r} invalid; must be >= 1")


def _pair(rng: np.random.Generator, pairs: tuple[tuple[str, str], ...]) -> tuple[str, str]:
    return pairs[int(rng.integers(len(pairs)))]


def _size_name(rng: np.random.Generator, n_objects: int) -> str:
    # Crowded scenes use smaller objects so that placement rarely needs to shrink them.
    names = _SIZE_NAMES if n_objects <= 2 else _SIZE_NAMES[:2]
    return names[int(rng.integers(len(names)))]


def sample_scene(
    rng: np.random.Generator, cfg: ShapesConfig, kind: str | None = None
) -> tuple[Scene, str]:
    """Draw a training scene of `kind` (default: uniform over cfg.kinds) and its caption,
    reworded from the paraphrase vocabulary's train half when `cfg.paraphrase` is on and
    given a made-up word with probability `cfg.unknown_words`."""
    scene, caption = _scene_and_caption(rng, cfg, kind)
    if cfg.paraphrase:
        from difflab.data.paraphrase import paraphrase_caption

        caption = paraphrase_caption(rng, caption)
    if cfg.unknown_words > 0 and rng.random() < cfg.unknown_words:
        from difflab.data.paraphrase import unknown_word_caption

        caption = unknown_word_caption(rng, caption)
    return scene, caption


def _scene_and_caption(
    rng: np.random.Generator, cfg: ShapesConfig, kind: str | None
) -> tuple[Scene, str]:
    kind = kind or cfg.kinds[int(rng.integers(len(cfg.kinds)))]
    pairs = TRAIN_PAIRS if cfg.exclude_heldout else ALL_PAIRS
    if kind == "single":
        (s, c), z = _pair(rng, pairs), _size_name(rng, 1)
        return place_objects(rng, [(s, c, z)], cfg.size), captions.caption_single(rng, s, c, z)
    if kind == "relation":
        a = _pair(rng, pairs)
        b = _pair(rng, tuple(p for p in pairs if p != a))
        rel = RELATIONS[int(rng.integers(len(RELATIONS)))]
        kinds = [(*a, _size_name(rng, 2)), (*b, _size_name(rng, 2))]
        scene = place_objects(rng, kinds, cfg.size, [0, 1], rel)
        return scene, captions.caption_relation(rng, a, b, rel, binding_form=cfg.paraphrase)
    n = int(rng.integers(1, cfg.max_objects + 1))
    if kind == "count":
        s, c = _pair(rng, pairs)
        scene = place_objects(rng, [(s, c, _size_name(rng, n)) for _ in range(n)], cfg.size)
        return scene, captions.caption_count(rng, s, c, n)
    if kind == "multi":
        objs = [_pair(rng, pairs) for _ in range(n)]
        scene = place_objects(rng, [(*p, _size_name(rng, n)) for p in objs], cfg.size)
        groups = {p: objs.count(p) for p in dict.fromkeys(objs)}  # first-seen order
        return scene, captions.caption_multi(rng, [(*p, k) for p, k in groups.items()])
    raise ValueError(f"unknown scene kind {kind!r}; valid: {list(SCENE_KINDS)}")


@dataclass(frozen=True)
class ShapesSample:
    """One training sample with everything known about it."""

    image: np.ndarray  # (H, W, 3) uint8
    caption: str
    scene: Scene


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float32 in [-1, 1]."""
    return torch.from_numpy(image).permute(2, 0, 1).float().div(127.5).sub(1.0)


class ShapesDataset(Dataset):
    """Map-style shapes dataset: item i -> {"image" (3, H, W) in [-1, 1], "caption"[, "label"]}.

    conditioning "none" gives the caption "" (unconditional); "class" adds "label".
    """

    def __init__(self, cfg: ShapesConfig | None = None) -> None:
        self.cfg = cfg or ShapesConfig()

    def __len__(self) -> int:
        return self.cfg.length

    def sample(self, index: int) -> ShapesSample:
        """The full sample for `index`: uint8 image, caption and scene."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for length {len(self)}")
        rng = np.random.default_rng([self.cfg.seed, index])
        scene, caption = sample_scene(rng, self.cfg)
        return ShapesSample(render(scene), caption, scene)

    def __getitem__(self, index: int) -> dict:
        s = self.sample(int(index))
        item: dict = {"image": to_tensor(s.image), "caption": s.caption}
        if self.cfg.conditioning == "none":
            item["caption"] = ""
        elif self.cfg.conditioning == "class":
            o = s.scene.objects[0]
            item["label"] = class_index(o.shape, o.color)
        return item
