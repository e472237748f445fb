"""The distillation objectives as small functions of a teacher step and a student denoiser.

Everything is written in the flow geometry x_t = (1 - t) x0 + t noise (sigma = t) of the
rectified-flow base, with the denoiser contract D(x, t) of `core/denoisers.py`; the student's
velocity is v = (x - D) / t (the network's own output under `FlowDenoiser`). A teacher step
`teacher_step(x, t, t_next)` maps x from level t to level t_next: in training it is one Euler
step of the (guided) teacher, in the analytic tests it may be the exact ODE map, and then each
objective's fixed point is exactly the teacher's ODE map.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from difflab.core.denoisers import append_dims

TeacherStep = Callable[[Tensor, Tensor, Tensor], Tensor]  # (x, t (B,), t_next (B,)) -> x_next
Model = Callable[..., Tensor]  # a denoiser: model(x, t (B,), **cond) -> denoised


def euler_step(model: Model, cond: dict, x: Tensor, t: Tensor, t_next: Tensor) -> Tensor:
    """One Euler step of the probability-flow ODE from t to t_next ("Elucidating the Design
    Space...", 2022, Alg. 2), per sample: x + (t_next - t) (x - D) / t."""
    denoised = model(x, t, **cond)
    return x + append_dims((t_next - t) / t, x.ndim) * (x - denoised)


def velocity(model: Model, cond: dict, x: Tensor, t: Tensor) -> Tensor:
    """The flow velocity v = (x - D(x, t)) / t of a denoiser (t > 0)."""
    return (x - model(x, t, **cond)) / append_dims(t, x.ndim)


def noisy(x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
    """x_t = (1 - t) x0 + t noise, per sample."""
    t = append_dims(t, x0.ndim)
    return (1 - t) * x0 + t * noise


def progressive_target(teacher_step: TeacherStep, x: Tensor, t: Tensor, t_mid: Tensor,
                       t_next: Tensor) -> Tensor:
    """The velocity that takes one student Euler step from t to where two teacher steps
    (t -> t_mid -> t_next) land ("Progressive Distillation for Fast Sampling...", 2022, Alg. 2,
    in flow-velocity form)."""
    x_next = teacher_step(teacher_step(x, t, t_mid), t_mid, t_next)
    return (x_next - x) / append_dims(t_next - t, x.ndim)


@torch.no_grad()
def consistency_target(teacher_step: TeacherStep, target: Model, cond: dict, x: Tensor,
                       t: Tensor, t_low: Tensor) -> Tensor:
    """The consistency target f_target(teacher_step(x, t -> t_low), t_low), with the boundary
    f(x, 0) = x ("Latent Consistency Models", 2023, Eq. 9: skipping-step ODE solver)."""
    x_low = teacher_step(x, t, t_low)
    at_zero = append_dims(t_low == 0, x.ndim)
    safe = torch.where(t_low > 0, t_low, torch.ones_like(t_low))  # f is not called at t = 0
    return torch.where(at_zero, x_low, target(x_low, safe, **cond))


def reflow_target(x0: Tensor, noise: Tensor) -> Tensor:
    """The straight-path velocity noise - x0 of a coupled (noise, x0) pair ("Flow Straight and
    Fast: ... Rectified Flow", 2023, Eq. 1)."""
    return noise - x0


def progressive_loss(student: Model, teacher_step: TeacherStep, cond: dict, x0: Tensor,
                     noise: Tensor, grid: Tensor, index: Tensor) -> Tensor:
    """Mean squared velocity error of one student step over two teacher steps on `grid`
    (descending, 2 N + 1 levels); `index` (B,) picks student step i: t = grid[2 i]."""
    t, t_mid, t_next = grid[2 * index], grid[2 * index + 1], grid[2 * index + 2]
    x = noisy(x0, noise, t)
    with torch.no_grad():
        v_target = progressive_target(teacher_step, x, t, t_mid, t_next)
    return (velocity(student, cond, x, t) - v_target).pow(2).mean()


def consistency_loss(student: Model, target: Model, teacher_step: TeacherStep, cond: dict,
                     x0: Tensor, noise: Tensor, grid: Tensor, index: Tensor,
                     skip: int) -> Tensor:
    """Mean squared x0 error between the student at grid[index] and the target network at
    grid[index + skip], reached by one teacher step (LCM, 2023, Alg. 1 with an L2 distance)."""
    t, t_low = grid[index], grid[index + skip]
    x = noisy(x0, noise, t)
    want = consistency_target(teacher_step, target, cond, x, t, t_low)
    return (student(x, t, **cond) - want).pow(2).mean()


def reflow_loss(student: Model, cond: dict, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
    """Rectified-flow regression on coupled pairs: |v(x_t, t) - (noise - x0)|^2 (Rectified
    Flow, 2023, Eq. 1; InstaFlow, 2023, with t = 1 only for the one-step distillation)."""
    x = noisy(x0, noise, t)
    return (velocity(student, cond, x, t) - reflow_target(x0, noise)).pow(2).mean()


def dmd_loss(generated: Tensor, real: Model, fake: Model, real_cond: dict, fake_cond: dict,
             noise: Tensor, t: Tensor) -> Tensor:
    """Distribution matching: a loss whose gradient in `generated` is the difference of the fake
    and real denoisers at x_t, normalised per sample by |generated - D_real| ("One-step
    Diffusion with Distribution Matching Distillation", 2024, Eq. 7-8; DMD2, 2024). Moving
    `generated` against it moves x_t from where the fake (student) distribution puts mass toward
    where the real (teacher) one does."""
    with torch.no_grad():
        x = noisy(generated, noise, t)
        d_real, d_fake = real(x, t, **real_cond), fake(x, t, **fake_cond)
        dims = tuple(range(1, generated.ndim))
        weight = 1.0 / (generated - d_real).abs().mean(dim=dims, keepdim=True).clamp_min(1e-4)
        grad = (d_fake - d_real) * weight
    return 0.5 * (generated - (generated - grad).detach()).pow(2).sum() / generated.shape[0]
