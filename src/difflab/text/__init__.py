"""Text encoders: bundled MiniLM token states, a learned-from-scratch encoder, local models."""

from difflab.text.base import (
    TEXT_ENCODERS,
    TextConfig,
    TextEncoder,
    TextEncoding,
    build_text_encoder,
)

__all__ = ["TEXT_ENCODERS", "TextConfig", "TextEncoder", "TextEncoding", "build_text_encoder"]
