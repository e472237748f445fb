"""Samplers: pure functions `sample_<name>(model, x, sigmas, *, extra_args, callback, noise, **hp)`.

`model` follows the denoiser contract (`denoisers.py`): x = alpha(sigma) x0 + sigma noise,
`model(x, sigma (B,), **extra_args)` returns denoised and `model.alpha(sigma)` the signal scale.
Each sampler owns its loop, keeps multistep state in locals, publishes a `StepContext` around
each model call and calls `callback({"i", "x", "sigma", "sigma_next", "denoised"})` per step.
Stochastic samplers draw from `noise(x) -> tensor like x` (e.g. `BatchNoise(seeds)`, one
generator per sample, so an image never depends on the rest of its batch); without it they use
torch's global generator.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from difflab.core.context import StepContext, step_context
from difflab.registry import Registry

SAMPLERS: Registry = Registry("sampler")
_NFE: dict[str, Callable[[int], int]] = {}
NoiseFn = Callable[[Tensor], Tensor]
Callback = Callable[[dict[str, Any]], None]
Model = Any  # a denoiser: model(x, sigma, **cond) -> denoised, with model.alpha(sigma)


def register_sampler(name: str, nfe: Callable[[int], int] = lambda n: n) -> Callable:
    """Register `sample_<name>` with its model evaluations for n steps (schedule ending in 0)."""
    def decorate(fn: Callable) -> Callable:
        SAMPLERS.register(name)(fn)
        _NFE[name] = nfe
        return fn
    return decorate


def get_sampler(name: str) -> Callable[..., Tensor]:
    """The sampler registered as `name`; unknown names raise listing the valid ones."""
    return SAMPLERS.get(name)


def count_nfe(name: str, n_steps: int) -> int:
    """Model evaluations (denoiser calls, before CFG batching) of `name` for n_steps steps."""
    SAMPLERS.get(name)  # raises with the valid names
    return _NFE[name](n_steps)


class BatchNoise:
    """Gaussian noise from one torch.Generator per sample, seeded by `seeds[b]`."""

    def __init__(self, seeds: Sequence[int]) -> None:
        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]

    def __call__(self, like: Tensor) -> Tensor:
        if like.shape[0] != len(self.generators):
            raise ValueError(f"batch of {like.shape[0]} but {len(self.generators)} seeds")
        # drawn on the CPU in float32 so a seed gives the same noise on every device
        out = [torch.randn(like.shape[1:], generator=g) for g in self.generators]
        return torch.stack(out).to(like.device, like.dtype)


def initial_noise(shape: Sequence[int], seeds: Sequence[int], *, device: Any = "cpu",
                  dtype: torch.dtype = torch.float32) -> Tensor:
    """(len(seeds), *shape) standard normal noise, sample b drawn from seed seeds[b]."""
    return BatchNoise(seeds)(torch.empty(len(seeds), *shape, device=device, dtype=dtype))


def _denoise(model: Callable, x: Tensor, sigma: Tensor, i: int, n: int,
             extra_args: dict) -> Tensor:
    """One model call under its published step context; sigma is broadcast to (B,)."""
    with step_context(StepContext(i, n, float(sigma), "cond")):
        return model(x, sigma * x.new_ones(x.shape[0]), **extra_args)


def _prepare(x: Tensor, sigmas: Tensor, extra_args: dict | None,
             noise: NoiseFn | None) -> tuple[Tensor, dict, NoiseFn]:
    sigmas = sigmas.to(x.device, x.dtype)
    return sigmas, extra_args or {}, noise or torch.randn_like


def _report(callback: Callback | None, i: int, x: Tensor, sigma: Tensor, sigma_next: Tensor,
            denoised: Tensor) -> None:
    if callback is not None:
        callback({"i": i, "x": x, "sigma": sigma, "sigma_next": sigma_next,
                  "denoised": denoised})


@register_sampler("euler")
def sample_euler(
        model: Model, x: Tensor, sigmas: Tensor, *, extra_args: dict | None = None,
        callback: Callback | None = None, noise: NoiseFn | None = None) -> Tensor:
    """Euler on the probability-flow ODE ("Elucidating the Design Space...", 2022, Alg. 2)."""
    sigmas, extra, _ = _prepare(x, sigmas, extra_args, noise)
    n = len(sigmas) - 1
    for i in range(n):
        denoised = _denoise(model, x, sigmas[i], i, n, extra)
        d = (x - denoised) / sigmas[i]  # dx/dsigma, exact for VE-form and flow
        _report(callback, i, x, sigmas[i], sigmas[i + 1], denoised)
        x = x + d * (sigmas[i + 1] - sigmas[i])
    return x


@register_sampler("heun", nfe=lambda n: 2 * n - 1)
def sample_heun(
        model: Model, x: Tensor, sigmas: Tensor, *, extra_args: dict | None = None,
        callback: Callback | None = None, noise: NoiseFn | None = None) -> Tensor:
    """Heun's 2nd-order method ("Elucidating the Design Space...", 2022, Alg. 1, no churn)."""
    sigmas, extra, _ = _prepare(x, sigmas, extra_args, noise)
    n = len(sigmas) - 1
    for i in range(n):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = _denoise(model, x, sigma, i, n, extra)
        d = (x - denoised) / sigma
        _report(callback, i, x, sigma, sigma_next, denoised)
        x_euler = x + d * (sigma_next - sigma)
        if sigma_next == 0:  # the trapezoid would need d at sigma = 0: take the Euler step
            x = x_euler
            continue
        d_next = (x_euler - _denoise(model, x_euler, sigma_next, i, n, extra)) / sigma_next
        x = x + (d + d_next) / 2 * (sigma_next - sigma)
    return x


