"""Inverse problems with a diffusion prior: recover x from y = A x + n for a linear operator A
(`difflab.edit.operators`), and the classical reconstructions they are compared with.

Diffusion restorers are pure functions like the samplers,
`restore_<name>(model, y, op, sigmas, *, extra_args, noise, sigma_y, **hp) -> x`, registered in
`RESTORERS`; `model` is any denoiser (`model(x, sigma, **extra_args)` returns the denoised
estimate, `model.alpha(sigma)` the signal scale), so they run on every process. Classical
baselines are registered in `BASELINES` as `baseline_<name>(op, y, sigma_y) -> x`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import Tensor

from difflab.config import ConfigError
from difflab.core.context import StepContext, step_context
from difflab.core.samplers import ddim_step
from difflab.edit.operators import Blur, CompressedSensing, Downsample, Inpaint, LinearOperator
from difflab.registry import Registry

RESTORERS: Registry = Registry("restoration method")
BASELINES: Registry = Registry("classical baseline")
NoiseFn = Callable[[Tensor], Tensor]


def _denoised(model, x: Tensor, sigma: Tensor, i: int, n: int, extra: dict) -> Tensor:
    with step_context(StepContext(i, n, float(sigma), "cond")):
        return model(x, sigma * x.new_ones(x.shape[0]), **extra)


@RESTORERS.register("ddnm")
def restore_ddnm(model, y: Tensor, op: LinearOperator, sigmas: Tensor, *,
                 extra_args: dict | None = None, noise: NoiseFn | None = None,
                 sigma_y: float = 0.0, eta: float = 0.85) -> Tensor:
    """DDNM: at every step replace the range-space part of the denoised estimate by A⁺ y,
    D <- A⁺ y + (I - A⁺ A) D, then step to the next level with the network's own noise
    estimate and fresh noise mixed by `eta`, x' = alpha' D + sigma' (sqrt(1 - eta^2) eps +
    eta z), as the paper's code does; with measurement noise (DDNM+) each direction's
    correction is scaled so that the noise it carries fits in the fresh noise's share
    ("Zero-Shot Image Restoration Using Denoising Diffusion Null-Space Model", 2023). The
    fresh noise is not reduced by the correction's (a simplification of Eq. 19)."""
    extra, noise = extra_args or {}, noise or torch.randn_like
    sigmas = sigmas.to(y.device, y.dtype)
    n = len(sigmas) - 1
    x = sigmas[0] * noise(y.new_zeros(y.shape[0], *op.shape))
    for i in range(n):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = _denoised(model, x, sigma, i, n, extra)
        eps = (x - model.alpha(sigma) * denoised) / sigma  # the network's noise estimate
        alpha_next = model.alpha(sigma_next)
        c_up = sigma_next * eta
        # DDNM+: the correction may carry as much noise (alpha' A⁺ n) as the fresh noise adds
        budget = float(c_up / (alpha_next * sigma_y)) if sigma_y > 0 else None
        denoised = op.project(denoised, y, budget)
        x = alpha_next * denoised + sigma_next * (1 - eta**2) ** 0.5 * eps
        if sigma_next > 0 and eta > 0:
            x = x + c_up * noise(x)
    return x


@RESTORERS.register("dps")
def restore_dps(model, y: Tensor, op: LinearOperator, sigmas: Tensor, *,
                extra_args: dict | None = None, noise: NoiseFn | None = None,
                sigma_y: float = 0.0, zeta: float = 3.0, eta: float = 1.0) -> Tensor:
    """Diffusion Posterior Sampling: after each DDIM step with `eta`, step the sample against
    the gradient of the measurement residual of its denoised estimate,
    x <- x - zeta grad_x ||y - A D(x)|| ("Diffusion Posterior Sampling for General Noisy
    Inverse Problems", 2023, Alg. 1 with step zeta / ||y - A D||). zeta = 3 restored best on
    the dev split at 50 steps (1.5 and 10 did worse; `benchmarks/results/edit/dev-restore.json`)."""
    extra, noise = extra_args or {}, noise or torch.randn_like
    sigmas = sigmas.to(y.device, y.dtype)
    n = len(sigmas) - 1
    x = sigmas[0] * noise(y.new_zeros(y.shape[0], *op.shape))
    for i in range(n):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            denoised = _denoised(model, x_in, sigma, i, n, extra)
            residual = (y - op.A(denoised)).flatten(1).norm(dim=1)  # (B,)
            grad = torch.autograd.grad(residual.sum(), x_in)[0]
        z = noise(x) if sigma_next > 0 and eta > 0 else None
        x = ddim_step(model, x, denoised.detach(), sigma, sigma_next, eta, z)
        if sigma_next > 0:
            x = x - zeta * grad
    return x


