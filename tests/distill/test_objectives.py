"""The distillation objectives on a Gaussian whose teacher (denoiser and ODE map) is exact.

For one Gaussian N(mu, s^2 I) in the flow geometry the probability-flow ODE map is affine in x
(`gaussian_ode_solution`), and so is every Euler map of the exact denoiser. A student that is
affine in x at each level (TabularStudent) can therefore represent each objective's fixed point
exactly, every loss is a convex quadratic in its parameters, and a converged student differs from
its fixed point only by the optimiser's residual. Tolerances below are that residual (OPT_TOL,
1% of the data's std) plus, where the teacher takes Euler steps, the teacher solver's own
discretisation error, which the tests measure instead of assuming.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from difflab.core.analytic import ExactFlowDenoiser, GaussianMixture, gaussian_ode_solution
from difflab.core.denoisers import Denoiser, append_dims
from difflab.core.samplers import sample_euler, sample_lcm
from difflab.core.schedules import get_sigmas_flow
from difflab.distill.objectives import (
    consistency_loss,
    consistency_target,
    dmd_loss,
    euler_step,
    noisy,
    progressive_loss,
    progressive_target,
    reflow_loss,
)

DIM = 2
DATA = GaussianMixture(torch.tensor([[0.5, -0.3]]), torch.tensor([0.4]))
TEACHER = ExactFlowDenoiser(DATA)
OPT_TOL = 0.01 * 0.4  # optimiser residual allowed: 1% of the data's std


def ode_map(x: Tensor, t: Tensor, t_to: Tensor) -> Tensor:
    """The exact probability-flow ODE map of the Gaussian from level t to level t_to."""
    return gaussian_ode_solution(DATA, x, 1 - t, t, 1 - t_to, t_to)


def exact_step(x: Tensor, t: Tensor, t_next: Tensor) -> Tensor:
    return ode_map(x, t, t_next)


def euler_teacher(x: Tensor, t: Tensor, t_next: Tensor) -> Tensor:
    return euler_step(TEACHER, {}, x, t, t_next)


class OdeStudent(Denoiser):
    """The ideal consistency student: D(x, t) = the ODE map from t to 0, optionally shifted."""

    def __init__(self, shift: float = 0.0) -> None:
        super().__init__()
        self.shift = shift

    def forward(self, x: Tensor, sigma: Tensor, **cond: Tensor) -> Tensor:
        return ode_map(x, sigma, torch.zeros_like(sigma)) + self.shift * sigma[:, None]

    def alpha(self, sigma: Tensor) -> Tensor:
        return 1 - sigma


class TabularStudent(Denoiser):
    """D(x, t) = a_k * x + b_k at grid level k (the level nearest t); identity at t = 0."""

    def __init__(self, grid: Tensor) -> None:
        super().__init__()
        self.grid = grid.double()
        self.a = torch.nn.Parameter(torch.ones(len(grid), DIM, dtype=torch.float64))
        self.b = torch.nn.Parameter(torch.zeros(len(grid), DIM, dtype=torch.float64))
        self.calls = 0

    def forward(self, x: Tensor, sigma: Tensor, **cond: Tensor) -> Tensor:
        self.calls += 1
        k = (sigma.double()[:, None] - self.grid[None]).abs().argmin(1)
        out = self.a[k] * x + self.b[k]
        return torch.where(append_dims(sigma == 0, x.ndim), x, out)

    def alpha(self, sigma: Tensor) -> Tensor:
        return 1 - sigma


def fit(loss_fn, params, iterations: int = 600, lr: float = 0.05) -> float:
    """Adam on a loss of fresh draws (each call gets the iteration's generator)."""
    opt = torch.optim.Adam(params, lr=lr)
    for i in range(iterations):
        loss = loss_fn(torch.Generator().manual_seed(i))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return loss.item()


def noise_batch(n: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    return DATA.sample(n, gen), torch.randn(n, DIM, generator=gen, dtype=torch.float64)


def euler_map(model, x: Tensor, steps: int) -> Tensor:
    return sample_euler(model, x, get_sigmas_flow(steps))


def probe(n: int = 512) -> Tensor:
    return torch.randn(n, DIM, generator=torch.Generator().manual_seed(123), dtype=torch.float64)


# ----------------------------------------------------------------- fixed points (exact teacher)


def test_the_ode_map_is_the_consistency_fixed_point():
    x0, noise = noise_batch(256, torch.Generator().manual_seed(0))
    grid = get_sigmas_flow(8)
    index = torch.arange(256) % 7
    exact, off = OdeStudent(), OdeStudent(shift=0.05)
    assert consistency_loss(exact, exact, exact_step, {}, x0, noise, grid, index, 1) < 1e-20
    assert consistency_loss(off, off, exact_step, {}, x0, noise, grid, index, 1) > 1e-6
    # at the last interval the target is the teacher's own step to t = 0 (the boundary)
    x = noisy(x0, noise, grid[index])
    low = torch.zeros(256, dtype=torch.float64)
    want = consistency_target(exact_step, off, {}, x, grid[index], low)
    torch.testing.assert_close(want, ode_map(x, grid[index], low))


def test_the_ode_map_is_the_progressive_fixed_point():
    # one student step from 1 to 0 that lands where two exact teacher steps land: the ODE map
    x0, noise = noise_batch(256, torch.Generator().manual_seed(1))
    grid = get_sigmas_flow(2)
    index = torch.zeros(256, dtype=torch.long)
    exact, off = OdeStudent(), OdeStudent(shift=0.05)
    assert progressive_loss(exact, exact_step, {}, x0, noise, grid, index) < 1e-20
    assert progressive_loss(off, exact_step, {}, x0, noise, grid, index) > 1e-6
    z = probe()
    ones = torch.ones(len(z), dtype=torch.float64)
    v = progressive_target(exact_step, z, ones, ones / 2, 0 * ones)
    torch.testing.assert_close(z - v, ode_map(z, ones, 0 * ones))


def test_the_ode_map_is_the_reflow_fixed_point():
    # pairs coupled by the exact ODE map are straight: z is a function of x_t, and the velocity
    # z - x0 that reflow regresses on makes one Euler step from t = 1 the ODE map itself
    mu, s = DATA.means[0], DATA.stds[0]

    class Straight(Denoiser):
        def forward(self, x, sigma, **cond):
            t = sigma[:, None]
            z = (x - (1 - t) * mu) / ((1 - t) * s + t)
            return x - t * ((1 - s) * z - mu)  # D = x - t v, v = z - x0 = (1 - s) z - mu

    gen = torch.Generator().manual_seed(2)
    z = torch.randn(256, DIM, generator=gen, dtype=torch.float64)
    one = torch.ones(256, dtype=torch.float64)
    x0 = ode_map(z, one, 0 * one)
    t = torch.rand(256, generator=gen, dtype=torch.float64) * 0.99 + 0.01
    assert reflow_loss(Straight(), {}, x0, z, t) < 1e-20
    assert reflow_loss(OdeStudent(), {}, x0, z, t) > 1e-6  # not straight: the ODE map at t
    torch.testing.assert_close(euler_map(Straight(), z, 1), x0)


# ------------------------------------------------- one-step students trained to convergence


def test_a_consistency_student_converges_to_the_teachers_ode_map():
    # Euler teacher steps of k = 2 grid intervals: the fixed point is the teacher's Euler map
    # with grid / k steps, so the 1-step student must match that within OPT_TOL, and the ODE
    # map within OPT_TOL plus that Euler map's (measured) discretisation error
    levels, skip = 8, 2
    grid = get_sigmas_flow(levels)
    student = TabularStudent(grid)

    def loss(gen):
        x0, noise = noise_batch(128, gen)
        index = torch.randint(0, levels - skip + 1, (128,), generator=gen)
        return consistency_loss(student, student, euler_teacher, {}, x0, noise, grid, index,
                                skip)

    fit(loss, student.parameters(), iterations=400)
    z = probe()
    one = torch.ones(len(z), dtype=torch.float64)
    with torch.no_grad():
        one_step = sample_lcm(student, z, get_sigmas_flow(1))
        teacher = euler_map(TEACHER, z, levels // skip)
    exact = ode_map(z, one, 0 * one)
    euler_error = (teacher - exact).abs().max().item()
    assert (one_step - teacher).abs().max() < OPT_TOL
    assert (one_step - exact).abs().max() < euler_error + OPT_TOL
    assert euler_error > OPT_TOL  # the teacher's solver error is real, so the bound is not empty


def test_progressive_rounds_halve_nfe_and_converge_to_the_teachers_map():
    # rounds 8 -> 4 -> 2 -> 1: each student samples with half its teacher's evaluations and
    # lands where its teacher lands; the 1-step student ends at the base's 8-step Euler map
    z = probe()
    teacher_model, teacher_steps = TEACHER, 8
    base_map = euler_map(TEACHER, z, 8)
    nfe = []
    while teacher_steps > 1:
        n = teacher_steps // 2
        student = TabularStudent(get_sigmas_flow(n))
        grid = get_sigmas_flow(2 * n)
        model = teacher_model

        def step(x, t, t_next, model=model):
            return euler_step(model, {}, x, t, t_next)

        def loss(gen, student=student, n=n, grid=grid, step=step):
            x0, noise = noise_batch(256, gen)
            index = torch.randint(0, n, (256,), generator=gen)
            return progressive_loss(student, step, {}, x0, noise, grid, index)

        fit(loss, student.parameters(), iterations=400)
        with torch.no_grad():
            student.calls = 0
            out = euler_map(student, z, n)
            nfe.append(student.calls)
            assert (out - euler_map(teacher_model, z, teacher_steps)).abs().max() < OPT_TOL
        for p in student.parameters():
            p.requires_grad_(False)
        teacher_model, teacher_steps = student, n
    assert nfe == [4, 2, 1]
    with torch.no_grad():
        assert (euler_map(teacher_model, z, 1) - base_map).abs().max() < 3 * OPT_TOL


def test_a_reflow_one_step_student_converges_to_the_teachers_ode_map():
    # pairs from the teacher's 32-step Euler sampler; the one-step phase (t = 1) regresses the
    # student's velocity on z - x0, so its 1-step map converges to the pair map
    z_train = torch.randn(2048, DIM, generator=torch.Generator().manual_seed(5),
                          dtype=torch.float64)
    x0_train = euler_map(TEACHER, z_train, 32)
    student = TabularStudent(get_sigmas_flow(1))

    def loss(gen):
        idx = torch.randint(0, len(z_train), (256,), generator=gen)
        return reflow_loss(student, {}, x0_train[idx], z_train[idx],
                           torch.ones(256, dtype=torch.float64))

    fit(loss, student.parameters(), iterations=600)
    z = probe()
    one = torch.ones(len(z), dtype=torch.float64)
    with torch.no_grad():
        one_step = euler_map(student, z, 1)
    teacher, exact = euler_map(TEACHER, z, 32), ode_map(z, one, 0 * one)
    assert (one_step - teacher).abs().max() < OPT_TOL
    assert (one_step - exact).abs().max() < (teacher - exact).abs().max() + OPT_TOL


@pytest.mark.parametrize("steps", [1, 2, 4])
def test_multistep_consistency_sampling_with_the_ode_student_is_exact(steps):
    # with the ideal student every re-noised restart lands on a sample of the data: the mean
    # and std of many samples match the Gaussian whatever the step count
    z = torch.randn(20000, DIM, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    gen = torch.Generator().manual_seed(10)
    out = sample_lcm(OdeStudent(), z, get_sigmas_flow(steps),
                     noise=lambda x: torch.randn(x.shape, generator=gen, dtype=x.dtype))
    torch.testing.assert_close(out.mean(0), DATA.means[0], atol=0.02, rtol=0)
    torch.testing.assert_close(out.std(0), DATA.stds.expand(DIM), atol=0.02, rtol=0)


def test_distribution_matching_gradient_is_the_normalised_denoiser_difference():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(8, DIM, generator=gen, dtype=torch.float64).requires_grad_()
    noise, t = torch.randn(8, DIM, generator=gen, dtype=torch.float64), torch.full((8,), 0.5)
    fake = ExactFlowDenoiser(GaussianMixture(torch.tensor([[1.0, 1.0]]), torch.tensor([0.7])))
    dmd_loss(x, TEACHER, fake, {}, {}, noise, t).backward()
    xt = noisy(x.detach(), noise, t)
    d_real, d_fake = TEACHER(xt, t), fake(xt, t)
    weight = 1 / (x.detach() - d_real).abs().mean(1, keepdim=True)
    torch.testing.assert_close(x.grad, (d_fake - d_real) * weight / 8)
    x.grad = None
    dmd_loss(x, TEACHER, TEACHER, {}, {}, noise, t).backward()  # fake = real: a fixed point
    assert x.grad.abs().max() == 0


def test_distribution_matching_moves_a_generator_onto_the_data():
    """A one-step generator x = a z + b against the exact fake score of its own output
    distribution N(b, a^2) converges to the data's N(mu, s^2): DMD's fixed point."""
    a = torch.nn.Parameter(torch.tensor(1.0, dtype=torch.float64))
    b = torch.nn.Parameter(torch.zeros(DIM, dtype=torch.float64))

    def loss_fn(gen: torch.Generator) -> Tensor:
        z, noise = (torch.randn(256, DIM, generator=gen, dtype=torch.float64) for _ in "zn")
        t = torch.rand(256, generator=gen, dtype=torch.float64) * 0.96 + 0.02
        fake = ExactFlowDenoiser(GaussianMixture(b.detach()[None], a.detach().abs()[None]))
        return dmd_loss(a * z + b, TEACHER, fake, {}, {}, noise, t)

    fit(loss_fn, [a, b], iterations=400, lr=0.02)
    assert (b - DATA.means[0]).abs().max() < 0.02
    assert abs(a.abs().item() - DATA.stds[0].item()) < 0.02
