"""Labelled image grids (PIL): each cell an upscaled image with its caption beneath."""

from __future__ import annotations

import textwrap

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

_PAD = 4
_TEXT = (235, 235, 235)
_PAPER = (0, 0, 0)


def _font(px: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:  # Pillow >= 10.1 ships a scalable default font
        return ImageFont.load_default(size=px)
    except TypeError:  # pragma: no cover - older Pillow
        return ImageFont.load_default()


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """Images in [-1, 1], (N, C, H, W) or (C, H, W) with C in {1, 3} -> uint8 (N, H, W, 3)."""
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"expected (N, 1|3, H, W) images; got shape {tuple(x.shape)}")
    x = x.detach().float().cpu().expand(-1, 3, -1, -1)
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def make_grid(
    images: np.ndarray,
    labels: list[str] | None = None,
    ncol: int = 8,
    scale: int = 4,
    max_lines: int = 6,
) -> Image.Image:
    """Tile images (N, H, W, 3) uint8, each upscaled `scale`x (nearest), labels wrapped below."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"images must be uint8 (N, H, W, 3); got {images.dtype} {images.shape}")
    n, h, w, _ = images.shape
    if labels is not None and len(labels) != n:
        raise ValueError(f"{len(labels)} labels for {n} images")
    if ncol < 1 or scale < 1:
        raise ValueError(f"ncol and scale must be >= 1; got ncol={ncol}, scale={scale}")
    ncol = min(ncol, max(n, 1))
    nrow = -(-n // ncol)
    cw, ch = w * scale, h * scale
    font_px = max(9, min(14, cw // 10))
    font = _font(font_px)
    # Characters per line from the font's width of a typical letter.
    char_w = max(1.0, ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength("n", font=font))
    chars = max(4, int(cw / char_w))
    wrapped = [textwrap.wrap(t, chars, break_long_words=False)[:max_lines] for t in labels or []]
    lines_needed = max((len(w) for w in wrapped), default=0)
    text_h = (font_px + 2) * lines_needed + _PAD if labels is not None else 0
    grid = Image.new("RGB", (ncol * (cw + _PAD) + _PAD, nrow * (ch + text_h + _PAD) + _PAD), _PAPER)
    draw = ImageDraw.Draw(grid)
    for i in range(n):
        x = _PAD + (i % ncol) * (cw + _PAD)
        y = _PAD + (i // ncol) * (ch + text_h + _PAD)
        grid.paste(Image.fromarray(images[i]).resize((cw, ch), Image.NEAREST), (x, y))
        if labels is not None:
            for j, line in enumerate(wrapped[i]):
                draw.text((x, y + ch + 2 + j * (font_px + 2)), line, fill=_TEXT, font=font)
    return grid
