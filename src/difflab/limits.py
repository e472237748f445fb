"""The limits every input is checked against, and the checks themselves, in one place.

Each limit has a default and an environment variable that overrides it (`DIFFLAB_` + the field
name in capitals, e.g. `DIFFLAB_MAX_IMAGES=50000`); library code can also override them for a
block with `override_limits(max_images=...)`. A value over a limit raises ConfigError naming
the value, the limit and the variable that raises it, before any model loads or step runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from difflab.config import ConfigError

ENV_PREFIX = "DIFFLAB_"
# Seeds are 63-bit: torch generators take 64 bits and difflab offsets per-image seeds by a few
# million (image i uses seed + i, its sampler noise seed + i + 1_000_003).
MAX_SEED = 2**63 - 1


@dataclass(frozen=True)
class Limits:
    """Upper bounds on what one call may ask for (defaults sized for a laptop, generous)."""

    max_images: int = 10_000  # images one sample / eval / bench / data preview call makes
    max_sample_steps: int = 1_000  # sampling steps (SampleConfig.steps)
    max_train_steps: int = 100_000_000  # schedule.steps
    max_batch_size: int = 65_536  # training global batch and sampling batch
    max_image_size: int = 4_096  # side of a model's input (pixels or latents)
    max_prompt_chars: int = 1_000  # characters in one prompt
    max_text_tokens: int = 4_096  # text.max_length
    max_guidance: float = 100.0  # classifier-free guidance scale

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ConfigError(f"limit {f.name} = {value!r} must be a positive number "
                                  f"(set by {env_name(f.name)} or override_limits)")


_OVERRIDES: list[dict[str, Any]] = []


def env_name(field: str) -> str:
    """The environment variable that overrides limit `field`."""
    return ENV_PREFIX + field.upper()


def get_limits() -> Limits:
    """The limits in force: defaults, then environment variables, then `override_limits`."""
    values: dict[str, Any] = {}
    for f in dataclasses.fields(Limits):
        raw = os.environ.get(env_name(f.name))
        if raw is None or not raw.strip():
            continue
        kind = int if f.type in (int, "int") else float
        try:
            values[f.name] = kind(raw)
        except ValueError:
            raise ConfigError(f"{env_name(f.name)}={raw!r} must be a positive "
                              f"{'integer' if kind is int else 'number'}") from None
    for layer in _OVERRIDES:
        values.update(layer)
    return Limits(**values)


@contextlib.contextmanager
def override_limits(**changes: Any) -> Iterator[Limits]:
    """Raise or lower limits inside a `with` block (library use; the CLI uses env vars)."""
    unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(Limits)})
    if unknown:
        raise ConfigError(f"unknown limit {unknown[0]!r}; valid: "
                          + ", ".join(f.name for f in dataclasses.fields(Limits)))
    _OVERRIDES.append(changes)
    try:
        yield get_limits()
    finally:
        _OVERRIDES.remove(changes)


# ---- checks shared by config dataclasses and the CLI -------------------------------------------


def _limit_hint(limit: str | None) -> str:
    return f" (limit {limit}; raise it with {env_name(limit)})" if limit else ""


def check_int(name: str, value: Any, lo: int, hi: int | None = None,
              limit: str | None = None) -> int:
    """`value` as an int in [lo, hi]; otherwise a ConfigError naming `name` and the range."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} = {value!r} must be an integer")
    if value < lo or (hi is not None and value > hi):
        valid = f">= {lo}" if hi is None else f"{lo}..{hi}"
        raise ConfigError(f"{name} = {value} is out of range; valid: {valid}{_limit_hint(limit)}")
    return value


def check_float(name: str, value: Any, lo: float | None = None, hi: float | None = None, *,
                lo_open: bool = False, limit: str | None = None) -> float:
    """`value` as a finite float in [lo, hi] ((lo, hi] with `lo_open`), else ConfigError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} = {value!r} must be a number")
    if not math.isfinite(value):
        raise ConfigError(f"{name} = {value!r} must be a finite number")
    below = lo is not None and (value <= lo if lo_open else value < lo)
    if below or (hi is not None and value > hi):
        left = "(" if lo_open else "["
        valid = f"{left}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}]"
        raise ConfigError(f"{name} = {value!r} is out of range; valid: {valid}"
                          f"{_limit_hint(limit)}")
    return float(value)


def check_seed(name: str, seed: Any, count: int = 1) -> int:
    """A seed such that `seed .. seed + count - 1` are all valid 63-bit seeds."""
    check_int(name, seed, 0, MAX_SEED - max(count - 1, 0))
    return seed


def check_images(name: str, count: int) -> int:
    """The number of images one call makes: >= 1 and within `max_images`."""
    return check_int(name, count, 1, get_limits().max_images, limit="max_images")


def check_prompt(name: str, text: Any, allow_empty: bool = False) -> str:
    """A prompt: a string with visible text, no control characters, within max_prompt_chars."""
    if not isinstance(text, str):
        raise ConfigError(f"{name} = {text!r} must be a string")
    if not text.strip() and not (allow_empty and text == ""):
        raise ConfigError(f"{name} = {text!r} has no visible text; give a prompt like "
                          "'a red circle'")
    for i, ch in enumerate(text):
        if unicodedata.category(ch) == "Cc":
            raise ConfigError(f"{name} = {text!r} holds the control character U+{ord(ch):04X} "
                              f"at position {i}; prompts are plain text on one line")
    check_int(f"length of {name}", len(text), 0, get_limits().max_prompt_chars,
              limit="max_prompt_chars")
    return text


def image_format(name: str, path: str | Path) -> str:
    """The PIL format that writes `path` (chosen by its extension), or ConfigError."""
    from PIL import Image

    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{name} = {str(p)!r} is a folder; give an image file name")
    Image.init()
    ext = p.suffix.lower()
    fmt = Image.registered_extensions().get(ext)
    if fmt is None or fmt not in Image.SAVE:
        raise ConfigError(f"{name} = {str(p)!r}: cannot write images with extension "
                          f"{ext or '(none)'!r}; valid: .png, .jpg, .jpeg, .webp, .bmp, .tif")
    return fmt
