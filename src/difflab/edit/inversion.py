"""Inversion: an image -> the noise (and null conditioning) from which guided DDIM sampling
returns it, so that an edit can start from it.

Every method returns an `Inversion`: the encoding's latents at every level of the schedule
(`latents[i]` at `sigmas[i]`, `latents[-1]` the image) and the unconditional conditioning that
guided sampling uses at each step (`uncond(i)`); `reconstruct(model, inversion)` runs that
sampling. Methods register in `INVERSIONS`:

- `ddim`: DDIM inversion under the guided model ("DDIM", 2021, Sec. 4.3); with
  `fixed_point_iters` > 0 each step is refined until the sampler undoes it ("On Exact Inversion
  of DPM-Solvers", 2024).
- `null-text`: DDIM inversion at guidance 1 as the pivot, then the null embedding of each step
  optimised so that guided sampling retraces it ("Null-text Inversion for Editing Real Images
  using Guided Diffusion Models", 2023).
- `negative-prompt`: DDIM inversion at guidance 1, with the source prompt as the negative
  prompt, which makes guided sampling equal the conditional one: no optimisation
  ("Negative-prompt Inversion: Fast Image Inversion for Editing with Text-guided Diffusion
  Models", 2023).
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from difflab.config import ConfigError
from difflab.core.context import StepContext, step_context
from difflab.core.denoisers import Denoiser
from difflab.core.guidance import cfg as guided
from difflab.core.samplers import ddim_step, invert_ddim
from difflab.registry import Registry

Cond = dict[str, Tensor]
INVERSIONS: Registry = Registry("inversion method")


@dataclass
class Inversion:
    """An encoded batch: latents at each sigma, and the guidance that decodes them back."""

    latents: list[Tensor]  # n + 1 tensors (B, C, H, W): latents[i] at sigmas[i]; [-1] the image
    sigmas: Tensor  # (n + 1,) ending in 0
    cond: Cond  # the source prompts' conditioning
    scale: float  # the guidance scale it decodes under
    unconds: list[Cond] = field(default_factory=list)  # per step; [] = `null` at every step
    null: Cond | None = None  # the unconditional conditioning (None when scale = 1)
    method: str = ""
    seconds: float = 0.0  # wall time of the inversion
    losses: list[float] = field(default_factory=list)  # null-text: final loss per step

    @property
    def noise(self) -> Tensor:
        return self.latents[0]

    def uncond(self, i: int) -> Cond | None:
        """The unconditional conditioning of step i (None when it decodes without guidance)."""
        return self.unconds[i] if self.unconds else self.null


def denoiser_at(model: Denoiser, scale: float, uncond: Cond | None) -> Denoiser:
    """`model` under classifier-free guidance with `uncond`, or `model` itself at scale 1."""
    return model if scale == 1 or uncond is None else guided(model, scale, uncond)


def denoise(model: Denoiser, x: Tensor, sigmas: Tensor, cond: Cond, scale: float,
            uncond: Callable[[int], Cond | None], *, first: int = 0,
            after_step: Callable[[int, Tensor], Tensor] | None = None) -> Tensor:
    """Deterministic DDIM from sigmas[first] to 0 under guidance `scale` with the per-step
    unconditional conditioning uncond(i); `after_step(i, x)` may replace x at sigmas[i + 1]
    (blending). Publishes each step's StepContext, so attention hooks know the step."""
    n = len(sigmas) - 1
    sigmas = sigmas.to(x.device, x.dtype)
    for i in range(first, n):
        sigma = sigmas[i] * x.new_ones(x.shape[0])
        with step_context(StepContext(i, n, float(sigmas[i]), "cond")):
            denoised = denoiser_at(model, scale, uncond(i))(x, sigma, **cond)
        x = ddim_step(model, x, denoised, sigmas[i], sigmas[i + 1], 0.0, None)
        if after_step is not None:
            x = after_step(i, x)
    return x


