"""Structured cross-attention ("Training-Free Structured Diffusion Guidance for Compositional
Text-to-Image Synthesis", Feng et al., 2023) through hooks on a model's declared blocks.

The prompt's noun phrases ("a red circle", "two blue squares") come from the suites' own scene
parse, not a language parser. Each phrase is encoded alone by the same text encoder and its
token states are written over the phrase's positions in the full prompt's token states: one
aligned context W_i per phrase. Cross-attention keeps the full prompt's maps M = softmax(Q K_p^T)
and averages the values: O = M mean_i(V_i) over i = full prompt, phrase 1, ..., phrase k.

Values are affine in the context, so O = M V_p + M W_v (mean_i W_i - W_p): a post-forward hook
on each `CrossAttention` adds proj(M W_v delta) to the module's own output, delta being the
mean context minus the full prompt's (zero outside the phrases, and on the unconditional rows).
With one phrase that is the whole prompt, delta is exactly zero and the output bit-identical.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from difflab.accel.hooks import AccelHandle, ModelHook, StepState, attach
from difflab.config import ConfigError
from difflab.control.layout import phrase_token_indices
from difflab.control.probe import cross_attention_modules
from difflab.core.context import current_context
from difflab.limits import check_float
from difflab.models.layers import attention_probs, merge_heads, split_heads


@dataclass(frozen=True)
class StructuredConfig:
    """Which declared blocks get structured values (() = every block with cross-attention) and
    over which fraction of the sampling steps, from the start."""

    blocks: tuple[int, ...] = ()
    fraction: float = 1.0

    def __post_init__(self) -> None:
        check_float("structured fraction", self.fraction, 0.0, 1.0, lo_open=True)


def noun_phrases(prompt: str) -> tuple[str, ...]:
    """The noun phrases of a prompt in the suites' templates, as written in it ('a red circle
    and two blue squares' -> 'a red circle', 'two blue squares'), from the scene parse the
    evaluator uses (`align.rewards.parse_prompt`: each object is number, colour, shape)."""
    from difflab.align.rewards import parse_prompt

    spec = parse_prompt(prompt)  # raises naming the templates
    words = prompt.split()
    spans = [words[:3], words[-3:]][: len(spec.objects)]
    return tuple(_as_written(prompt, w) for w in spans)


def _as_written(prompt: str, words: list[str]) -> str:
    m = re.search(r"\s+".join(map(re.escape, words)), prompt)
    assert m is not None  # the words were split from the prompt
    return m.group(0)


def structured_contexts(pipe, prompts: Sequence[str]) -> tuple[Tensor, Tensor]:
    """(full, mean), each (B, T, D): the prompts' token states as the sampler gets them, and the
    average of them with each noun phrase's own token states aligned to its positions."""
    from difflab.control.sampling import text_tokenizer

    tokenizer, _ = text_tokenizer(pipe, "structured cross-attention")
    phrases = [noun_phrases(p) for p in prompts]
    with torch.no_grad():
        full = pipe.condition(list(prompts))["context"].float()  # (B, T, D)
        names = sorted({ph for row in phrases for ph in row})
        alone = dict(zip(names, pipe.condition(names)["context"].float(), strict=True))
    mean = full.clone()
    for b, (prompt, row) in enumerate(zip(prompts, phrases, strict=True)):
        for phrase in row:
            idx = phrase_token_indices(tokenizer, prompt, phrase)
            n = len(tokenizer(phrase, add_special_tokens=False)["input_ids"])
            if n != len(idx) or max(idx) >= full.shape[1]:
                raise ConfigError(f"phrase {phrase!r} is {n} tokens alone but covers positions "
                                  f"{idx} of {prompt!r} (of {full.shape[1]}); cannot align it")
            # W_i equals W_p outside the phrase, so only its positions move: by (W_i - W_p) / (k
            # + 1), exactly zero elsewhere (a sum of k + 1 copies divided would round)
            aligned = alone[phrase][1: 1 + n]  # (n, D), after the phrase's own [CLS]
            mean[b, idx] += (aligned - full[b, idx]) / (len(row) + 1)
    return full, mean


class _Structured:
    """The prompts' contexts and, for the model call in progress, its rows' context deltas."""

    def __init__(self, fraction: float) -> None:
        self.fraction = fraction
        self.full: Tensor | None = None  # (B, T, D)
        self.mean: Tensor | None = None  # (B, T, D)
        self.context: Tensor | None = None  # the model call's context (R, T', D)
        self.delta: Tensor | None = None  # (R, T', D): mean - full on matching rows, else 0