@RESTORERS.register("repaint")
def restore_repaint(model, y: Tensor, op: LinearOperator, sigmas: Tensor, *,
                    extra_args: dict | None = None, noise: NoiseFn | None = None,
                    sigma_y: float = 0.0, resample: int = 4, eta: float = 1.0) -> Tensor:
    """RePaint: after each step the known pixels are replaced by the observation noised to the
    new level, and each step is redone `resample` times, jumping back by re-noising in between
    so that the generated region harmonises with the known one ("RePaint: Inpainting using
    Denoising Diffusion Probabilistic Models", 2022). resample = 1 is plain replacement
    ("Score-Based Generative Modeling through SDEs", 2021, imputation)."""
    if not isinstance(op, Inpaint):
        raise ConfigError(f"repaint inpaints; it cannot solve {op.name} (use ddnm or dps)")
    if resample < 1:
        raise ConfigError(f"repaint resample must be >= 1, got {resample}")
    extra, noise = extra_args or {}, noise or torch.randn_like
    sigmas = sigmas.to(y.device, y.dtype)
    known = op.mask.to(y)  # (H, W)
    n = len(sigmas) - 1
    x = sigmas[0] * noise(y.new_zeros(y.shape[0], *op.shape))
    for i in range(n):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        for u in range(resample):
            denoised = _denoised(model, x, sigma, i, n, extra)
            z = noise(x) if sigma_next > 0 and eta > 0 else None
            x_unknown = ddim_step(model, x, denoised, sigma, sigma_next, eta, z)
            x_known = model.alpha(sigma_next) * y + sigma_next * noise(x)
            x_next = known * x_known + (1 - known) * x_unknown
            if u == resample - 1 or sigma_next == 0:
                break
            # jump back: x_sigma = (alpha / alpha') x_next + sqrt(sigma^2 - (alpha sigma' /
            # alpha')^2) z, the forward process from sigma_next to sigma
            a, a_next = model.alpha(sigma), model.alpha(sigma_next)
            var = (sigma**2 - (a * sigma_next / a_next) ** 2).clamp(min=0)
            x = (a / a_next) * x_next + var.sqrt() * noise(x)
        x = x_next
    return x


# ----------------------------------------------------------------------------- baselines


@BASELINES.register("nearest")
def baseline_nearest(op: LinearOperator, y: Tensor, sigma_y: float = 0.0) -> Tensor:
    """Inpainting by the nearest known pixel (Euclidean distance transform)."""
    if not isinstance(op, Inpaint):
        raise ConfigError(f"nearest fills missing pixels; it cannot solve {op.name}")
    missing = (~op.mask).cpu().numpy()
    _, (iy, ix) = ndimage.distance_transform_edt(missing, return_indices=True)
    return y[..., torch.from_numpy(iy), torch.from_numpy(ix)]


@BASELINES.register("bicubic")
def baseline_bicubic(op: LinearOperator, y: Tensor, sigma_y: float = 0.0) -> Tensor:
    """Super-resolution by bicubic interpolation of the low-resolution image."""
    if not isinstance(op, Downsample):
        raise ConfigError(f"bicubic upsamples; it cannot solve {op.name}")
    return F.interpolate(y, scale_factor=op.factor, mode="bicubic",
                         align_corners=False).clamp(-1, 1)


