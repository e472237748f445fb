"""A distillation run's resume state: one safetensors file written atomically.

`<out>.work/state.safetensors` holds the student, the target, previous-round or fake-score
network, the optimiser states and Reflow's pairs as tensors, and the config, state and pair
captions as JSON in its metadata; one file, replaced atomically, so a kill leaves the previous
checkpoint whole.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from safetensors import safe_open

from difflab.config import ConfigError
from difflab.distill.fit import DistillConfig, Run, State, frozen_copy
from difflab.io import load_tensors, save_tensors
from difflab.train.checkpoint import optimizer_from_flat, optimizer_to_flat

STATE_FILE = "state.safetensors"


def work_folder(out: str | Path) -> Path:
    """Where a run writing `out` keeps its resume state: `<out>.work/` beside it."""
    out = Path(out)
    return out.with_name(out.name + ".work")


def save_state(work: Path, run: Run) -> Path:
    """Write the run's whole state to `work/state.safetensors` atomically."""
    tensors = {f"student/{k}": v for k, v in run.student.state_dict().items()}
    for name, net in (("target", run.target), ("round_teacher", run.round_teacher)):
        if net is not None:
            tensors.update({f"{name}/{k}": v for k, v in net.state_dict().items()})
    optim, optim_meta = optimizer_to_flat(run.optimizer)
    tensors.update(optim)
    meta_fake = {}
    if run.fake is not None:  # dmd: the fake score and its own optimiser
        tensors.update({f"fake/{k}": v for k, v in run.fake.state_dict().items()})
        fake_optim, meta_fake = optimizer_to_flat(run.fake_optimizer)
        tensors.update({f"fake_{k}": v for k, v in fake_optim.items()})
    tensors.update({f"pairs/{k}": v for k, v in run.pairs.items()})
    meta = {"config": json.dumps(asdict(run.config)), "state": json.dumps(asdict(run.state)),
            "optimizer": json.dumps(optim_meta), "captions": json.dumps(run.captions),
            "teacher_evaluations": str(run.teacher.evaluations),
            "fake_optimizer": json.dumps(meta_fake)}
    work.mkdir(parents=True, exist_ok=True)
    return save_tensors(work / STATE_FILE, tensors, meta=meta)


def stored_config(work: Path) -> DistillConfig:
    """The config a work folder's run was started with."""
    with safe_open(str(work / STATE_FILE), "pt") as f:
        meta = f.metadata() or {}
    try:
        return DistillConfig(**json.loads(meta["config"]))
    except (KeyError, TypeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{work / STATE_FILE} holds no readable distillation config ({e})") \
            from None


def load_state(work: Path, run: Run) -> None:
    """Restore a run from `work/state.safetensors` (written by `save_state`)."""
    path = work / STATE_FILE
    tensors = load_tensors(path)
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}

    def part(prefix: str) -> dict:
        return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}

    run.student.load_state_dict(part("student/"))
    run.state = State(**json.loads(meta["state"]))
    for name in ("target", "round_teacher"):
        weights = part(f"{name}/")
        if weights:
            net = frozen_copy(run.student)
            net.load_state_dict(weights)
            setattr(run, name, net)
    run.optimizer = run.new_optimizer()
    optimizer_from_flat(run.optimizer, {k: v for k, v in tensors.items()
                                        if k.startswith("optim/")}, json.loads(meta["optimizer"]))
    if run.fake is not None:
        run.fake.load_state_dict(part("fake/"))
        optimizer_from_flat(run.fake_optimizer, {k[len("fake_"):]: v for k, v in tensors.items()
                                                 if k.startswith("fake_optim/")},
                            json.loads(meta["fake_optimizer"]))
    run.pairs = part("pairs/")
    run.captions = json.loads(meta["captions"])
    run.teacher.evaluations = int(meta["teacher_evaluations"])
