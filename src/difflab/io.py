"""Atomic file writes and safetensors checkpoints with their config beside them."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp)` on a temporary file in the same folder, fsync it, rename to `path`.

    A crash at any point leaves either the old file or the new one, never half of one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
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
    finally:
        if tmp_path.exists():
            tmp_path.unlink()
    return path


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
    return atomic_write(path, lambda p: save_file(flat, str(p), metadata=md))


def load_tensors(path: str | Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Load a safetensors file (never unpickles), with a clear error when it is missing."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {p}")
    return load_file(str(p), device=str(device))