def ddim_step(model: Model, x: Tensor, denoised: Tensor, sigma: Tensor, sigma_next: Tensor,
               eta: float, z: Tensor | None) -> Tensor:
    """x_next = alpha' D + c_down eps_hat + c_up z, with DDIM's eta noise (VE: k-diffusion's
    ancestral step), written for x = alpha x0 + sigma noise."""
    alpha, alpha_next = model.alpha(sigma), model.alpha(sigma_next)
    eps = (x - alpha * denoised) / sigma
    if sigma_next == 0 or eta == 0 or z is None:
        return alpha_next * denoised + sigma_next * eps
    ratio = (sigma_next * alpha) / (sigma * alpha_next)  # sigma_ve' / sigma_ve, in [0, 1)
    c_up = torch.minimum(sigma_next, eta * sigma_next * (1 - ratio**2).clamp(min=0).sqrt())
    c_down = (sigma_next**2 - c_up**2).sqrt()
    return alpha_next * denoised + c_down * eps + c_up * z


@register_sampler("ddim")
def sample_ddim(
        model: Model, x: Tensor, sigmas: Tensor, *, extra_args: dict | None = None,
        callback: Callback | None = None, noise: NoiseFn | None = None,
                eta: float = 0.0) -> Tensor:
    """DDIM with stochasticity eta ("Denoising Diffusion Implicit Models", 2021, Eq. 12)."""
    sigmas, extra, noise_fn = _prepare(x, sigmas, extra_args, noise)
    n = len(sigmas) - 1
    for i in range(n):
        denoised = _denoise(model, x, sigmas[i], i, n, extra)
        _report(callback, i, x, sigmas[i], sigmas[i + 1], denoised)
        z = noise_fn(x) if eta > 0 and sigmas[i + 1] > 0 else None
        x = ddim_step(model, x, denoised, sigmas[i], sigmas[i + 1], eta, z)
    return x


