"""Train a ControlNet on a frozen base with the shapes world's exact layouts, save and load it.

Each training scene comes from the world's own scene sampler (`data.shapes_dataset`) with its
caption; its control map is rendered from the scene's exact boxes (`layout.layout_map`). The
loss is the base's own denoising loss; only the control branch trains. Every draw comes from a
generator seeded by (seed, step).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from difflab.config import ConfigError
from difflab.control.controlnet import ControlNet, ControlNetConfig, apply_controlnet, to_device
from difflab.control.layout import layout_map
from difflab.limits import check_float, check_int

METHODS: tuple[str, ...] = ("controlnet",)
WEIGHTS = "controlnet.safetensors"
KIND = "control"


@dataclass(frozen=True)
class ControlTrainConfig:
    """One training run of a control adapter."""

    method: str = "controlnet"
    steps: int = 1500
    batch_size: int = 16
    lr: float = 1e-3
    cond_dropout: float = 0.1  # the caption is dropped (the map kept), so CFG still works
    max_seconds: float = 1200.0  # stop early at this wall time (the 20-minute budget)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"unknown control method {self.method!r}; valid: "
                              f"{', '.join(METHODS)}")
        check_int("steps", self.steps, 1, 1_000_000)
        check_int("batch_size", self.batch_size, 1, 1024)
        check_float("lr", self.lr, 1e-7, 1.0)
        check_float("cond_dropout", self.cond_dropout, 0.0, 1.0)
        check_float("max_seconds", self.max_seconds, 1.0, 1e6)


def scene_batch(n: int, size: int, gen: np.random.Generator):
    """(images (n, 3, H, W) in [-1, 1], captions, control maps (n, C, H, W)) of world scenes."""
    from difflab.data.shapes import render
    from difflab.data.shapes_dataset import ShapesConfig, sample_scene, to_tensor

    cfg = ShapesConfig(size=size, kinds=("relation", "relation", "single", "multi"))
    images, captions, maps = [], [], []
    for _ in range(n):
        scene, caption = sample_scene(gen, cfg)
        images.append(to_tensor(render(scene)))
        captions.append(caption)
        maps.append(layout_map([(o.shape, o.color) for o in scene.objects],
                               scene.boxes(normalized=True), size))
    return torch.stack(images), captions, torch.stack(maps)


def train_controlnet(pipe: Any, cfg: ControlTrainConfig, progress: bool = True
                     ) -> tuple[ControlNet, dict[str, Any]]:
    """Train a ControlNet on `pipe`'s frozen network; returns it and what the run cost."""
    torch.manual_seed(cfg.seed)
    net = to_device(ControlNet(pipe.net), pipe.net)
    pipe.net.requires_grad_(False)
    handle = apply_controlnet(pipe.net, net)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=0.0)
    size = pipe.image_shape[-1]
    losses, start, step = [], time.perf_counter(), 0
    net.train()
    try:
        for step in range(cfg.steps):
            if time.perf_counter() - start > cfg.max_seconds:
                break
            gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
            x0, captions, cmaps = scene_batch(cfg.batch_size, size,
                                              np.random.default_rng([cfg.seed, step]))
            drop = torch.rand(cfg.batch_size, generator=gen) < cfg.cond_dropout
            captions = ["" if d else c for c, d in zip(captions, drop.tolist(), strict=True)]
            sigma = pipe.process.sample_sigma(cfg.batch_size, generator=gen)
            noise = torch.randn(x0.shape, generator=gen)
            x_in, t = pipe.process.net_input(x0, noise, sigma)
            handle.set_map(cmaps)
            out = pipe.net(x_in, t, **pipe.condition(captions))
            err = (out - pipe.process.target(x0, noise, sigma)).pow(2).flatten(1).mean(1)
            loss = (pipe.process.loss_weight(sigma) * err).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            losses.append(loss.item())
            if progress and step % 50 == 0:
                print(f"step {step} loss {np.mean(losses[-50:]):.4f} "
                      f"{time.perf_counter() - start:.0f}s", flush=True)
    finally:
        handle.remove()
    net.eval()
    seconds = time.perf_counter() - start
    return net, {"steps_done": len(losses), "seconds": round(seconds, 1),
                 "final_loss": float(np.mean(losses[-50:])) if losses else None}


def save_control(net: ControlNet, out: str | Path, base: dict[str, str],
                 cfg: ControlTrainConfig, metrics: dict[str, Any]) -> None:
    """Write a control folder: weights plus a manifest naming its base (a new folder)."""
    from difflab.eval.provenance import provenance
    from difflab.runtime.artefacts import new_folder, write_manifest

    with new_folder(out) as tmp:
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp / WEIGHTS))
        write_manifest(tmp, KIND, {"train": asdict(cfg), "controlnet": net.cfg.to_dict()},
                       base=base, metrics=metrics, provenance=provenance("train"))


def load_control(folder: str | Path, pipe: Any) -> ControlNet:
    """The ControlNet saved in `folder`, checked against `pipe`'s base (same weights hash)."""
    from difflab.runtime.artefacts import read_manifest, verify

    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"control folder {folder} does not exist")
    manifest = read_manifest(folder)
    if manifest.kind != KIND:
        raise ConfigError(f"{folder} is a {manifest.kind!r} artefact, not a control folder")
    verify(folder, manifest, (WEIGHTS,))
    base_sha = (manifest.base or {}).get("sha256")
    pipe_sha = pipe.config.get("_sha256") or _pipe_sha(pipe)
    if base_sha and pipe_sha and base_sha != pipe_sha:
        raise ConfigError(f"{folder} was trained on another base (sha256 {base_sha[:12]}...); "
                          f"this base is {pipe_sha[:12]}...")
    net = ControlNet(pipe.net, ControlNetConfig(**manifest.config["controlnet"]))
    net.load_state_dict(load_file(str(folder / WEIGHTS)))
    return to_device(net, pipe.net).eval().requires_grad_(False)


def _pipe_sha(pipe: Any) -> str:
    from difflab.runtime.artefacts import sha256_file

    weights = Path(pipe.source) / "model.safetensors" if pipe.source else None
    return sha256_file(weights) if weights is not None and weights.is_file() else ""
