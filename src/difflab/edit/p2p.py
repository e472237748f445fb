"""Prompt-to-Prompt: edit an image by editing its prompt, with the source's cross-attention maps
injected into the target's denoising ("Prompt-to-Prompt Image Editing with Cross Attention
Control", 2022).

The source and target run as one batch (rows [source; target]) from the same inverted noise.
`apply_attention_control(net, config, swaps)` hooks the `probs` hook point of every
cross-attention layer inside the network's declared blocks (`difflab.models.layers.
CrossAttention.probs`): during the first `tau` of the steps the target rows' maps are replaced by
the source rows' maps (mapped token by token: `WordSwap`), the swapped word's maps can be
re-weighted, and the maps of the swapped words are averaged per step for P2P's local blend,
which keeps the source latents wherever those words do not attend.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from difflab.accel.hooks import AccelHandle, ModelHook, StepState, attach
from difflab.config import ConfigError
from difflab.core.context import current_context
from difflab.models.layers import CrossAttention


@dataclass(frozen=True)
class AttentionControlConfig:
    """P2P: inject the source maps for the first `tau` of the steps, scale the swapped word's
    maps by `reweight`, and blend locally where the swapped words' normalised maps exceed
    `blend` (0: no local blend)."""

    tau: float = 0.6
    reweight: float = 1.0
    blend: float = 0.5

    def __post_init__(self) -> None:
        if not 0 <= self.tau <= 1:
            raise ConfigError(f"p2p tau must be in [0, 1], got {self.tau}")
        if not 0 <= self.reweight <= 10:
            raise ConfigError(f"p2p reweight must be in [0, 10], got {self.reweight}")
        if not 0 <= self.blend < 1:
            raise ConfigError(f"p2p blend threshold must be in [0, 1), got {self.blend}")


@dataclass(frozen=True)
class WordSwap:
    """How target tokens take the source's maps: target map t = sum_s mapping[t, s] source map
    s; `source_tokens` / `target_tokens` are the swapped word's token positions (empty when the
    prompts are the same)."""

    mapping: Tensor  # (T, T)
    source_tokens: tuple[int, ...]
    target_tokens: tuple[int, ...]
    source_word: str = ""
    target_word: str = ""


def _words(tokenizer: Any, prompt: str, length: int) -> tuple[list[str], list[int | None]]:
    """The prompt's words (lower case, as the tokenizer splits them) and each token's word."""
    enc = tokenizer(prompt, padding="max_length", truncation=True, max_length=length,
                    return_offsets_mapping=True)
    word_ids = enc.word_ids()
    spans: dict[int, tuple[int, int]] = {}
    for w, (a, b) in zip(word_ids, enc["offset_mapping"], strict=True):
        if w is not None:
            lo, hi = spans.get(w, (a, b))
            spans[w] = (min(lo, a), max(hi, b))
    return [prompt[a:b].lower() for _, (a, b) in sorted(spans.items())], word_ids


def word_swap(tokenizer: Any, source: str, target: str, length: int) -> WordSwap:
    """The token mapping of a one-word swap ("a red circle" -> "a blue circle"; the article may
    follow it: "a red" -> "an orange"); a ConfigError when the prompts differ in more than
    one word."""
    sw, s_ids = _words(tokenizer, source, length)
    tw, t_ids = _words(tokenizer, target, length)
    same = [_article(w) for w in sw], [_article(w) for w in tw]  # "a red" -> "an orange"
    pre = 0
    while pre < min(len(sw), len(tw)) and same[0][pre] == same[1][pre]:
        pre += 1
    post = 0
    while post < min(len(sw), len(tw)) - pre and same[0][-1 - post] == same[1][-1 - post]:
        post += 1
    s_diff, t_diff = sw[pre:len(sw) - post], tw[pre:len(tw) - post]
    if len(s_diff) > 1 or len(t_diff) > 1 or len(s_diff) != len(t_diff):
        was, now = " ".join(s_diff) or "(nothing)", " ".join(t_diff) or "(nothing)"
        raise ConfigError(f"p2p swaps one word, but {source!r} -> {target!r} changes {was!r} "
                          f"-> {now!r}; give prompts that differ in one word")
    swapped = pre if s_diff else None

    def labels(ids: list[int | None], n_words: int) -> list[Any]:
        """Each token's identity across the two prompts: ("pre", word, piece) before the swap,
        ("post", words from the end, piece) after it, ("swap", piece); specials as below."""
        out: list[Any] = []
        for i, w in enumerate(ids):
            if w is None:
                out.append(None)
                continue
            piece = out[-1][-1] + 1 if i > 0 and ids[i - 1] == w else 0
            key = ("swap",) if w == swapped else (("pre", w) if w < pre else ("post", n_words - w))
            out.append((*key, piece))
        return _mark_specials(out, ids)

    s_lab, t_lab = labels(s_ids, len(sw)), labels(t_ids, len(tw))
    mapping = torch.zeros(length, length)
    s_index = {lab: i for i, lab in enumerate(s_lab) if lab is not None}
    s_swap = tuple(i for i, lab in enumerate(s_lab) if lab is not None and lab[0] == "swap")
    t_swap = tuple(i for i, lab in enumerate(t_lab) if lab is not None and lab[0] == "swap")
    for t, lab in enumerate(t_lab):
        if lab is None:
            continue
        if lab[0] == "swap":  # the new word's pieces share the old word's maps
            mapping[t, list(s_swap)] = 1.0 / len(t_swap)
        elif lab in s_index:
            mapping[t, s_index[lab]] = 1.0
    return WordSwap(mapping, s_swap, t_swap, s_diff[0] if s_diff else "",
                    t_diff[0] if t_diff else "")


def _article(word: str) -> str:
    """Words as compared for a swap: "a" and "an" are one word (they follow the next word)."""
    return "a" if word == "an" else word


def _mark_specials(labels: list[Any], ids: list[int | None]) -> list[Any]:
    """Token 0 is ("cls",), the first special token after a word is ("sep",), later special
    tokens are padding (None)."""
    out = list(labels)
    out[0] = ("cls",)
    for i in range(1, len(ids)):
        if ids[i] is None and ids[i - 1] is not None:
            out[i] = ("sep",)
            break
    return out


class _Controller(ModelHook):
    """On one CrossAttention.probs: the conditional rows hold [source (B); target (B)]."""

    def __init__(self, shared: dict[str, Any], config: AttentionControlConfig,
                 swaps: Sequence[WordSwap]) -> None:
        self.shared, self.config = shared, config
        self.mapping = torch.stack([w.mapping for w in swaps])  # (B, T, T)
        t = self.mapping.shape[-1]
        self.src_words = torch.stack([_indicator(w.source_tokens, t) for w in swaps])  # (B, T)
        self.tgt_words = torch.stack([_indicator(w.target_tokens, t) for w in swaps])
        self.scale = 1 + (config.reweight - 1) * self.tgt_words  # (B, T)

    def post_forward(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
        ctx = current_context()
        if ctx is None:
            return output
        probs = output  # (R, H, N, T)
        n_cond = probs.shape[0] // 2 if ctx.branch == "all" else probs.shape[0]  # cond first
        b = n_cond // 2
        if b != len(self.mapping):
            raise ValueError(f"attention control for {len(self.mapping)} images got a batch of "
                             f"{n_cond} conditional rows; it needs [source; target]")
        src, tgt = probs[:b], probs[b:n_cond]
        new_tgt = tgt
        if ctx.step < self.config.tau * ctx.num_steps:  # P2P's word swap: the source's maps
            new_tgt = torch.einsum("bhns,bts->bhnt", src, self.mapping.to(src))
        if self.config.reweight != 1:
            new_tgt = new_tgt * self.scale.to(src)[:, None, None, :]
        maps = self.shared.setdefault(ctx.step, [])  # for the local blend: (B, N) each
        maps.append(((src * self.src_words.to(src)[:, None, None]).sum(-1).mean(1),
                     (new_tgt * self.tgt_words.to(src)[:, None, None]).sum(-1).mean(1)))
        if new_tgt is tgt:
            return output
        return torch.cat([src, new_tgt, probs[n_cond:]])


def _indicator(tokens: Sequence[int], length: int) -> Tensor:
    out = torch.zeros(length)
    out[list(tokens)] = 1.0
    return out


def cross_attention_layers(net: nn.Module) -> list[CrossAttention]:
    """The cross-attention layers inside the network's declared blocks (`net.blocks`)."""
    blocks = getattr(net, "blocks", None)
    if blocks is None:
        raise ConfigError(f"{type(net).__name__} declares no blocks; attention control needs "
                          "`model.blocks`")
    layers = [m for block in blocks for m in block.modules() if isinstance(m, CrossAttention)]
    if not layers:
        raise ConfigError(f"{type(net).__name__} has no cross-attention in its blocks; "
                          "Prompt-to-Prompt needs a text-conditioned model")
    return layers


