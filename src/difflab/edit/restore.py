"""Zero-shot restoration with a trained pipeline: y = A x + sigma_y n -> x, any `LinearOperator`.

Both solvers follow the denoiser contract (`core/denoisers.py`): x = alpha(sigma) x0 + sigma
noise and `model(x, sigma, **cond)` returns the x0-prediction, so they run unchanged on flow,
VP and EDM models. Each step predicts x0, moves it toward the measurement, and takes a
deterministic DDIM step x_next = alpha(sigma_next) x0 + sigma_next eps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from difflab.config import ConfigError
from difflab.core.samplers import initial_noise
from difflab.edit.operators import LinearOperator
from difflab.limits import check_float, check_int, get_limits

RESTORE_METHODS = ("ddnm", "dps")


@dataclass(frozen=True)
class RestoreConfig:
    """How to restore: method, steps, guidance, measurement noise and DPS's step size."""

    method: str = "ddnm"
    steps: int = 20
    cfg: float = 1.0
    sigma_y: float = 0.0  # the measurement noise the solver assumes
    step_size: float = 8.0  # DPS's zeta; 8 beat 2 and 16 at 10 steps (docs/editing.md)

    def __post_init__(self) -> None:
        if self.method not in RESTORE_METHODS:
            raise ConfigError(f"unknown restore method {self.method!r}; valid: "
                              + ", ".join(RESTORE_METHODS))
        lim = get_limits()
        check_int("steps", self.steps, 1, lim.max_sample_steps, limit="max_sample_steps")
        check_float("cfg", self.cfg, 0.0, lim.max_guidance, limit="max_guidance")
        check_float("sigma_y", self.sigma_y, 0.0, 1.0)
        check_float("step_size", self.step_size, 0.0, 100.0)


def _ddim(model, x: Tensor, x0: Tensor, denoised: Tensor, sigma: Tensor,
          sigma_next: Tensor, eps_scale: float | Tensor = 1.0) -> Tensor:
    """x_next = alpha(sigma_next) x0 + sigma_next eps, eps read off x and the model's x0."""
    eps = (x - model.alpha(sigma) * denoised) / sigma
    return model.alpha(sigma_next) * x0 + sigma_next * eps_scale * eps


def restore_ddnm(model, x: Tensor, sigmas: Tensor, op: LinearOperator, y: Tensor, *,
                 extra_args: dict, sigma_y: float = 0.0, **_: float) -> Tensor:
    """DDNM: replace the range-space part of x0 by A_pinv y, keep the null-space part
    ("Zero-Shot Image Restoration Using Denoising Diffusion Null-Space Model", 2023, Alg. 1;
    with sigma_y > 0 the correction is scaled as DDNM+, Eq. 17-19)."""
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        with torch.no_grad():
            denoised = model(x, sigma * x.new_ones(len(x)), **extra_args).clamp(-1, 1)
        lam, eps_scale = 1.0, 1.0
        if sigma_y > 0:  # inject no more measurement noise than x_next's noise level holds
            a_next = float(model.alpha(sigma_next))
            lam = min(1.0, float(sigma_next) / max(a_next * sigma_y, 1e-12))
            eps_scale = max(0.0, 1 - (a_next * lam * sigma_y / max(float(sigma_next), 1e-12))
                            ** 2) ** 0.5
        x0 = denoised - lam * op.A_pinv(op.A(denoised) - y)
        x = _ddim(model, x, x0, denoised, sigma, sigma_next, eps_scale)
    return x


def restore_dps(model, x: Tensor, sigmas: Tensor, op: LinearOperator, y: Tensor, *,
                extra_args: dict, step_size: float = 8.0, **_: float) -> Tensor:
    """DPS: a DDIM step, then a step of size zeta against the gradient of ||y - A x0(x)|| in x
    ("Diffusion Posterior Sampling for General Noisy Inverse Problems", 2023, Alg. 1)."""
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            denoised = model(x_in, sigma * x.new_ones(len(x)), **extra_args)
            residual = (y - op.A(denoised)).flatten(1).norm(dim=1)  # (B,)
            grad = torch.autograd.grad(residual.sum(), x_in)[0]
        denoised = denoised.detach()
        x = _ddim(model, x, denoised, denoised, sigma, sigma_next) - step_size * grad
    return x


SOLVERS: dict[str, Callable[..., Tensor]] = {"ddnm": restore_ddnm, "dps": restore_dps}


def restore(pipe, op: LinearOperator, y: Tensor, prompts: Sequence[str], seeds: Sequence[int],
            config: RestoreConfig) -> Tensor:
    """Restored images (B, C, H, W) in about [-1, 1] from measurements y (one per prompt)."""
    if not len(prompts) == len(seeds) == len(y):
        raise ConfigError(f"{len(y)} measurements, {len(prompts)} prompts, {len(seeds)} seeds")
    from difflab.runtime import SampleConfig

    model, cond = pipe.denoiser(prompts, SampleConfig(steps=config.steps, cfg=config.cfg))
    sigmas = pipe.sigmas(SampleConfig(steps=config.steps)).to(pipe.device, torch.float32)
    x = initial_noise(pipe.image_shape, seeds, device=pipe.device) * sigmas[0]
    solver = SOLVERS[config.method]
    out = solver(model, x, sigmas, op, y.to(pipe.device), extra_args=cond,
                 sigma_y=config.sigma_y, step_size=config.step_size)
    return out.detach().float()


def to_tensor(images: np.ndarray) -> Tensor:
    """uint8 images (N, H, W, 3) -> float (N, 3, H, W) in [-1, 1]."""
    return torch.from_numpy(np.array(images, copy=True)).permute(0, 3, 1, 2).float() / 127.5 - 1
