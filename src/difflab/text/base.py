"""The text-encoder interface: fixed-length token states, a padding mask and a pooled vector."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from difflab.registry import Registry, UnknownNameError


class TextEncoding(NamedTuple):
    """tokens (B, T, D) float (zero at padding), mask (B, T) bool (True = real), pooled (B, D)."""

    tokens: torch.Tensor
    mask: torch.Tensor
    pooled: torch.Tensor

    def network_kwargs(self) -> dict[str, torch.Tensor]:
        """The denoiser's conditioning keywords: context, context_mask, pooled."""
        return {"context": self.tokens, "context_mask": self.mask, "pooled": self.pooled}


class TextEncoder(nn.Module, abc.ABC):
    """Prompts -> TextEncoding with a fixed T = max_length, so that conditional and
    unconditional batches concatenate. `trainable` encoders are optimised with the model."""

    name: str
    dim: int
    max_length: int
    trainable: bool = False

    @abc.abstractmethod
    def encode(self, prompts: list[str]) -> TextEncoding:
        """Encode a batch of prompts (padded or truncated to max_length tokens)."""

    def forward(self, prompts: list[str]) -> TextEncoding:
        return self.encode(prompts)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device


def masked_mean(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of tokens (B, T, D) over positions where mask (B, T) is True -> (B, D)."""
    m = mask.to(tokens.dtype).unsqueeze(-1)  # (B, T, 1)
    return (tokens * m).sum(1) / m.sum(1).clamp_min(1.0)


TEXT_ENCODERS: Registry[Any] = Registry("text encoder")


def build_text_encoder(name_or_path: str | Path, **kwargs: Any) -> TextEncoder:
    """A registered encoder by name ("minilm", "learned") or a local transformers model folder."""
    name = str(name_or_path)
    if name in TEXT_ENCODERS:
        return TEXT_ENCODERS.get(name)(**kwargs)
    if Path(name).is_dir():
        from difflab.text.hf import HFTextEncoder

        return HFTextEncoder(name, **kwargs)
    raise UnknownNameError(
        f"unknown text encoder {name!r}; valid: {', '.join(TEXT_ENCODERS.names())}, "
        "or the path of a folder holding a transformers model (CLIP text, T5, BERT, ...)"
    )


@dataclass(frozen=True)
class TextConfig:
    """Which text encoder a training run uses; `options` go to its constructor (e.g. depth)."""

    name: str = "minilm"
    max_length: int = 32
    options: dict[str, Any] = field(default_factory=dict)

    def build(self) -> TextEncoder:
        """Construct the encoder this config names."""
        return build_text_encoder(self.name, max_length=self.max_length, **self.options)


def _register_builtins() -> None:
    # The built-in encoders register themselves on import (transformers itself is only
    # imported when an HFTextEncoder is built).
    from difflab.text import hf, learned  # noqa: F401


_register_builtins()