class AttentionControl(AccelHandle):
    """The handle `apply_attention_control` returns: `maps[step]` holds the (source, target)
    word maps of each layer; `blend_mask(step, size)` is P2P's local-blend mask."""

    def __init__(self, handle: AccelHandle, maps: dict[int, list[tuple[Tensor, Tensor]]],
                 config: AttentionControlConfig, swaps: Sequence[WordSwap]) -> None:
        super().__init__(handle.name, handle.state, handle.hooks)
        self.maps, self.config = maps, config
        self.swapped = torch.tensor([bool(w.target_tokens) for w in swaps])  # (B,)

    def blend_mask(self, step: int, size: tuple[int, int]) -> Tensor:
        """(B, 1, H, W) float: 1 where the swapped words attend (in either prompt), from this
        step's maps averaged over the layers with a square token grid, max-pooled 3x3,
        normalised to max 1 and thresholded at `blend`; all 1 (no blending) for an image
        without a swapped word, or with `blend` = 0."""
        rows = []
        for s, t in self.maps.get(step, []):
            side = int(round(s.shape[1] ** 0.5))
            if side * side != s.shape[1]:
                continue
            pair = torch.stack([s, t], 1).view(-1, 2, side, side)  # (B, 2, side, side)
            rows.append(F.interpolate(pair, size=size, mode="bilinear", align_corners=False))
        swapped = self.swapped.view(-1, 1, 1, 1)
        if not rows or self.config.blend == 0:
            return torch.ones(len(swapped), 1, *size)
        m = F.max_pool2d(torch.stack(rows).mean(0), 3, stride=1, padding=1)  # (B, 2, H, W)
        m = m / m.flatten(2).amax(-1).clamp(min=1e-12)[..., None, None]
        mask = (m > self.config.blend).any(1, keepdim=True).float()
        return torch.where(swapped.to(mask.device), mask, torch.ones_like(mask))


def apply_attention_control(net: nn.Module, config: AttentionControlConfig,
                            swaps: Sequence[WordSwap]) -> AttentionControl:
    """Hook every cross-attention layer of `net`'s blocks for P2P on a batch of [source;
    target] pairs, image b swapping per `swaps[b]`; `handle.remove()` restores the network."""
    if not swaps:
        raise ConfigError("attention control needs at least one word swap")
    maps: dict[int, list[tuple[Tensor, Tensor]]] = {}
    hooks = [(layer.probs, _Controller(maps, config, swaps))
             for layer in cross_attention_layers(net)]
    return AttentionControl(attach("p2p", net, StepState(), hooks), maps, config, swaps)