def reconstruct(model: Denoiser, inversion: Inversion) -> Tensor:
    """Guided DDIM from the inversion's noise with its own conditioning: the image again."""
    return denoise(model, inversion.noise, inversion.sigmas, inversion.cond, inversion.scale,
                   inversion.uncond)


def ddim_latents(model: Denoiser, x0: Tensor, sigmas: Tensor, cond: Cond,
                 fixed_point_iters: int = 0) -> list[Tensor]:
    """DDIM-encode x0 and keep every level: n + 1 latents, [i] at sigmas[i], [-1] = x0."""
    latents = [x0] * len(sigmas)
    invert_ddim(model, x0, sigmas, cond, fixed_point_iters=fixed_point_iters,
                callback=lambda r: latents.__setitem__(r["i"], r["x"]))
    return latents


def _check(scale: float, null: Cond | None) -> None:
    if scale < 1:
        raise ConfigError(f"inversion guidance scale must be >= 1, got {scale}")
    if scale != 1 and null is None:
        raise ConfigError("guidance scale > 1 needs the unconditional conditioning (null)")


@INVERSIONS.register("ddim")
@torch.no_grad()
def invert_ddim_guided(model: Denoiser, x0: Tensor, sigmas: Tensor, cond: Cond, scale: float,
                       null: Cond | None, *, fixed_point_iters: int = 0) -> Inversion:
    """DDIM inversion under guidance `scale` ("DDIM", 2021; fixed-point refinement: "On Exact
    Inversion of DPM-Solvers", 2024)."""
    _check(scale, null)
    start = time.perf_counter()
    latents = ddim_latents(denoiser_at(model, scale, null), x0, sigmas, cond, fixed_point_iters)
    return Inversion(latents, sigmas, cond, scale, null=null, method="ddim",
                     seconds=time.perf_counter() - start)


@INVERSIONS.register("negative-prompt")
@torch.no_grad()
def invert_negative_prompt(model: Denoiser, x0: Tensor, sigmas: Tensor, cond: Cond,
                           scale: float, null: Cond | None, *,
                           fixed_point_iters: int = 0) -> Inversion:
    """DDIM inversion at guidance 1 with the source prompt as the null conditioning
    ("Negative-prompt Inversion", 2023): D_c + w (D_c - D_c) = D_c retraces the encoding."""
    _check(scale, null)
    start = time.perf_counter()
    latents = ddim_latents(model, x0, sigmas, cond, fixed_point_iters)
    return Inversion(latents, sigmas, cond, scale, null=cond, method="negative-prompt",
                     seconds=time.perf_counter() - start)


