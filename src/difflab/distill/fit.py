"""Distil a loaded teacher into a few-step student: phases, a time budget, checkpoints, resume.

A run is a list of phases (`plan`): progressive distillation has one round per halving,
consistency distillation one phase, Reflow a pair-generation phase, a retraining phase and (for
one step) a one-step phase. The time budget covers the whole run; training phases share what
is left of it equally (each takes its share when it starts; Reflow's pairs are generated in
full first) and stop early at `iterations` when that is set. The
state (phase, iteration, elapsed time, weights, optimiser, pairs) is written atomically to
`<out>.work/` every `ckpt_every` iterations and at each phase end, so a killed run resumed with
the same settings loses at most one checkpoint interval. Every draw (images, noise, levels)
comes from a generator seeded by (seed, phase, iteration).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from difflab.config import ConfigError
from difflab.distill.objectives import (
    consistency_loss,
    dmd_loss,
    euler_step,
    progressive_loss,
    reflow_loss,
)
from difflab.limits import check_float, check_int

METHODS: tuple[str, ...] = ("reflow", "progressive", "lcm", "dmd")
SAMPLER_OF = {"reflow": "euler", "progressive": "euler", "lcm": "lcm", "dmd": "lcm"}


@dataclass(frozen=True)
class DistillConfig:
    """One distillation run: method, target steps, budget and the method's settings."""

    method: str = "lcm"
    steps: int = 4  # the student's sampling steps
    budget_minutes: float = 15.0  # wall-clock budget of the whole run (pair generation too)
    iterations: int = 0  # per training phase; 0 = until the phase's share of the budget
    batch_size: int = 32
    lr: float = 3e-4
    guidance: float = 3.0  # the teacher's CFG scale, folded into the student
    teacher_steps: int = 16  # progressive: the first teacher's Euler steps (halved per round)
    grid: int = 40  # lcm: levels of the teacher's Euler grid
    skip: int = 2  # lcm: skipping step k (one teacher step spans k grid intervals)
    ema: float = 0.95  # lcm: decay of the target network
    pairs: int = 512  # reflow: teacher (noise, image) pairs
    pair_steps: int = 20  # reflow: the teacher's Euler steps per pair
    fake_updates: int = 5  # dmd: fake-score updates per generator update (DMD2's TTUR)
    ckpt_every: int = 50
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"unknown distillation method {self.method!r}; valid: "
                              f"{', '.join(METHODS)}")
        check_int("steps", self.steps, 1, 64)
        check_float("budget_minutes", self.budget_minutes, 0.0, 24 * 60.0)
        check_int("iterations", self.iterations, 0)
        check_int("batch_size", self.batch_size, 1, 1024)
        check_float("lr", self.lr, 0.0, 1.0)
        check_float("guidance", self.guidance, 1.0, 20.0)
        check_float("ema", self.ema, 0.0, 1.0)
        for name in ("teacher_steps", "grid", "skip", "pairs", "pair_steps", "ckpt_every",
                     "fake_updates"):
            check_int(name, getattr(self, name), 1)
        if self.budget_minutes == 0 and self.iterations == 0:
            raise ConfigError("give budget_minutes > 0 or iterations > 0")
        if self.method == "progressive":
            rounds = np.log2(self.teacher_steps / self.steps)
            if rounds < 1 or rounds != int(rounds):
                raise ConfigError(f"progressive distillation halves the steps: teacher_steps "
                                  f"= {self.teacher_steps} must be steps = {self.steps} times "
                                  "a power of 2 (>= 2)")
        if self.method == "lcm" and (self.grid % self.steps or self.skip >= self.grid):
            raise ConfigError(f"lcm: grid = {self.grid} must be a multiple of steps = "
                              f"{self.steps} and larger than skip = {self.skip}")

    def phases(self) -> list[str]:
        """The phases of this run, in order."""
        if self.method == "progressive":
            n, out = self.teacher_steps, []
            while n > self.steps:
                out.append(f"round {n}->{n // 2}")
                n //= 2
            return out
        if self.method == "lcm":
            return ["consistency"]
        if self.method == "dmd":
            return ["dmd"]
        return ["pairs", "reflow"] + (["one-step"] if self.steps == 1 else [])


