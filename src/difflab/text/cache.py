"""An embedding cache for frozen text encoders: each distinct prompt is encoded once.

The shapes world repeats a finite set of captions, so training re-encodes nothing after the
first epoch; `precompute`/`save`/`load` build the cache for a known caption list up front.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path

import torch

from difflab.io import load_tensors, save_tensors
from difflab.text.base import TextEncoder, TextEncoding


class EmbeddingCache:
    """Prompt -> (tokens (T, D), mask (T,), pooled (D,)) on CPU; LRU-bounded by `max_entries`."""

    def __init__(self, encoder: TextEncoder, max_entries: int | None = None) -> None:
        if encoder.trainable:
            raise ValueError(
                f"text encoder {encoder.name!r} is trainable; caching would freeze its outputs"
            )
        if max_entries is not None and max_entries < 1:
            raise ValueError(f"max_entries must be >= 1 or None; got {max_entries}")
        self.encoder = encoder
        self.max_entries = max_entries
        self.entries: OrderedDict[str, tuple[torch.Tensor, ...]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, prompt: object) -> bool:
        return prompt in self.entries

    def _store(self, prompts: list[str], enc: TextEncoding) -> None:
        for i, p in enumerate(prompts):
            self.entries[p] = (enc.tokens[i].cpu(), enc.mask[i].cpu(), enc.pooled[i].cpu())
            self.entries.move_to_end(p)
        while self.max_entries is not None and len(self.entries) > self.max_entries:
            self.entries.popitem(last=False)

    def precompute(self, prompts: list[str], batch_size: int = 256) -> None:
        """Encode every not-yet-cached prompt of `prompts`, `batch_size` at a time."""
        todo = list(dict.fromkeys(p for p in prompts if p not in self.entries))
        for i in range(0, len(todo), batch_size):
            chunk = todo[i : i + batch_size]
            self._store(chunk, self.encoder.encode(chunk))

    def encode(self, prompts: list[str], device: torch.device | str | None = None) -> TextEncoding:
        """Like `encoder.encode`, encoding only the prompts not cached yet (in one batch)."""
        is_miss = [p not in self.entries for p in prompts]
        self.misses += sum(is_miss)
        self.hits += len(prompts) - sum(is_miss)
        missing = list(dict.fromkeys(p for p, m in zip(prompts, is_miss, strict=True) if m))
        fresh: dict[str, tuple[torch.Tensor, ...]] = {}
        if missing:
            enc = self.encoder.encode(missing)
            self._store(missing, enc)
            # Kept aside too: a small LRU may already have evicted some of this batch.
            fresh = {p: tuple(t[i].cpu() for t in enc) for i, p in enumerate(missing)}
        rows = [fresh[p] if p in fresh else self.entries[p] for p in prompts]
        for p in prompts:
            if p in self.entries:
                self.entries.move_to_end(p)
        device = device if device is not None else self.encoder.device
        tokens, mask, pooled = (torch.stack([r[k] for r in rows]).to(device) for k in range(3))
        return TextEncoding(tokens, mask, pooled)

    def save(self, path: str | Path) -> Path:
        """Write the cache as safetensors (prompts in its metadata)."""
        prompts = list(self.entries)
        if not prompts:
            raise ValueError("the embedding cache is empty; nothing to save")
        rows = [self.entries[p] for p in prompts]
        names = ("tokens", "mask", "pooled")
        tensors = {k: torch.stack([r[i] for r in rows]) for i, k in enumerate(names)}
        meta = {"prompts": json.dumps(prompts), "encoder": self.encoder.name}
        return save_tensors(path, tensors, meta)

    def load(self, path: str | Path) -> None:
        """Add the entries of a file written by `save` (same encoder name and shapes)."""
        from safetensors import safe_open

        tensors = load_tensors(path)
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        if meta.get("encoder") != self.encoder.name:
            raise ValueError(
                f"{path} caches encoder {meta.get('encoder')!r}, not {self.encoder.name!r}"
            )
        prompts = json.loads(meta["prompts"])
        enc = TextEncoding(tensors["tokens"], tensors["mask"].bool(), tensors["pooled"])
        if enc.tokens.shape[1:] != (self.encoder.max_length, self.encoder.dim):
            raise ValueError(
                f"{path} holds tokens of shape {tuple(enc.tokens.shape[1:])}, but the encoder "
                f"gives ({self.encoder.max_length}, {self.encoder.dim})"
            )
        self._store(prompts, enc)