@INVERSIONS.register("null-text")
def invert_null_text(model: Denoiser, x0: Tensor, sigmas: Tensor, cond: Cond, scale: float,
                     null: Cond | None, *, inner_steps: int = 10, lr: float = 0.1,
                     tolerance: float = 1e-5, fixed_point_iters: int = 0) -> Inversion:
    """Pivotal inversion ("Null-text Inversion for Editing Real Images using Guided Diffusion
    Models", 2023, Alg. 1): per step, Adam on the null text states (and pooled vector) so that
    the guided DDIM step from the current latent lands on the guidance-1 pivot; an image stops
    early once its loss is under `tolerance` (+ 2e-5 per step, as the paper's code does). The
    paper's learning rate is 1e-2 for 50 steps; for 10 steps 0.1 reconstructed best on the
    dev split (benchmarks/results/edit/dev-inversion.json)."""
    _check(scale, null)
    if null is None:
        raise ConfigError("null-text inversion needs the unconditional conditioning")
    start = time.perf_counter()
    with torch.no_grad():
        pivots = ddim_latents(model, x0, sigmas, cond, fixed_point_iters)
    if scale == 1:
        return Inversion(pivots, sigmas, cond, scale, null=null, method="null-text",
                         seconds=time.perf_counter() - start)
    trainable = [k for k in ("context", "pooled") if k in null]  # masks and labels stay fixed
    params = {k: null[k].detach().clone().requires_grad_(True) for k in trainable}
    n, x, b = len(sigmas) - 1, pivots[0], x0.shape[0]
    sig = sigmas.to(x0.device, x0.dtype)
    unconds, losses = [], []
    for i in range(n):
        sigma = sig[i] * x.new_ones(b)
        with torch.no_grad(), step_context(StepContext(i, n, float(sig[i]), "cond")):
            d_cond = model(x, sigma, **cond)
        opt = torch.optim.Adam(params.values(), lr=lr * (1 - i / 100))
        done = torch.zeros(b, dtype=torch.bool, device=x.device)
        limit = tolerance + 2e-5 * i
        for _ in range(inner_steps):
            with torch.enable_grad():
                loss = _null_loss(model, x, sigma, sig[i + 1], d_cond, scale,
                                  {**null, **params}, pivots[i + 1])  # (B,)
                done = done | (loss.detach() < limit)
                if bool(done.all()):
                    break
                # gradients for the null states only, none accumulated on the network
                grads = torch.autograd.grad(loss.sum(), list(params.values()),
                                            allow_unused=True)  # a network may ignore pooled
            frozen = {k: v.detach().clone() for k, v in params.items()}
            for v, g in zip(params.values(), grads, strict=True):
                v.grad = g  # None: Adam leaves it alone
            opt.step()
            with torch.no_grad():  # an image that has converged keeps its embedding
                for k, v in params.items():
                    keep = done.view(-1, *[1] * (v.ndim - 1))
                    v.copy_(torch.where(keep, frozen[k], v))
        step_null = {**null, **{k: v.detach().clone() for k, v in params.items()}}
        with torch.no_grad():
            losses.append(float(_null_loss(model, x, sigma, sig[i + 1], d_cond, scale,
                                           step_null, pivots[i + 1]).max()))
            with step_context(StepContext(i, n, float(sig[i]), "cond")):
                denoised = guided(model, scale, step_null)(x, sigma, **cond)
            x = ddim_step(model, x, denoised, sig[i], sig[i + 1], 0.0, None)
        unconds.append(step_null)
    return Inversion(pivots, sigmas, cond, scale, unconds=unconds, null=null,
                     method="null-text", seconds=time.perf_counter() - start, losses=losses)


def _null_loss(model: Denoiser, x: Tensor, sigma: Tensor, sigma_next: Tensor, d_cond: Tensor,
               scale: float, uncond: Cond, target: Tensor) -> Tensor:
    """Per-image mean squared distance (B,) between the guided DDIM step and the pivot."""
    d_uncond = model(x, sigma, **uncond)
    denoised = d_uncond + scale * (d_cond - d_uncond)
    x_next = ddim_step(model, x, denoised, sigma[0], sigma_next, 0.0, None)
    return (x_next - target).pow(2).flatten(1).mean(1)


def invert(method: str, model: Denoiser, x0: Tensor, sigmas: Tensor, cond: Cond, scale: float,
           null: Cond | None, **options: float) -> Inversion:
    """Run the inversion method registered as `method` (valid names listed on a typo)."""
    fn = INVERSIONS.get(method)
    check_options(f"inversion {method!r}", fn, options)
    return fn(model, x0, sigmas, cond, scale, null, **options)


def check_options(what: str, fn: Callable, options: dict) -> None:
    """Raise a ConfigError naming any option `fn` does not take as a keyword-only argument."""
    valid = [p.name for p in inspect.signature(fn).parameters.values()
             if p.kind is inspect.Parameter.KEYWORD_ONLY]
    bad = sorted(set(options) - set(valid))
    if bad:
        raise ConfigError(f"{what} has no option {', '.join(map(repr, bad))}; valid: "
                          f"{', '.join(valid) or '(none)'}")
