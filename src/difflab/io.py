"""Atomic file writes and safetensors checkpoints with their config beside them."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from difflab.config import ConfigError, MissingFileError, storage_error


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp)` on a temporary file in the same folder, fsync it, rename to `path`.

    A crash at any point leaves either the old file or the new one, never half of one; a
    failed write (disk full, permission denied) raises StorageError and leaves the old file.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise storage_error(e, str(path)) from e
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        _write_and_replace(path, tmp_path, write)
    except OSError as e:
        raise storage_error(e, str(path)) from e
    finally:
        if tmp_path.exists():
            tmp_path.unlink()
    return path


def _write_and_replace(path: Path, tmp_path: Path, write: Callable[[Path], None]) -> None:
    """`write(tmp)`, fsync, rename over `path`, fsync the folder."""
    write(tmp_path)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual mode
    with open(tmp_path, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp_path, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: str | Path, data: Any) -> Path:
    """Write JSON atomically."""
    return atomic_write(path, lambda p: p.write_text(json.dumps(data, indent=2, sort_keys=True)))


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict | None = None):
    """Save tensors as safetensors atomically (contiguous CPU copies; metadata as strings)."""
    flat = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    md = {k: str(v) for k, v in (meta or {}).items()}
    # Serialised in memory and written by Python, so that a failed write (disk full) is an
    # OSError with its errno rather than an opaque error from the Rust writer.
    data = save(flat, metadata=md)
    return atomic_write(path, lambda p: p.write_bytes(data))


def load_tensors(path: str | Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Load a safetensors file (never unpickles); a missing or damaged file is a ConfigError."""
    p = Path(path)
    if not p.is_file():
        raise MissingFileError(f"checkpoint file not found: {p}")
    try:
        return load_file(str(p), device=str(device))
    except (SafetensorError, OSError, ValueError) as e:
        raise ConfigError(f"{p} is not a readable safetensors file ({e}); it is damaged or "
                          "not a checkpoint") from None
