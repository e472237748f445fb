"""The evaluated-configuration cache: one JSON line per (checkpoint hash, configuration, images
it was scored on), so that a rerun of the search only evaluates what is new."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from difflab.config import storage_error

STORE_VERSION = 1  # bump when the meaning of a stored evaluation changes


def default_store_dir() -> Path:
    root = os.environ.get("DIFFLAB_CACHE") or Path.home() / ".cache" / "difflab"
    return Path(root) / "autotune"


class EvaluationStore:
    """Evaluations by key in an append-only JSON-lines file (a damaged line is skipped)."""

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path else None
        self._entries: dict[str, dict[str, Any]] = {}
        if self.path is not None and self.path.is_file():
            for line in self.path.read_text().splitlines():
                try:
                    entry = json.loads(line)
                    self._entries[entry["key"]] = entry["value"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue  # a line cut short by an interrupted write

    @staticmethod
    def key(checkpoint_sha256: str, config_key: str, images: dict[str, Any]) -> str:
        """Hash of everything an evaluation depends on: the checkpoint's bytes, the
        configuration and the images it was scored on (split, prompts, seeds, metrics)."""
        blob = json.dumps({"v": STORE_VERSION, "checkpoint": checkpoint_sha256,
                           "config": config_key, "images": images}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    def get(self, key: str) -> dict[str, Any] | None:
        return self._entries.get(key)

    def put(self, key: str, value: dict[str, Any]) -> None:
        self._entries[key] = value
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # one line per write (a crash loses at most the line being written)
            with open(self.path, "a") as f:
                f.write(json.dumps({"key": key, "value": value}, sort_keys=True) + "\n")
        except OSError as e:
            raise storage_error(e, f"evaluation cache {self.path}") from None

    def __len__(self) -> int:
        return len(self._entries)
