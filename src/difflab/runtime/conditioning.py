"""Prompts -> the network's conditioning keywords, for text, class-label and unconditional models.

A conditioner has `kwargs(prompts, device)` (the conditional branch), `null(negative, n, device)`
(the unconditional branch classifier-free guidance uses, or a ConfigError where there is none),
`example_prompts()` (what quantizer calibration samples) and `describe()`. The pipeline holds
one and never asks what kind it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from difflab.config import ConfigError
from difflab.text.cache import EmbeddingCache

# Calibration prompts for text models (quantizer calibration samples them).
CALIBRATION_PROMPTS = ("a red circle", "a blue square", "two green triangles",
                       "a yellow diamond to the left of a purple cross", "a white ring",
                       "three orange crosses", "a cyan square above a red ring", "a blue diamond")


def check_prompts(prompts: Sequence[str]) -> None:
    """Raise unless `prompts` is a list of strings (a bare string is a common slip)."""
    if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
        raise ConfigError(f"prompts must be a list of strings, got {prompts!r}")


class TextConditioner:
    """Text states from the model's encoder: a frozen one encodes each distinct prompt once
    (EmbeddingCache); a trainable one (part of the network, e.g. "learned") on every call, so
    that its current weights are the ones used."""

    def __init__(self, encoder: Any) -> None:
        self.encoder = encoder
        self.cache = None if getattr(encoder, "trainable", False) else EmbeddingCache(encoder)

    def kwargs(self, prompts: Sequence[str], device: torch.device) -> dict[str, Tensor]:
        check_prompts(prompts)
        if self.cache is not None:
            return self.cache.encode(list(prompts), device).network_kwargs()
        with torch.no_grad():
            encoding = self.encoder.encode(list(prompts)).network_kwargs()
        return {k: v.to(device) for k, v in encoding.items()}

    def null(self, negative: str, n: int, device: torch.device) -> dict[str, Tensor]:
        """The negative prompt ("" = the empty prompt the model learned by dropout)."""
        return self.kwargs([negative] * n, device)

    def example_prompts(self) -> list[str]:
        return list(CALIBRATION_PROMPTS)

    def describe(self) -> str:
        name = getattr(self.encoder, "name", type(self.encoder).__name__)
        return f"text ({name})"


class ClassConditioner:
    """Class labels: a prompt is a class name or its index; label `null_class` is no class."""

    def __init__(self, names: Sequence[str], null_class: int) -> None:
        self.names = tuple(names)
        self.null_class = null_class
        self.index = {name: i for i, name in enumerate(self.names)}
        self.index.update({str(i): i for i in range(len(self.names))})

    def label(self, prompt: str) -> int:
        """The label a prompt names; a ConfigError listing the valid names otherwise."""
        if prompt in self.index:
            return self.index[prompt]
        shown = ", ".join(repr(n) for n in self.names[:12])
        more = f", ... ({len(self.names)} classes)" if len(self.names) > 12 else ""
        raise ConfigError(f"{prompt!r} is not a class of this class-conditional model; give a "
                          f"class name or an index 0..{len(self.names) - 1}: {shown}{more}")

    def kwargs(self, prompts: Sequence[str], device: torch.device) -> dict[str, Tensor]:
        check_prompts(prompts)
        return {"y": torch.tensor([self.label(p) for p in prompts], device=device)}

    def null(self, negative: str, n: int, device: torch.device) -> dict[str, Tensor]:
        """The null class (what condition dropout trained); a negative prompt has no meaning."""
        if negative:
            raise ConfigError(f"negative prompt {negative!r}: a class-conditional model's "
                              "unconditional branch is its null class; valid: ''")
        return {"y": torch.full((n,), self.null_class, dtype=torch.long, device=device)}

    def example_prompts(self) -> list[str]:
        return list(self.names[:8])

    def describe(self) -> str:
        return f"class labels ({len(self.names)} classes, null {self.null_class})"


class Unconditional:
    """No conditioning: every prompt must be the empty string."""

    def kwargs(self, prompts: Sequence[str], device: torch.device) -> dict[str, Tensor]:
        check_prompts(prompts)
        bad = [p for p in prompts if p]
        if bad:
            raise ConfigError(f"this model is unconditional; the prompt must be '' "
                              f"(got {bad[0]!r})")
        return {}

    def null(self, negative: str, n: int, device: torch.device) -> dict[str, Tensor]:
        raise ConfigError("classifier-free guidance needs a conditional model; this one is "
                          "unconditional (valid: cfg = 1)")

    def example_prompts(self) -> list[str]:
        return [""] * 4

    def describe(self) -> str:
        return "unconditional"


def make_conditioner(text_encoder: Any | None, class_names: Sequence[str] = ()) -> Any:
    """The conditioner of a model: text when it has an encoder, class labels when it has classes
    (the null label is the one after them), else unconditional."""
    if text_encoder is not None:
        return TextConditioner(text_encoder)
    if class_names:
        return ClassConditioner(class_names, null_class=len(class_names))
    return Unconditional()