@BASELINES.register("wiener")
def baseline_wiener(op: LinearOperator, y: Tensor, sigma_y: float = 0.0,
                    reg: float | None = None) -> Tensor:
    """Wiener (Tikhonov) deconvolution K / (K^2 + reg) (Wiener, 1949); reg defaults to what
    the dev split chose: 1e-5 without measurement noise, 0.01 with sigma_y = 0.05."""
    if not isinstance(op, Blur):
        raise ConfigError(f"wiener deconvolves; it cannot solve {op.name}")
    reg = (1e-5 if sigma_y == 0 else 0.01) if reg is None else reg
    return op.wiener(y, reg).clamp(-1, 1)


@BASELINES.register("zero-fill")
def baseline_zero_fill(op: LinearOperator, y: Tensor, sigma_y: float = 0.0) -> Tensor:
    """The minimum-norm solution A⁺ y (zero in A's null space)."""
    return op.pinv(y).clamp(-1, 1)


def total_variation(x: Tensor, eps: float = 1e-3) -> Tensor:
    """Isotropic total variation per image (B,), smoothed by eps ("Nonlinear total variation
    based noise removal algorithms", Rudin, Osher and Fatemi, 1992)."""
    dx = x[..., :, 1:] - x[..., :, :-1]
    dy = x[..., 1:, :] - x[..., :-1, :]
    return (dx[..., :-1, :] ** 2 + dy[..., :, :-1] ** 2 + eps**2).sqrt().flatten(1).sum(1)


@BASELINES.register("tv")
def baseline_tv(op: LinearOperator, y: Tensor, sigma_y: float = 0.0,
                weight: float | None = None, iters: int = 300, lr: float = 0.05) -> Tensor:
    """TV-regularised least squares, min ||A x - y||^2 / 2 + weight TV(x), by Adam from A⁺ y
    (compressed-sensing recovery, "Robust uncertainty principles...", Candès, Romberg and Tao,
    2006); weight defaults to what the dev split chose: 0.001 without measurement noise, 0.01
    with sigma_y = 0.05."""
    if not isinstance(op, CompressedSensing):
        raise ConfigError(f"the tv baseline is for compressed sensing, not {op.name}")
    weight = (0.001 if sigma_y == 0 else 0.01) if weight is None else weight
    x = op.pinv(y).detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=lr)
    for _ in range(iters):
        with torch.enable_grad():
            loss = (0.5 * (op.A(x) - y).pow(2).flatten(1).sum(1)
                    + weight * total_variation(x)).sum()
            grad = torch.autograd.grad(loss, x)[0]
        x.grad = grad
        opt.step()
    return x.detach().clamp(-1, 1)


def restore(method: str, model, y: Tensor, op: LinearOperator, sigmas: Tensor, *,
            extra_args: dict | None = None, noise: NoiseFn | None = None,
            sigma_y: float = 0.0, **options: float) -> Tensor:
    """Run the restorer registered as `method` (a diffusion method or a classical baseline)."""
    from difflab.edit.inversion import check_options

    op.check_measurement(y)
    if method in BASELINES:
        fn = BASELINES.get(method)
        _check_keywords(f"baseline {method!r}", fn, options)
        return fn(op, y, sigma_y, **options)
    fn = RESTORERS.get(method)
    check_options(f"restorer {method!r}", fn, {**options, "sigma_y": sigma_y})
    return fn(model, y, op, sigmas, extra_args=extra_args, noise=noise, sigma_y=sigma_y,
              **options)


def _check_keywords(what: str, fn: Callable, options: dict) -> None:
    import inspect

    valid = list(inspect.signature(fn).parameters)[3:]
    bad = sorted(set(options) - set(valid))
    if bad:
        raise ConfigError(f"{what} has no option {', '.join(map(repr, bad))}; valid: "
                          f"{', '.join(valid) or '(none)'}")


def method_names() -> list[str]:
    """Every restoration method: diffusion restorers, then classical baselines."""
    return [*RESTORERS.names(), *BASELINES.names()]