@dataclass
class Teacher:
    """The teacher as the loop sees it: its pipeline (conditioner, process, net) and dataset."""

    pipe: Any
    dataset: Any
    evaluations: int = 0  # teacher denoiser calls per image, summed over images


@dataclass
class State:
    """What a checkpoint holds besides tensors."""

    phase: int = 0
    iteration: int = 0  # within the phase
    elapsed: float = 0.0  # seconds of this run so far, across resumes
    phase_deadline: float = -1.0  # elapsed seconds at which the phase ends; -1 = not started
    teacher_evaluations: int = 0
    losses: list[list[float]] = field(default_factory=list)  # [phase, iteration, loss] tail
    iterations_done: list[int] = field(default_factory=list)  # per finished phase


def draw(seed: int, phase: int, iteration: int) -> torch.Generator:
    """The generator of one iteration's draws."""
    state = np.random.SeedSequence([seed, phase, iteration]).generate_state(1)[0]
    return torch.Generator().manual_seed(int(state))


def data_batch(teacher: Teacher, n: int, gen: torch.Generator) -> tuple[Tensor, list[str]]:
    """(x0 (n, C, H, W), captions) drawn from the teacher's training set: images in [-1, 1],
    or a latent teacher's scaled latents of them."""
    idx = torch.randint(0, len(teacher.dataset), (n,), generator=gen).tolist()
    items = [teacher.dataset[i] for i in idx]
    images = torch.stack([it["image"] for it in items])
    return teacher.pipe.encode(images).cpu(), [it["caption"] for it in items]


def guided_step(teacher: Teacher, captions: list[str], guidance: float) -> Callable:
    """One Euler step of the teacher with its CFG, as a TeacherStep; counts evaluations."""
    from difflab.runtime import SampleConfig

    model, cond = teacher.pipe.denoiser(captions, SampleConfig(cfg=guidance))

    def step(x: Tensor, t: Tensor, t_next: Tensor) -> Tensor:
        teacher.evaluations += x.shape[0]
        return euler_step(model, cond, x, t, t_next)

    return step


def net_step(pipe: Any, net: nn.Module, cond: dict) -> Callable:
    """One Euler step of a frozen network without guidance (a previous round's student)."""
    model = pipe.process.denoiser(net)

    def step(x: Tensor, t: Tensor, t_next: Tensor) -> Tensor:
        return euler_step(model, cond, x, t, t_next)

    return step


PAIR_SEED = 10**10  # pair noise seeds: far from every suite seed (below 2 * 10**8)


