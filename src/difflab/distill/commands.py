"""`difflab distill`: turn a teacher into a few-step student folder, resumably, on a budget."""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
import typer

from difflab.config import ConfigError
from difflab.distill.checkpoint import load_state, save_state, stored_config, work_folder
from difflab.distill.fit import (
    METHODS,
    SAMPLER_OF,
    DistillConfig,
    Run,
    Teacher,
    draw,
    ema_update,
)


def check_out(out: str | Path, resume: bool) -> Path:
    """Refuse, before loading anything, an --out that exists, or a leftover work folder when
    not resuming."""
    out, work = Path(out), work_folder(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"--out {out} exists and is not an empty folder; choose a new one")
    if work.exists() and not resume:
        raise ConfigError(f"{work} holds an unfinished run for --out {out}; pass --resume to "
                          "continue it, or remove that folder to start again")
    return work


def train_phases(run: Run, work: Path, progress: bool = True) -> None:
    """Run the phases from the run's state to the end, checkpointing into `work`."""
    from tqdm import tqdm

    cfg, st = run.config, run.state
    started, base_elapsed = time.monotonic(), st.elapsed
    while st.phase < len(run.phases):
        if st.phase_deadline < 0:
            run.start_phase()
        total = (cfg.pairs + cfg.batch_size - 1) // cfg.batch_size if run.phase == "pairs" \
            else (cfg.iterations or None)
        bar = tqdm(total=total, initial=st.iteration, desc=run.phase, unit="it",
                   dynamic_ncols=True, disable=not progress, file=sys.stderr)
        while not run.phase_done():
            loss = run.loss(draw(cfg.seed, st.phase, st.iteration))
            if loss is not None:
                run.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(run.student.parameters(), 1.0)  # as the trainer
                run.optimizer.step()
                if run.target is not None:
                    ema_update(run.target, run.student, cfg.ema)
                st.losses = [*st.losses[-199:], [st.phase, st.iteration, loss.item()]]
                bar.set_postfix(loss=f"{loss.item():.4f}",
                                left=f"{max(st.phase_deadline - st.elapsed, 0):.0f}s")
            st.iteration += 1
            st.elapsed = base_elapsed + time.monotonic() - started
            st.teacher_evaluations = run.teacher.evaluations
            bar.update(1)
            if st.iteration % cfg.ckpt_every == 0 or run.phase == "pairs":  # pairs: slow
                save_state(work, run)
        bar.close()
        run.end_phase()
        save_state(work, run)


def distill(teacher_source: str, config: DistillConfig, out: str | Path, *, resume: bool = False,
            progress: bool = True, provenance: dict[str, Any] | None = None) -> Any:
    """Distil `teacher_source` (a checkpoint, run or shipped name) into the student folder
    `out`; returns its manifest. State is kept in `<out>.work/` until the student is written."""
    from difflab.data.sets import DATASETS
    from difflab.distill.student import save_student
    from difflab.runtime import load
    from difflab.runtime.latent import carried_autoencoder
    from difflab.tune.adapters import base_reference

    work = check_out(out, resume)
    if resume and (work / "state.safetensors").is_file():
        before = stored_config(work)
        if replace(before, budget_minutes=config.budget_minutes) != config:
            raise ConfigError(f"{work} was started with other settings ({asdict(before)}); "
                              "resume with the same ones (only --budget-minutes may change)")
    base = base_reference(teacher_source)
    pipe = load(teacher_source)
    data = pipe.config.get("data", {})
    dataset = DATASETS.get(data.get("name", ""))(dict(data.get("options", {})))
    run = Run(config, Teacher(pipe, dataset))
    if resume and (work / "state.safetensors").is_file():
        load_state(work, run)
    train_phases(run, work, progress)
    st = run.state
    section = {"method": config.method, "sampler": SAMPLER_OF[config.method],
               "steps": config.steps, "guidance": config.guidance,
               "teacher": base["path"], "settings": asdict(config)}
    metrics = {"seconds": round(st.elapsed, 1), "teacher_evaluations": st.teacher_evaluations,
               "phases": dict(zip(run.phases, st.iterations_done, strict=True)),
               "final_loss": st.losses[-1][2] if st.losses else None}
    manifest = save_student(run.student.eval(), out, pipe.config, section, base, metrics,
                            provenance, extra_files=carried_autoencoder(pipe.source))
    shutil.rmtree(work, ignore_errors=True)
    return manifest


def distill_command(
    teacher: str = typer.Argument(..., help="teacher: a shipped name (shapes-base), run or "
                                  "checkpoint folder"),
    method: str = typer.Option("lcm", help=", ".join(METHODS)),
    steps: int = typer.Option(4, help="the student's sampling steps"),
    budget_minutes: float = typer.Option(15.0, help="wall-clock minutes for the whole "
                                         "run (training phases share what pairs leave)"),
    iterations: int = typer.Option(0, help="iterations per training phase (0: until the "
                                   "phase's share of the budget)"),
    batch_size: int = typer.Option(32, help="images per iteration"),
    lr: float = typer.Option(3e-4, help="learning rate"),
    guidance: float = typer.Option(3.0, help="the teacher's CFG scale, folded into the student"),
    teacher_steps: int = typer.Option(16, help="progressive: the first teacher's Euler steps"),
    pairs: int = typer.Option(512, help="reflow: teacher noise-image pairs"),
    fake_updates: int = typer.Option(5, help="dmd: fake-score updates per student update"),
    ckpt_every: int = typer.Option(50, help="iterations between resume checkpoints"),
    seed: int = typer.Option(0, help="seed of every draw"),
    resume: bool = typer.Option(False, "--resume", help="continue the unfinished run of --out"),
    out: str = typer.Option(..., help="new student folder; `difflab sample OUT` loads it"),
) -> None:
    """Distil a few-step student: `difflab distill shapes-base --method lcm --steps 4
    --budget-minutes 15 --out runs/lcm4`."""
    import datetime

    from difflab.eval.provenance import code_version, command_line

    config = DistillConfig(method=method, steps=steps, budget_minutes=budget_minutes,
                           iterations=iterations, batch_size=batch_size, lr=lr,
                           guidance=guidance, teacher_steps=teacher_steps, pairs=pairs,
                           fake_updates=fake_updates,
                           ckpt_every=ckpt_every, seed=seed)
    check_out(out, resume)
    manifest = distill(teacher, config, out, resume=resume,
                       provenance={"command": command_line(), "code_version": code_version(),
                                   "date": datetime.datetime.now().isoformat(timespec="seconds")})
    m = manifest.metrics
    typer.echo(f"distilled {method} ({', '.join(f'{k}: {v} it' for k, v in m['phases'].items())})"
               f" in {m['seconds']:.0f} s, {m['teacher_evaluations']:,} teacher evaluations; "
               f"wrote {out}/ (samples with {SAMPLER_OF[method]} x{steps})")
