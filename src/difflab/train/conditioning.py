"""Training-time conditioning: cached text embeddings and condition dropout for CFG."""

from __future__ import annotations

from typing import Any

import torch


class TextCache:
    """Encode each distinct caption once; the captions a batch adds are encoded together.

    A caption's embedding must not depend on its batch-mates (for bit-identical resumes): true
    for fixed-length encoders whose rows are computed independently, e.g. the bundled MiniLM,
    whose per-caption and batched encodings are bitwise equal on this CPU.
    """

    def __init__(self, encoder: Any) -> None:
        self.encoder = encoder
        self.cache: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def add(self, captions: list[str]) -> None:
        """Encode the captions not cached yet: tokens (T, D), mask (T,) bool, pooled (D,)."""
        new = list(dict.fromkeys(c for c in captions if c not in self.cache))
        if not new:
            return
        with torch.no_grad():
            tokens, mask, pooled = self.encoder.encode(new)
        for i, c in enumerate(new):
            self.cache[c] = (tokens[i].float().cpu(), mask[i].bool().cpu(),
                             pooled[i].float().cpu())

    def batch(self, captions: list[str], device: torch.device) -> dict[str, torch.Tensor]:
        """The network's keyword arguments for a batch: context (B, T, D), mask (B, T), pooled."""
        self.add(captions)
        items = [self.cache[c] for c in captions]
        length = max(t.shape[0] for t, _, _ in items)
        dim = items[0][0].shape[1]
        context = torch.zeros(len(items), length, dim)
        mask = torch.zeros(len(items), length, dtype=torch.bool)
        for i, (tokens, m, _) in enumerate(items):
            context[i, : tokens.shape[0]] = tokens
            mask[i, : m.shape[0]] = m
        pooled = torch.stack([p for _, _, p in items])
        return {"context": context.to(device), "context_mask": mask.to(device),
                "pooled": pooled.to(device)}


def condition_batch(batch: dict[str, Any], drop: torch.Tensor, text: TextCache | None,
                    null_class: int | None, device: torch.device) -> dict[str, torch.Tensor]:
    """Network conditioning with dropped rows replaced by the empty prompt or the null class.

    Classifier-Free Diffusion Guidance (Ho & Salimans, 2022): one network learns both the
    conditional and the unconditional model. `drop`: (b,) bool.
    """
    if text is not None:
        captions = ["" if d else c for c, d in zip(batch["caption"], drop.tolist(), strict=True)]
        return text.batch(captions, device)
    if "label" in batch and null_class is not None:
        labels = torch.as_tensor(batch["label"]).long()
        return {"y": torch.where(drop, torch.full_like(labels, null_class), labels).to(device)}
    return {}