class Run:
    """The networks, optimiser, pairs and state of one distillation run."""

    def __init__(self, config: DistillConfig, teacher: Teacher) -> None:
        self.config, self.teacher = config, teacher
        self.phases = config.phases()
        self.student = copy.deepcopy(teacher.pipe.net).float().train()
        self.target: nn.Module | None = None  # lcm's EMA target network
        self.round_teacher: nn.Module | None = None  # progressive: the previous round's student
        self.fake: nn.Module | None = None  # dmd: fake score, trained on the student's images
        self.pairs: dict[str, Tensor] = {}
        self.captions: list[str] = []
        self.state = State()
        self.optimizer = self.new_optimizer()
        if config.method == "lcm":
            self.target = frozen_copy(self.student)
        if config.method == "dmd":
            self.fake = copy.deepcopy(teacher.pipe.net).float().train()
            self.fake_optimizer = torch.optim.Adam(self.fake.parameters(), lr=config.lr)

    def new_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.student.parameters(), lr=self.config.lr)

    @property
    def phase(self) -> str:
        return self.phases[self.state.phase]

    def denoiser(self, net: nn.Module) -> Any:
        return self.teacher.pipe.process.denoiser(net)

    # -- one iteration of each phase kind (a loss to minimise, or None: no optimiser step)

    def progressive(self, gen: torch.Generator) -> Tensor:
        """Progressive distillation round: the student halves the current teacher's steps."""
        cfg, pipe = self.config, self.teacher.pipe
        n_student = cfg.teacher_steps >> (self.state.phase + 1)
        x0, captions = data_batch(self.teacher, cfg.batch_size, gen)
        noise = torch.randn(x0.shape, generator=gen)
        index = torch.randint(0, n_student, (cfg.batch_size,), generator=gen)
        grid = pipe.process.default_schedule(2 * n_student).float()
        cond = pipe.condition(captions)
        if self.round_teacher is None:  # round 1: the base with its guidance
            step = guided_step(self.teacher, captions, cfg.guidance)
        else:
            step = net_step(pipe, self.round_teacher, cond)  # not counted: not the base
        return progressive_loss(self.denoiser(self.student), step, cond, x0, noise, grid, index)

    def consistency(self, gen: torch.Generator) -> Tensor:
        """Consistency distillation on the teacher's Euler grid with skipping steps."""
        cfg, pipe = self.config, self.teacher.pipe
        x0, captions = data_batch(self.teacher, cfg.batch_size, gen)
        noise = torch.randn(x0.shape, generator=gen)
        index = torch.randint(0, cfg.grid - cfg.skip + 1, (cfg.batch_size,), generator=gen)
        grid = pipe.process.default_schedule(cfg.grid).float()
        cond = pipe.condition(captions)
        step = guided_step(self.teacher, captions, cfg.guidance)
        return consistency_loss(self.denoiser(self.student), self.denoiser(self.target), step,
                                cond, x0, noise, grid, index, cfg.skip)

    def generate(self, noise: Tensor, cond: dict, gen: torch.Generator) -> Tensor:
        """The student's images from `noise` by its own multistep consistency sampling, with
        gradients through the last of a random number of its steps (DMD2's backward
        simulation: each step is trained on inputs the student itself produces)."""
        cfg, process = self.config, self.teacher.pipe.process
        levels = process.default_schedule(cfg.steps).float()
        last = int(torch.randint(0, cfg.steps, (1,), generator=gen))
        model, x = self.denoiser(self.student), noise
        with torch.no_grad():
            for i in range(last):
                x0 = model(x, levels[i].expand(len(x)), **cond)
                t_next = levels[i + 1]
                x = (1 - t_next) * x0 + t_next * torch.randn(x.shape, generator=gen)
        return model(x, levels[last].expand(len(x)), **cond)

    def dmd(self, gen: torch.Generator) -> Tensor:
        """Distribution matching distillation: `fake_updates` denoising steps of the fake score
        on the student's current images, then the generator's distribution-matching loss."""
        from difflab.runtime import SampleConfig

        cfg, pipe = self.config, self.teacher.pipe
        _, captions = data_batch(self.teacher, cfg.batch_size, gen)
        shape = (cfg.batch_size, *pipe.image_shape)
        cond = pipe.condition(captions)
        fake = self.denoiser(self.fake)
        for _ in range(cfg.fake_updates):
            with torch.no_grad():
                images = self.generate(torch.randn(shape, generator=gen), cond, gen)
            t = torch.rand(cfg.batch_size, generator=gen) * (1 - 2e-2) + 1e-2
            loss = reflow_loss(fake, cond, images, torch.randn(shape, generator=gen), t)
            self.fake_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.fake.parameters(), 1.0)
            self.fake_optimizer.step()
        real, real_cond = pipe.denoiser(captions, SampleConfig(cfg=cfg.guidance))
        self.teacher.evaluations += cfg.batch_size
        images = self.generate(torch.randn(shape, generator=gen), cond, gen)
        t = torch.rand(cfg.batch_size, generator=gen) * (0.98 - 0.02) + 0.02
        return dmd_loss(images, real, fake, real_cond, cond,
                        torch.randn(shape, generator=gen), t)

    def generate_pairs(self, gen: torch.Generator) -> None:
        """Reflow's coupling: one batch of teacher ODE samples from known noise seeds."""
        from difflab.runtime import SampleConfig

        cfg = self.config
        start = len(self.captions)
        n = min(cfg.batch_size, cfg.pairs - start)
        _, captions = data_batch(self.teacher, n, gen)
        seeds = [PAIR_SEED + cfg.seed * 10**6 + start + j for j in range(n)]
        sample = SampleConfig(sampler="euler", steps=cfg.pair_steps, cfg=cfg.guidance,
                              precision="fp32", batch_size=max(n, 1))
        x0 = self.teacher.pipe.sample(captions, seeds, sample)
        self.teacher.evaluations += n * cfg.pair_steps
        seeds_t = torch.tensor(seeds, dtype=torch.int64)
        self.pairs = {"x0": torch.cat([self.pairs["x0"], x0]) if self.pairs else x0,
                      "seeds": torch.cat([self.pairs["seeds"], seeds_t]) if self.pairs
                      else seeds_t}
        self.captions += captions

    def reflow(self, gen: torch.Generator, one_step: bool = False) -> Tensor:
        """Rectified-flow retraining on the coupled pairs (t uniform; t = 1 for one step)."""
        from difflab.core.samplers import initial_noise

        cfg, pipe = self.config, self.teacher.pipe
        idx = torch.randint(0, len(self.captions), (cfg.batch_size,), generator=gen)
        x0 = self.pairs["x0"][idx]
        noise = initial_noise(x0.shape[1:], self.pairs["seeds"][idx].tolist())
        t = torch.ones(cfg.batch_size) if one_step else \
            torch.rand(cfg.batch_size, generator=gen) * (1 - 1e-3) + 1e-3
        cond = pipe.condition([self.captions[i] for i in idx.tolist()])
        return reflow_loss(self.denoiser(self.student), cond, x0, noise, t)

    def loss(self, gen: torch.Generator) -> Tensor | None:
        """One iteration of the current phase."""
        kind = self.phase.split(" ")[0]
        if kind == "pairs":
            self.generate_pairs(gen)
            return None
        if kind == "round":
            return self.progressive(gen)
        if kind == "consistency":
            return self.consistency(gen)
        if kind == "dmd":
            return self.dmd(gen)
        return self.reflow(gen, one_step=kind == "one-step")

    def phase_done(self) -> bool:
        """Whether the current phase has reached its iterations, pairs or time share."""
        cfg, st = self.config, self.state
        if self.phase == "pairs":
            return len(self.captions) >= cfg.pairs
        if cfg.iterations and st.iteration >= cfg.iterations:
            return True
        return cfg.budget_minutes > 0 and st.elapsed >= st.phase_deadline

    def start_phase(self) -> None:
        """Fix the phase's time share: what is left of the budget over the phases left."""
        st = self.state
        left = [p for p in self.phases[st.phase:] if p != "pairs"]
        remaining = self.config.budget_minutes * 60 - st.elapsed
        st.phase_deadline = st.elapsed + max(remaining, 0.0) / max(len(left), 1)

    def end_phase(self) -> None:
        """Close the current phase: the next round's teacher, a fresh optimiser."""
        st = self.state
        st.iterations_done.append(st.iteration)
        if self.phase.startswith("round"):
            self.round_teacher = frozen_copy(self.student)
        st.phase, st.iteration, st.phase_deadline = st.phase + 1, 0, -1.0
        self.optimizer = self.new_optimizer()


def frozen_copy(net: nn.Module) -> nn.Module:
    """A copy of `net` in eval mode with gradients off (a teacher or target network)."""
    out = copy.deepcopy(net).eval()
    for p in out.parameters():
        p.requires_grad_(False)
    return out


@torch.no_grad()
def ema_update(target: nn.Module, source: nn.Module, decay: float) -> None:
    """target <- decay * target + (1 - decay) * source, parameter by parameter."""
    for t, s in zip(target.parameters(), source.parameters(), strict=True):
        t.lerp_(s, 1 - decay)


def config_dict(config: DistillConfig) -> dict[str, Any]:
    return asdict(config)
