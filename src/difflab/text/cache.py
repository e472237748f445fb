"""An embedding cache for frozen text encoders: each distinct prompt is encoded once.

The shapes world repeats a finite set of captions, so training re-encodes nothing after the
first epoch; `precompute`/`save`/`load` build the cache for a known caption list up front.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from difflab.io import load_tensors, save_tensors
from difflab.text.base import TextEncoding

Row = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # tokens (T, D), mask (T,), pooled (D,)


class EmbeddingCache:
    """Prompt -> (tokens (T, D), mask (T,), pooled (D,)) on CPU; LRU-bounded by `max_entries`.

    The one cache of text embeddings: training conditioning and the sampling pipeline use it.
    Prompts missing from a call are encoded together; a prompt's embedding must not depend on
    its batch-mates (true for encoders whose rows are computed independently, e.g. the bundled
    MiniLM, whose per-prompt and batched encodings are bitwise equal on this CPU).
    """

    def __init__(self, encoder: Any, max_entries: int | None = None) -> None:
        if getattr(encoder, "trainable", False):
            raise ValueError(f"text encoder {getattr(encoder, 'name', encoder)!r} is trainable; "
                             "caching would freeze its outputs")
        if max_entries is not None and max_entries < 1:
            raise ValueError(f"max_entries must be >= 1 or None; got {max_entries}")
        self.encoder = encoder
        self.max_entries = max_entries
        self.entries: OrderedDict[str, Row] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, prompt: object) -> bool:
        return prompt in self.entries

    def _encode(self, prompts: list[str]) -> list[Row]:
        """Run the encoder on `prompts`: one CPU row per prompt (float tokens, bool mask)."""
        with torch.no_grad():
            tokens, mask, pooled = self.encoder.encode(prompts)
        return [(tokens[i].float().cpu(), mask[i].bool().cpu(), pooled[i].float().cpu())
                for i in range(len(prompts))]

    def _store(self, prompts: list[str], rows: list[Row]) -> None:
        for p, row in zip(prompts, rows, strict=True):
            self.entries[p] = row
            self.entries.move_to_end(p)
        while self.max_entries is not None and len(self.entries) > self.max_entries:
            self.entries.popitem(last=False)

    def precompute(self, prompts: list[str], batch_size: int = 256) -> None:
        """Encode every not-yet-cached prompt of `prompts`, `batch_size` at a time."""
        todo = list(dict.fromkeys(p for p in prompts if p not in self.entries))
        for i in range(0, len(todo), batch_size):
            chunk = todo[i : i + batch_size]
            self._store(chunk, self._encode(chunk))

    def encode(self, prompts: list[str], device: torch.device | str | None = None) -> TextEncoding:
        """Like `encoder.encode`, encoding only the prompts not cached yet (in one batch); rows
        of different lengths are zero-padded (mask False) to the longest."""
        is_miss = [p not in self.entries for p in prompts]
        self.misses += sum(is_miss)
        self.hits += len(prompts) - sum(is_miss)
        missing = list(dict.fromkeys(p for p, m in zip(prompts, is_miss, strict=True) if m))
        fresh: dict[str, Row] = {}
        if missing:
            rows = self._encode(missing)
            self._store(missing, rows)
            # Kept aside too: a small LRU may already have evicted some of this batch.
            fresh = dict(zip(missing, rows, strict=True))
        rows = [fresh[p] if p in fresh else self.entries[p] for p in prompts]
        for p in prompts:
            if p in self.entries:
                self.entries.move_to_end(p)
        if device is None:
            device = getattr(self.encoder, "device", "cpu")
        return TextEncoding(*(t.to(device) for t in stack_rows(rows)))

    def save(self, path: str | Path) -> Path:
        """Write the cache as safetensors (prompts in its metadata)."""
        prompts = list(self.entries)
        if not prompts:
            raise ValueError("the embedding cache is empty; nothing to save")
        names = ("tokens", "mask", "pooled")
        tensors = dict(zip(names, stack_rows([self.entries[p] for p in prompts]), strict=True))
        meta = {"prompts": json.dumps(prompts), "encoder": getattr(self.encoder, "name", "")}
        return save_tensors(path, tensors, meta)

    def load(self, path: str | Path) -> None:
        """Add the entries of a file written by `save` (same encoder name and shapes)."""
        from safetensors import safe_open

        tensors = load_tensors(path)
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        name = getattr(self.encoder, "name", "")
        if meta.get("encoder") != name:
            raise ValueError(f"{path} caches encoder {meta.get('encoder')!r}, not {name!r}")
        prompts = json.loads(meta["prompts"])
        enc = TextEncoding(tensors["tokens"], tensors["mask"].bool(), tensors["pooled"])
        if enc.tokens.shape[1:] != (self.encoder.max_length, self.encoder.dim):
            raise ValueError(
                f"{path} holds tokens of shape {tuple(enc.tokens.shape[1:])}, but the encoder "
                f"gives ({self.encoder.max_length}, {self.encoder.dim})"
            )
        self._store(prompts, [(enc.tokens[i], enc.mask[i], enc.pooled[i])
                              for i in range(len(prompts))])


def stack_rows(rows: list[Row]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows -> tokens (B, T, D) zero-padded to the longest T, mask (B, T), pooled (B, D)."""
    length = max(t.shape[0] for t, _, _ in rows)
    tokens = torch.zeros(len(rows), length, rows[0][0].shape[1])
    mask = torch.zeros(len(rows), length, dtype=torch.bool)
    for i, (t, m, _) in enumerate(rows):
        tokens[i, : t.shape[0]] = t
        mask[i, : m.shape[0]] = m
    return tokens, mask, torch.stack([p for _, _, p in rows])
