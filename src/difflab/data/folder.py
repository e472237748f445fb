"""Users' own text-image data: a folder of images with captions, checked up front.

Captions come from `metadata.jsonl` (one {"file_name", "text"} per line, the Hugging Face
ImageFolder convention) when present, else from a `.txt` beside each image.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from difflab.config import ConfigError, MissingFileError, read_text_file
from difflab.data.shapes_dataset import to_tensor

IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")


def _read_metadata(root: Path, meta: Path) -> list[tuple[Path, str]]:
    items = []
    for lineno, line in enumerate(read_text_file(meta, "metadata file").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{meta}:{lineno}: invalid JSON ({e.msg})") from None
        if not isinstance(row, dict) or not {"file_name", "text"} <= set(row):
            raise ConfigError(f"{meta}:{lineno}: each line needs 'file_name' and 'text' keys")
        path = root / str(row["file_name"])
        if not path.is_file():
            raise MissingFileError(f"{meta}:{lineno}: image not found: {path}")
        items.append((path, str(row["text"])))
    return items


def _read_sidecars(root: Path) -> list[tuple[Path, str]]:
    items = []
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
        txt = path.with_suffix(".txt")
        if not txt.is_file():
            raise MissingFileError(f"caption missing for {path}: expected {txt}")
        items.append((path, read_text_file(txt, "caption file").strip()))
    return items


def _image_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as im:
            im.verify()  # reads the whole file: truncated or corrupt files fail here
            return im.size
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ConfigError(f"unreadable image {path}: {e}") from None


class ImageFolderDataset(Dataset):
    """Item i -> {"image" (3, H, W) in [-1, 1], "caption"}; every image is checked on load.

    Without `size` all images must share one size; with it, each is centre-cropped to a
    square and resized to `size` x `size`.
    """

    def __init__(self, root: str | Path, size: int | None = None) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise MissingFileError(f"image folder not found: {self.root}")
        meta = self.root / "metadata.jsonl"
        read_meta = meta.is_file()
        self.items = _read_metadata(self.root, meta) if read_meta else _read_sidecars(self.root)
        if not self.items:
            raise MissingFileError(
                f"no images ({', '.join(IMAGE_SUFFIXES)}) found under {self.root}"
            )
        self.size = size
        first_path, _ = self.items[0]
        first = _image_size(first_path)
        for path, _ in self.items:
            wh = _image_size(path)
            if size is None and wh != first:
                raise ConfigError(
                    f"mixed image sizes: {path} is {wh[0]}x{wh[1]} but {first_path} is "
                    f"{first[0]}x{first[1]}; pass a size to resize them all"
                )

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        path, caption = self.items[index]
        with Image.open(path) as im:
            im = im.convert("RGB")
            if self.size is not None:
                w, h = im.size
                s = min(w, h)
                box = ((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)
                im = im.resize((self.size, self.size), Image.BICUBIC, box=box)
            image = np.array(im, dtype=np.uint8)  # a writable copy
        return {"image": to_tensor(image), "caption": caption}
