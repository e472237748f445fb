"""A tiny real checkpoint for CLI tests: a 1-block PixArt-form DiT on 16x16 with MiniLM text."""

from __future__ import annotations

from pathlib import Path

import torch

from difflab.runtime.build import build_network
from difflab.train.checkpoint import save_checkpoint
from difflab.train.config import TrainConfig, apply_override, validate

TINY = {
    "model.preset": "pixart-tiny",
    "model.overrides": {"input_size": 16, "patch_size": 4, "hidden_size": 32, "depth": 1,
                        "num_heads": 2},
    "data.options": {"size": 16, "max_objects": 1, "kinds": ["single"], "length": 64},
    "text.max_length": 8,
    "run.precision": "fp32",
    "run.progress": False,
}


def tiny_train_config(out_dir: str | Path, **changes) -> TrainConfig:
    """The tiny run's TrainConfig (what `tiny_checkpoint` stores)."""
    cfg = TrainConfig()
    for key, value in {**TINY, "run.out_dir": str(out_dir), **changes}.items():
        cfg = apply_override(cfg, key, value)
    return validate(cfg)


def tiny_checkpoint(run_dir: str | Path) -> Path:
    """Write a loadable run folder (one checkpoint at step 1, fresh weights) and return it."""
    cfg = tiny_train_config(run_dir)
    state = build_network(cfg.model, seed=cfg.run.seed).state_dict()
    ema = {k: v.clone() for k, v in state.items()}
    save_checkpoint(run_dir, 1, weights=state, ema=ema,
                    train_tensors={"rng/torch": torch.get_rng_state()}, config=cfg,
                    state={}, keep_last=1)
    return Path(run_dir)
