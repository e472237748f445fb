"""A small text transformer learned from scratch, jointly with the diffusion model, as in
"GLIDE: Towards Photorealistic Image Generation and Editing with Text-Guided Diffusion
Models" (2021), over a word vocabulary of the shapes world (unknown words map to UNK).
"""

from __future__ import annotations

import re

import torch
from torch import nn

from difflab.data.captions import TEMPLATE_WORDS
from difflab.data.world import COLORS, NUMBERS, PLURALS, SHAPES, SIZES
from difflab.text.base import TEXT_ENCODERS, TextEncoder, TextEncoding, masked_mean

PAD, UNK, BOS = "<pad>", "<unk>", "<bos>"
_WORD = re.compile(r"[a-z]+|\d+|[;:,]")


def world_vocabulary() -> list[str]:
    """Specials, then every word the shapes world's captions use, sorted (stable ids)."""
    # World words only: novel concepts (NOVEL_SHAPES, their plurals, NOVEL_COLORS) stay unknown.
    words = set(TEMPLATE_WORDS) | set(SHAPES) | {PLURALS[s] for s in SHAPES} | set(COLORS)
    words |= set(SIZES)
    words |= set(NUMBERS.values()) | {str(n) for n in NUMBERS} | {";", ":", ","}
    return [PAD, UNK, BOS, *sorted(words)]


class WordTokenizer:
    """Lower-cased words, numbers and ; : , -> ids; BOS first, padded/truncated to max_length."""

    def __init__(self, vocab: list[str], max_length: int = 32) -> None:
        if vocab[:3] != [PAD, UNK, BOS]:
            raise ValueError(f"vocab must start with {[PAD, UNK, BOS]}; got {vocab[:3]}")
        self.vocab = list(vocab)
        self.ids = {w: i for i, w in enumerate(self.vocab)}
        self.max_length = max_length

    def words(self, prompt: str) -> list[str]:
        return _WORD.findall(prompt.lower())

    def __call__(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """ids (B, T) long and mask (B, T) bool (True = real token, BOS included)."""
        ids = torch.zeros(len(prompts), self.max_length, dtype=torch.long)  # PAD = 0
        for b, prompt in enumerate(prompts):
            seq = [self.ids[BOS]] + [self.ids.get(w, 1) for w in self.words(prompt)]
            seq = seq[: self.max_length]
            ids[b, : len(seq)] = torch.tensor(seq)
        return ids, ids != 0


class LearnedTextEncoder(TextEncoder):
    """Word embeddings + learned positions + a pre-norm transformer encoder (trainable)."""

    trainable = True

    def __init__(
        self,
        max_length: int = 32,
        dim: int = 128,
        depth: int = 2,
        heads: int = 4,
        vocab: list[str] | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if max_length < 1 or dim < 1 or depth < 0 or heads < 1 or dim % heads:
            raise ValueError(
                f"bad learned encoder size: max_length={max_length}, dim={dim}, depth={depth}, "
                f"heads={heads} (dim must be divisible by heads)"
            )
        self.name, self.dim, self.max_length = "learned", dim, max_length
        self.tokenizer = WordTokenizer(vocab or world_vocabulary(), max_length)
        self.embed = nn.Embedding(len(self.tokenizer.vocab), dim)
        self.pos = nn.Parameter(torch.zeros(max_length, dim))
        layer = nn.TransformerEncoderLayer(
            dim, heads, 4 * dim, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self._init_weights(seed)

    def _init_weights(self, seed: int) -> None:
        # Every parameter is set here from `seed` (none keeps PyTorch's global-RNG init):
        # matrices N(0, 0.02), biases 0, LayerNorm scales 1.
        g = torch.Generator().manual_seed(seed)
        for name, p in self.named_parameters():
            if p.dim() > 1 or name == "pos":
                p.data.normal_(0.0, 0.02, generator=g)
            elif name.endswith("bias"):
                p.data.zero_()

    def encode(self, prompts: list[str]) -> TextEncoding:
        """Token states (B, T, D), mask (B, T), masked-mean pooled (B, D); differentiable."""
        if isinstance(prompts, str):
            raise TypeError("encode takes a list of prompts, not a single string")
        ids, mask = self.tokenizer(list(prompts))
        return self.encode_ids(ids.to(self.pos.device), mask.to(self.pos.device))

    def encode_ids(self, ids: torch.Tensor, mask: torch.Tensor) -> TextEncoding:
        """`encode` from the tokenizer's ids (B, T) and mask (B, T): what training calls inside
        the network's forward, so that gradients (and DDP's reduction) reach the encoder."""
        x = self.embed(ids) + self.pos  # (B, T, D)
        x = self.norm(self.blocks(x, src_key_padding_mask=~mask))
        x = x * mask.unsqueeze(-1)  # zero at padding
        return TextEncoding(x, mask, masked_mean(x, mask))


TEXT_ENCODERS.register("learned")(LearnedTextEncoder)