@register_sampler("euler_ancestral")
def sample_euler_ancestral(
        model: Model, x: Tensor, sigmas: Tensor, *, extra_args: dict | None = None,
        callback: Callback | None = None, noise: NoiseFn | None = None,
                           eta: float = 1.0) -> Tensor:
    """Euler step to sigma_down, then fresh noise to sigma_next (k-diffusion; "Elucidating the
    Design Space...", 2022). In both geometries this equals DDIM's eta step, so it is one."""
    return sample_ddim(model, x, sigmas, extra_args=extra_args, callback=callback, noise=noise,
                       eta=eta)


@register_sampler("lcm")
def sample_lcm(
        model: Model, x: Tensor, sigmas: Tensor, *, extra_args: dict | None = None,
        callback: Callback | None = None, noise: NoiseFn | None = None) -> Tensor:
    """Multistep consistency sampling: jump to x0, re-noise to the next level ("Consistency
    Models", 2023, Alg. 1; "Latent Consistency Models", 2023, Alg. 3)."""
    sigmas, extra, noise_fn = _prepare(x, sigmas, extra_args, noise)
    n = len(sigmas) - 1
    for i in range(n):
        denoised = _denoise(model, x, sigmas[i], i, n, extra)
        _report(callback, i, x, sigmas[i], sigmas[i + 1], denoised)
        x = denoised
        if sigmas[i + 1] > 0:  # fresh noise at the next level: x = alpha' x0 + sigma' z
            x = model.alpha(sigmas[i + 1]) * denoised + sigmas[i + 1] * noise_fn(x)
    return x


def _log_snr(model: Model, sigma: Tensor) -> Tensor:
    """lambda = log(alpha / sigma); -inf where alpha = 0 (flow at t = 1), +inf at sigma = 0."""
    return model.alpha(sigma).log() - sigma.log()


@register_sampler("dpmpp_2m")
def sample_dpmpp_2m(
        model: Model, x: Tensor, sigmas: Tensor, *, extra_args: dict | None = None,
        callback: Callback | None = None, noise: NoiseFn | None = None) -> Tensor:
    """DPM-Solver++(2M) ("DPM-Solver++: Fast Solver for Guided Sampling...", 2022, Alg. 2)."""
    sigmas, extra, _ = _prepare(x, sigmas, extra_args, noise)
    n, old_denoised, h_last = len(sigmas) - 1, None, None
    for i in range(n):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = _denoise(model, x, sigma, i, n, extra)
        _report(callback, i, x, sigma, sigma_next, denoised)
        if sigma_next == 0:  # lambda = inf: the update is alpha(0) * denoised
            x = model.alpha(sigma_next) * denoised
            break
        h = _log_snr(model, sigma_next) - _log_snr(model, sigma)
        d = denoised
        if old_denoised is not None:  # h_last = inf after a flow start: r = inf, 1st order
            r = h_last / h
            d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
        x = (sigma_next / sigma) * x - model.alpha(sigma_next) * torch.expm1(-h) * d
        old_denoised, h_last = denoised, h
    return x


@register_sampler("dpmpp_2m_sde")
def sample_dpmpp_2m_sde(
        model: Model, x: Tensor, sigmas: Tensor, *, extra_args: dict | None = None,
        callback: Callback | None = None, noise: NoiseFn | None = None,
                        eta: float = 1.0) -> Tensor:
    """DPM-Solver++(2M) SDE, midpoint form ("DPM-Solver++: Fast Solver...", 2022; k-diffusion)."""
    sigmas, extra, noise_fn = _prepare(x, sigmas, extra_args, noise)
    n, old_denoised, h_last = len(sigmas) - 1, None, None
    for i in range(n):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = _denoise(model, x, sigma, i, n, extra)
        _report(callback, i, x, sigma, sigma_next, denoised)
        alpha_next = model.alpha(sigma_next)
        if sigma_next == 0:
            x = alpha_next * denoised
            break
        h = _log_snr(model, sigma_next) - _log_snr(model, sigma)
        eta_h = eta * h if eta > 0 else torch.zeros_like(h)  # avoids 0 * inf at a flow start
        decay = -torch.expm1(-h - eta_h)  # 1 - e^{-(1 + eta) h}
        x = (sigma_next / sigma) * torch.exp(-eta_h) * x + alpha_next * decay * denoised
        if old_denoised is not None:
            x = x + alpha_next * 0.5 * decay * (h / h_last) * (denoised - old_denoised)
        if eta > 0:
            x = x + noise_fn(x) * sigma_next * (-torch.expm1(-2 * eta_h)).sqrt()
        old_denoised, h_last = denoised, h
    return x


