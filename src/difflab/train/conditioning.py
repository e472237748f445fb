"""Training-time conditioning: condition dropout for classifier-free guidance."""

from __future__ import annotations

from typing import Any

import torch

from difflab.text.cache import EmbeddingCache


def condition_batch(batch: dict[str, Any], drop: torch.Tensor, text: Any | None,
                    null_class: int | None, device: torch.device) -> dict[str, torch.Tensor]:
    """Network conditioning with dropped rows replaced by the empty prompt or the null class.

    Classifier-Free Diffusion Guidance (Ho & Salimans, 2022): one network learns both the
    conditional and the unconditional model. `drop`: (b,) bool. `text`: an EmbeddingCache of a
    frozen encoder, or a trainable encoder (its token ids are returned, see `_TrainForward`).
    """
    if text is not None:
        captions = ["" if d else c for c, d in zip(batch["caption"], drop.tolist(), strict=True)]
        if isinstance(text, EmbeddingCache):
            return text.encode(captions, device).network_kwargs()
        # a trainable encoder: token ids here, encoded inside the training forward
        ids, mask = text.tokenizer(captions)
        return {"token_ids": ids.to(device), "token_mask": mask.to(device)}
    if "label" in batch and null_class is not None:
        labels = torch.as_tensor(batch["label"]).long()
        return {"y": torch.where(drop, torch.full_like(labels, null_class), labels).to(device)}
    return {}
