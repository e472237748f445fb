"""Tiny real runs for the user-path tests: trained in seconds through the real trainer, once per
session, with the network each run trained kept in memory to compare loaded models against."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from difflab.runtime.build import class_names
from difflab.runtime.conditioning import make_conditioner
from difflab.runtime.pipeline import Pipeline
from difflab.train import distributed as ddp
from difflab.train.config import TrainConfig, apply_override, validate
from difflab.train.parts import build_parts
from difflab.train.trainer import Trainer

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
# an 8x8 DiT with 2x2 patches (16 tokens), one block: trains 40 steps in about a second
TINY_DIT = {"input_size": 8, "patch_size": 2, "hidden_size": 32, "depth": 1, "num_heads": 2}
RUN = {"schedule.batch_size": 16, "schedule.warmup_steps": 2, "optim.lr": 3e-3,
       "run.precision": "fp32", "run.progress": False, "run.device": "cpu", "run.log_every": 1,
       "ema.decay": 0.9, "text.cond_dropout": 0.2}


@dataclass
class TinyRun:
    """A finished run folder and the pipeline of its final EMA network, never saved or loaded."""

    path: Path
    config: TrainConfig
    memory: Pipeline
    losses: list[float]


def train_tiny(out: Path, settings: dict[str, Any], base: TrainConfig | None = None) -> TinyRun:
    """Train `settings` (dotted keys over RUN) with the real Trainer into `out`."""
    cfg = base or TrainConfig()
    for key, value in {**RUN, **settings, "run.out_dir": str(out)}.items():
        cfg = apply_override(cfg, key, value)
    cfg = validate(cfg)
    parts = build_parts(cfg)
    info = ddp.init_distributed(cfg.run.device)
    out.mkdir(parents=True)
    trainer = Trainer(cfg, parts, info, out)
    trainer.run()
    num_classes = getattr(parts.net.config, "num_classes", 0)
    names = class_names(cfg.data, num_classes) if num_classes else ()
    shape = tuple(parts.dataset[0]["image"].shape)
    memory = Pipeline(trainer.ema_network(), parts.process,
                      make_conditioner(parts.text_encoder, names), shape)
    losses = [loss for _, loss in trainer.loss_tail]
    return TinyRun(out, cfg, memory, losses)


def dit(**overrides: Any) -> dict[str, Any]:
    return {"model.preset": "dit-tiny", "model.overrides": {**TINY_DIT, **overrides}}


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory) -> TinyRun:
    """Class-conditional DiT on sklearn's digits (labels 0-9, null label 10), 40 steps."""
    return train_tiny(tmp_path_factory.mktemp("runs") / "digits", {
        **dit(num_classes=10), "data.name": "digits", "data.options": {"size": 8},
        "text.encoder": "none", "schedule.steps": 40, "run.ckpt_every": 20})


@pytest.fixture(scope="session")
def uncond_run(tmp_path_factory) -> TinyRun:
    """Unconditional DiT on digits (no labels used), 4 steps."""
    return train_tiny(tmp_path_factory.mktemp("runs") / "uncond", {
        **dit(num_classes=0), "data.name": "digits", "data.options": {"size": 8},
        "text.encoder": "none", "schedule.steps": 4, "run.ckpt_every": 4})


@pytest.fixture(scope="session")
def shapes_run(tmp_path_factory) -> TinyRun:
    """Class-conditional DiT on 16x16 single-object shapes: its class names are the suite's
    single-object prompts ("a red circle"), so eval and bench run on it; 4 steps."""
    return train_tiny(tmp_path_factory.mktemp("runs") / "shapes", {
        **dit(num_classes=48, input_size=16, patch_size=4), "data.name": "shapes",
        "data.options": {"size": 16, "kinds": ["single"], "max_objects": 1,
                         "conditioning": "class", "length": 64},
        "text.encoder": "none", "schedule.steps": 4, "run.ckpt_every": 4})


@pytest.fixture(scope="session")
def text_run(tmp_path_factory) -> TinyRun:
    """configs/tiny.toml (PixArt-form DiT, bundled MiniLM text states) for 2 steps, fp32."""
    from difflab.train.config import load_train_config

    base = load_train_config(CONFIGS / "tiny.toml")
    return train_tiny(tmp_path_factory.mktemp("runs") / "text", {
        "schedule.steps": 2, "schedule.batch_size": 4, "run.ckpt_every": 2,
        "data.options.length": 16}, base)


@pytest.fixture(autouse=True)
def _fresh_rng():
    """Each test starts from the same global RNG (loading must not depend on it)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(123)
        yield


@pytest.fixture(scope="session")
def tiny_trainer():
    """`train_tiny`, for test modules that train runs of their own (a plain `from conftest
    import` would find another folder's conftest when several folders run together)."""
    return train_tiny