def _lms_coefficients(order: int, t: np.ndarray, i: int) -> np.ndarray:
    """Integrals over [t_i, t_{i+1}] of the Lagrange basis on t_i, t_{i-1}, ... (order,), by
    Gauss-Legendre quadrature with `order` nodes (exact for the degree order - 1 basis)."""
    nodes, weights = np.polynomial.legendre.leggauss(order)
    half = (t[i + 1] - t[i]) / 2
    tau = t[i] + half * (nodes + 1)  # (order,) quadrature points in [t_i, t_{i+1}]
    past = t[i - np.arange(order)]  # (order,) t_i, t_{i-1}, ...
    coeffs = np.empty(order)
    for j in range(order):
        others = np.delete(past, j)
        basis = np.prod((tau[:, None] - others) / (past[j] - others), axis=1)  # (order,)
        coeffs[j] = half * (weights * basis).sum()
    return coeffs


@register_sampler("lms")
def sample_lms(
        model: Model, x: Tensor, sigmas: Tensor, *, extra_args: dict | None = None,
        callback: Callback | None = None, noise: NoiseFn | None = None,
               order: int = 4) -> Tensor:
    """Linear multistep (Adams-Bashforth in sigma) ("Pseudo Numerical Methods for Diffusion
    Models on Manifolds", 2022; k-diffusion's LMS)."""
    sigmas, extra, _ = _prepare(x, sigmas, extra_args, noise)
    t = sigmas.detach().cpu().double().numpy()
    n, ds = len(sigmas) - 1, []
    for i in range(n):
        denoised = _denoise(model, x, sigmas[i], i, n, extra)
        ds = [(x - denoised) / sigmas[i], *ds][:order]  # newest first
        _report(callback, i, x, sigmas[i], sigmas[i + 1], denoised)
        coeffs = _lms_coefficients(len(ds), t, i)
        x = x + sum(c * d for c, d in zip(coeffs, ds, strict=True))
    return x


def invert_ddim(model: Model, x0: Tensor, sigmas: Tensor, extra_args: dict | None = None, *,
                fixed_point_iters: int = 3, callback: Callback | None = None) -> Tensor:
    """Deterministic DDIM encode x0 -> noise at sigmas[0] ("DDIM", 2021, Sec. 4.3), refining
    each step by fixed-point iteration so that sampling with `sample_ddim` exactly undoes it
    ("On Exact Inversion of DPM-Solvers", 2024). `callback({"i", "x", "sigma"})` sees the
    encoding reach each level sigmas[i], from sigmas[n - 1] up to sigmas[0]."""
    sigmas, extra, _ = _prepare(x0, sigmas, extra_args, None)
    n, x = len(sigmas) - 1, x0
    for i in reversed(range(n)):  # from sigmas[n] (= 0) up to sigmas[0]
        sigma_hi, sigma_lo = sigmas[i], sigmas[i + 1]
        # classic DDIM inversion: the ODE slope at the new level, evaluated at the current x
        d = (x - _denoise(model, x, sigma_hi, i, n, extra)) / sigma_hi
        y = x + d * (sigma_hi - sigma_lo)
        for _ in range(fixed_point_iters):  # solve ddim_step(y) = x for y
            x_back = ddim_step(model, y, _denoise(model, y, sigma_hi, i, n, extra), sigma_hi,
                                sigma_lo, 0.0, None)
            y = y + (x - x_back)
        x = y
        if callback is not None:
            callback({"i": i, "x": x, "sigma": sigma_hi})
    return x