class _MatchRows(ModelHook):
    """On the model: find the rows of this call's context that hold the prompts (the
    conditional rows; the unconditional ones keep plain values) and set their deltas."""

    def __init__(self, state: _Structured) -> None:
        self.state = state

    def pre_forward(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        s = self.state
        s.context = s.delta = None
        if s.full is None:
            raise ConfigError("structured cross-attention is attached but has no prompts; call "
                              "set_prompts")
        ctx = current_context()
        if ctx is not None and ctx.step >= math.ceil(s.fraction * ctx.num_steps):
            return args, kwargs
        context = kwargs.get("context", args[2] if len(args) > 2 else None)
        if context is None:
            raise ConfigError("structured cross-attention needs a text-conditioned model call "
                              "(no context was given)")
        pad = context.shape[1] - s.full.shape[1]  # guidance pads contexts to the longest
        if pad < 0:
            raise ConfigError(f"the model's text context has {context.shape[1]} tokens, the "
                              f"prompts' {s.full.shape[1]}")
        full = F.pad(s.full.to(context), (0, 0, 0, pad))
        delta = F.pad((s.mean - s.full).to(context), (0, 0, 0, pad))
        match = (context[:, None] == full[None]).flatten(2).all(-1)  # (R, B)
        if not match.any(0).all():
            raise ConfigError("the model's text context does not hold every prompt given to "
                              "structured cross-attention; set_prompts with the batch's prompts")
        rows = match.any(1)
        s.delta = torch.where(rows[:, None, None], delta[match.float().argmax(1)], 0.0)
        s.context = context
        return args, kwargs


class _StructuredValues(ModelHook):
    """On one CrossAttention: add proj(M W_v delta), M its own attention map."""

    def __init__(self, name: str, state: _Structured) -> None:
        self.name, self.state = name, state

    def post_forward(self, module: nn.Module, args: tuple, kwargs: dict, output: Tensor):
        s = self.state
        if s.delta is None:
            return output
        x, context = args[0], args[1] if len(args) > 1 else kwargs["context"]
        if context is not s.context:
            raise ConfigError(f"{self.name} reads text tokens the model transformed first; "
                              "structured cross-attention needs the encoder's own token states")
        mask = args[2] if len(args) > 2 else kwargs.get("mask")
        heads = module.num_heads
        q = module.q_norm(split_heads(module.q(x), heads))  # (R, H, N, Dh)
        k = module.k_norm(split_heads(module.kv(context).chunk(2, dim=-1)[0], heads))
        probs = attention_probs(q, k, mask)  # (R, H, N, T) float32
        w_v = module.kv.weight[module.kv.out_features // 2:]  # the value half of fused K/V
        dv = split_heads(F.linear(s.delta.to(w_v.dtype), w_v), heads)  # (R, H, T, Dh)
        out = merge_heads(probs.to(dv.dtype) @ dv)  # (R, N, D)
        return output + F.linear(out, module.proj.weight).to(output.dtype)


class StructuredHandle(AccelHandle):
    """`apply_structured`'s handle: `set_prompts(pipe, prompts)` before sampling."""

    state_: _Structured

    def set_contexts(self, full: Tensor, mean: Tensor) -> None:
        """The batch's prompt token states (B, T, D) and their structured mean (B, T, D)."""
        if full.shape != mean.shape or full.ndim != 3:
            raise ConfigError(f"contexts of shapes {tuple(full.shape)} and {tuple(mean.shape)}; "
                              "need two equal (B, T, D)")
        self.state_.full, self.state_.mean = full, mean

    def set_prompts(self, pipe, prompts: Sequence[str]) -> None:
        """The prompts of the batch about to run (in the suites' templates)."""
        self.set_contexts(*structured_contexts(pipe, prompts))


def apply_structured(model: nn.Module, config: StructuredConfig | None = None
                     ) -> StructuredHandle:
    """Attach structured cross-attention (Feng et al., 2023) to the declared blocks'
    cross-attention of `model`; `handle.remove()` detaches it."""
    config = config or StructuredConfig()
    found = cross_attention_modules(model, config.blocks)
    for name, m in found:
        if type(m.kv) is not nn.Linear or type(m.proj) is not nn.Linear:
            raise ConfigError(f"{name} has a {type(m.kv).__name__} value projection; structured "
                              "cross-attention needs plain linear layers (no --quant)")
    state = _Structured(config.fraction)
    hooks = [(model, _MatchRows(state))] + [(m, _StructuredValues(name, state))
                                            for name, m in found]
    handle = attach("structured", model, StepState(), hooks)
    out = StructuredHandle(handle.name, handle.state, handle.hooks)
    out.state_ = state
    return out


def generate_structured(pipe, prompts: Sequence[str], seeds: Sequence[int], config,
                        structured: StructuredConfig | None = None,
                        progress: bool = False) -> np.ndarray:
    """Images (N, H, W, 3) uint8 of prompts[i] with seeds[i], in batches, sampled with
    structured cross-attention (Feng et al., 2023); the hooks are removed afterwards."""
    from difflab.data.grid import to_uint8

    if len(prompts) != len(seeds):
        raise ConfigError(f"{len(prompts)} prompts but {len(seeds)} seeds")
    for p in dict.fromkeys(prompts):
        noun_phrases(p)  # every prompt parses before any image is drawn
    out, bs = [], config.batch_size
    starts = range(0, len(prompts), bs)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc=f"structured {config.sampler} x{config.steps}", unit="batch")
    with apply_structured(pipe.net, structured) as handle:
        for i in starts:
            handle.set_prompts(pipe, prompts[i: i + bs])
            out.append(to_uint8(pipe.sample(prompts[i: i + bs], seeds[i: i + bs], config)))
    return np.concatenate(out)
