"""Region-adaptive sampling for the DiT: on sparse steps the blocks see only the tokens in focus,
the rest of the output is the previous step's ("Region-Adaptive Sampling for Diffusion
Transformers", 2025).

Hooks: a pre-hook on every block swaps in the kept tokens (block 0 gathers h (B, N, D) ->
(B, n, D); every block gets `BlockInputs` with RoPE tables gathered and grid None, as
`DiT.forward_masked` does), the last block scatters back to (B, N, D), and a hook on the model
replaces the output outside the focus by the cached output. Deviation from the paper: kept tokens
attend only to each other (RAS also caches the keys and values of the dropped tokens).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from difflab.accel.api import register_accel
from difflab.accel.hooks import AccelHandle, ModelHook, StepState, attach
from difflab.config import ConfigError
from difflab.models.dit import keep_tokens


@dataclass(frozen=True)
class RegionAdaptiveConfig:
    """Update `ratio` of the tokens on sparse steps; full steps: the first `warmup` and then
    every `full_every` (0: none); `starvation` raises a token's score per step it waited."""

    ratio: float = 0.5
    warmup: int = 4
    full_every: int = 4
    starvation: float = 0.1

    def __post_init__(self) -> None:
        if not 0 < self.ratio <= 1:
            raise ConfigError(f"ras ratio must be in (0, 1], got {self.ratio}")
        if self.warmup < 1 or self.full_every < 0 or self.starvation < 0:
            raise ConfigError(f"need warmup >= 1, full_every >= 0, starvation >= 0; got "
                              f"{self.warmup}, {self.full_every}, {self.starvation}")


def token_scores(out: Tensor, patch: int) -> Tensor:
    """Per-token std of the model output over its patch's values: (B, C, H, W) -> (B, N)."""
    B, C, H, W = out.shape
    tokens = out.float().reshape(B, C, H // patch, patch, W // patch, patch)
    return tokens.permute(0, 2, 4, 1, 3, 5).reshape(B, (H // patch) * (W // patch), -1).std(-1)


class _Focus(ModelHook):
    """On the model: choose this call's kept tokens, then merge the output with the cache."""

    def __init__(self, state: StepState, config: RegionAdaptiveConfig, patch: int) -> None:
        self.state, self.config, self.patch = state, config, patch

    def _sparse(self, step: int) -> bool:
        c = self.config
        if step < c.warmup or c.ratio == 1:
            return False
        return not (c.full_every and (step - c.warmup) % c.full_every == 0)

    def pre_forward(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        call = self.state.call
        if call is None:
            return args, kwargs
        b = self.state.branch()
        b["idx"] = None
        if "out" in b and self._sparse(call.step):
            scores = token_scores(b["out"], self.patch)  # (B, N)
            scores = scores / scores.mean(1, keepdim=True).clamp(min=1e-12)
            scores = scores + self.config.starvation * b["age"]
            n_keep = max(1, round(scores.shape[1] * self.config.ratio))
            b["idx"] = scores.topk(n_keep, dim=1).indices.sort(dim=1).values  # (B, n)
        self.state.stats["partial" if b["idx"] is not None else "full"] += 1
        return args, kwargs

    def post_forward(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
        if self.state.call is None:
            return output
        b = self.state.branch()
        B, _, H, W = output.shape
        gh, gw = H // self.patch, W // self.patch
        if b["idx"] is None:
            b["age"] = torch.zeros(B, gh * gw, device=output.device)
        else:
            keep = torch.zeros(B, gh * gw, dtype=torch.bool, device=output.device)
            keep.scatter_(1, b["idx"], True)
            b["age"] = torch.where(keep, 0.0, b["age"] + 1)
            pixels = keep.view(B, 1, gh, 1, gw, 1).expand(B, 1, gh, self.patch, gw, self.patch)
            output = torch.where(pixels.reshape(B, 1, H, W), output, b["out"].to(output))
        b["out"] = output.detach()
        return output


class _SparseBlock(ModelHook):
    """On block j: feed it the kept tokens; the last block scatters them back to all N."""

    def __init__(self, state: StepState, first: bool, last: bool) -> None:
        self.state, self.first, self.last = state, first, last

    def _idx(self) -> Tensor | None:
        return None if self.state.call is None else self.state.branch()["idx"]

    def pre_forward(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        idx = self._idx()
        if idx is None:
            return args, kwargs
        h, inputs = args[0], args[1]  # (B, N or n, D), BlockInputs
        b = self.state.branch()
        if self.first:
            b["n_tokens"] = h.shape[1]
            h, b["inputs"] = keep_tokens(h, inputs, idx)  # (B, n, D), RoPE tables gathered
        return (h, b["inputs"], *args[2:]), kwargs

    def post_forward(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
        idx = self._idx()
        if idx is None or not self.last:
            return output
        B, _, D = output.shape
        full = output.new_zeros(B, self.state.branch()["n_tokens"], D)  # dropped: replaced later
        return full.scatter(1, idx[..., None].expand(-1, -1, D), output)


@register_accel("ras", RegionAdaptiveConfig)
def apply_ras(model: nn.Module, config: RegionAdaptiveConfig) -> AccelHandle:
    """Region-adaptive sampling: sparse steps update only the highest-scoring tokens and reuse
    the cached output elsewhere ("Region-Adaptive Sampling for Diffusion Transformers", 2025)."""
    cfg = getattr(model, "config", None)
    if getattr(cfg, "arch", None) != "dit":
        raise ConfigError(f"ras needs a DiT (tokens on a patch grid), got {type(model).__name__}")
    if cfg.kv_compress > 1:
        raise ConfigError(f"ras drops tokens, which kv_compress={cfg.kv_compress} cannot take "
                          "(it pools keys over the full grid); valid: kv_compress = 1")
    state, blocks = StepState(), list(model.blocks)
    hooks: list[tuple[nn.Module, ModelHook]] = [(model, _Focus(state, config, cfg.patch_size))]
    last = len(blocks) - 1
    hooks += [(blk, _SparseBlock(state, i == 0, i == last)) for i, blk in enumerate(blocks)]
    return attach("ras", model, state, hooks)
