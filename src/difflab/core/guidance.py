"""Classifier-free guidance as a denoiser wrapper ("Classifier-Free Diffusion Guidance", 2022).

`cfg(model, scale, uncond)` and `composable(model, terms, uncond)` return a new denoiser.
Batch order of the one batched forward (published with branch "all", so a cache can split it):
rows [k B, (k + 1) B) hold condition k (for `cfg`, k = 0 is the call's own conditioning) and the
last B rows hold the unconditional / negative-prompt condition. Outside the guidance interval, or
when guidance is a no-op (one condition with weight 1), only the conditions run (branch "cond").
Every conditioning tensor is concatenated with its counterparts along the batch axis; a
`context` (B, T, D) of different lengths is zero-padded to the longest, with `context_mask`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from difflab.config import ConfigError
from difflab.core.context import branch_context
from difflab.core.denoisers import Denoiser

Cond = dict[str, Tensor]


def _pad_context(conds: list[Cond]) -> list[Cond]:
    """Zero-pad `context` (B, T, D) to the longest T and mark real tokens in `context_mask`."""
    if not all("context" in c for c in conds):
        return conds
    longest = max(c["context"].shape[1] for c in conds)
    out = []
    for c in conds:
        ctx = c["context"]  # (B, T, D)
        b, t = ctx.shape[:2]
        mask = c.get("context_mask", torch.ones(b, t, dtype=torch.bool, device=ctx.device))
        pad = longest - t
        out.append({**c, "context": torch.nn.functional.pad(ctx, (0, 0, 0, pad)),
                    "context_mask": torch.nn.functional.pad(mask, (0, pad), value=False)})
    return out


def _cat_conds(conds: list[Cond]) -> Cond:
    """Concatenate each conditioning key along the batch axis, in the order given."""
    conds = _pad_context(conds)  # may add a context_mask where one side lacked it
    keys = set(conds[0])
    for c in conds[1:]:
        if set(c) != keys:
            raise ValueError(f"conditions have different keys: {sorted(keys)} vs {sorted(c)}; "
                             "the uncond dict needs the same keys as the condition")
    return {k: torch.cat([c[k] for c in conds]) for k in conds[0]}


class GuidedDenoiser(Denoiser):
    """D = D_u + sum_k w_k (D_k - D_u) from one batched forward, with an optional active
    interval ("Applying Guidance in a Limited Interval...", 2024) and rescale phi ("Common
    Diffusion Noise Schedules and Sample Steps are Flawed", 2023)."""

    def __init__(self, model: Denoiser, terms: Sequence[tuple[Cond | None, float]], uncond: Cond,
                 interval: tuple[float, float] | None = None, rescale: float = 0.0) -> None:
        super().__init__()
        if not terms:
            raise ConfigError("guidance needs at least one (condition, weight) term")
        if interval is not None and not 0 <= interval[0] <= interval[1]:
            raise ConfigError(f"guidance interval must be (lo, hi) with 0 <= lo <= hi, "
                              f"got {interval!r}")
        if not 0 <= rescale <= 1:
            raise ConfigError(f"guidance rescale must be in [0, 1], got {rescale!r}")
        weights = [w for _, w in terms]
        if interval is not None and sum(weights) <= 0:
            raise ConfigError("with an interval, guidance weights need a positive sum (outside "
                              f"it the prediction is their normalised average), got {weights}")
        self.model, self.terms, self.uncond = model, list(terms), uncond
        self.interval, self.rescale = interval, rescale

    def alpha(self, sigma: Tensor) -> Tensor:
        return self.model.alpha(sigma)

    def _active(self, sigma: Tensor) -> bool:
        if len(self.terms) == 1 and self.terms[0][1] == 1:  # D_u + 1 (D_c - D_u) = D_c
            return False
        lo, hi = self.interval if self.interval is not None else (0.0, float("inf"))
        return bool(sigma.min() >= lo and sigma.max() <= hi)

    def forward(self, x: Tensor, sigma: Tensor, **cond: Tensor) -> Tensor:
        conds = [cond if c is None else c for c, _ in self.terms]
        weights = torch.tensor([w for _, w in self.terms], dtype=x.dtype, device=x.device)
        k, b = len(conds), x.shape[0]
        sigma = sigma.expand(b)
        if not self._active(sigma):  # only the conditions, averaged with normalised weights
            with branch_context("cond"):
                out = self.model(x.repeat(k, *[1] * (x.ndim - 1)), sigma.repeat(k),
                                 **_cat_conds(conds))
            return torch.einsum("k,kb...->b...", weights / weights.sum(), out.unflatten(0, (k, b)))
        with branch_context("all"):
            out = self.model(x.repeat(k + 1, *[1] * (x.ndim - 1)), sigma.repeat(k + 1),
                             **_cat_conds([*conds, self.uncond]))
        out = out.unflatten(0, (k + 1, b))  # (k + 1, B, ...)
        d_cond, d_uncond = out[:k], out[k]
        guided = d_uncond + torch.einsum("k,kb...->b...", weights, d_cond - d_uncond)
        if self.rescale == 0:
            return guided
        # match the std of the (weight-averaged) conditional prediction, per sample; applied to
        # denoised rather than eps/v so it is defined at every sigma (also flow's t = 1)
        ref = torch.einsum("k,kb...->b...", weights / weights.sum(), d_cond)
        dims = list(range(1, x.ndim))
        factor = ref.std(dims, keepdim=True) / guided.std(dims, keepdim=True).clamp(min=1e-12)
        return guided * (self.rescale * factor + 1 - self.rescale)


def cfg(model: Denoiser, scale: float, uncond: Cond, *,
        interval: tuple[float, float] | None = None, rescale: float = 0.0) -> GuidedDenoiser:
    """Classifier-free guidance D_u + scale (D_c - D_u); a negative prompt is just `uncond`
    ("Classifier-Free Diffusion Guidance", 2022)."""
    return GuidedDenoiser(model, [(None, scale)], uncond, interval, rescale)


def composable(model: Denoiser, terms: Sequence[tuple[Cond, float]], uncond: Cond, *,
               interval: tuple[float, float] | None = None, rescale: float = 0.0
               ) -> GuidedDenoiser:
    """Weighted sum of several conditions, D_u + sum_k w_k (D_k - D_u) ("Compositional Visual
    Generation with Composable Diffusion Models", 2022)."""
    return GuidedDenoiser(model, terms, uncond, interval, rescale)
