"""Train a control adapter (ControlNet, T2I-Adapter or GLIGEN grounding) on a frozen base with
the shapes world's exact layouts, save and load it.

Each training scene comes from the world's own scene sampler (`data.shapes_dataset`) with its
caption and its objects' exact boxes and phrases, which the adapter reads as a layout (a map
rendered by `layout.layout_map`, or (phrase, box) grounding tokens). The loss is the base's own
denoising loss; only the adapter trains. Every draw comes from a generator seeded by
(seed, step). The control folder's manifest names the method and the base.
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
from difflab.control.layout import Layout
from difflab.limits import check_float, check_int

METHODS: tuple[str, ...] = ("controlnet", "controlnet-xs", "t2i-adapter", "gligen")
KIND = "control"


def weights_name(method: str) -> str:
    """The weights file of a control folder of `method`."""
    return f"{method}.safetensors"


def build_adapter(method: str, pipe: Any, options: dict | None = None) -> torch.nn.Module:
    """An adapter of `method` for `pipe`'s network: its config's defaults, or the config fields
    a control folder saved (`options`; a GLIGEN config saved without `positions` has it off)."""
    if method == "controlnet":
        return ControlNet(pipe.net, ControlNetConfig(**(options or {})))
    if method == "controlnet-xs":
        from difflab.control.controlnet_xs import ControlNetXS, ControlNetXSConfig

        return ControlNetXS(pipe.net, ControlNetXSConfig(**(options or {})))
    if method == "t2i-adapter":
        from difflab.control.t2i_adapter import T2IAdapter, T2IAdapterConfig

        return T2IAdapter(pipe.net, T2IAdapterConfig(**(options or {})))
    if method == "gligen":
        from difflab.control.gligen import Gligen, GligenConfig

        return Gligen(pipe.net, GligenConfig() if options is None
                      else GligenConfig.from_dict(options))
    raise ConfigError(f"unknown control method {method!r}; valid: {', '.join(METHODS)}")


def method_of(net: torch.nn.Module) -> str:
    """The control method of an adapter ("" for anything else)."""
    return getattr(net, "method", "")


def apply_control(pipe: Any, net: torch.nn.Module, grounding_steps: float = 1.0):
    """Attach `net` (any method) to `pipe.net`; the handle's `set_layouts(layouts, device)`
    gives it the layouts of the batch about to run, `remove()` detaches it. `grounding_steps`
    < 1 is GLIGEN's scheduled sampling (other methods refuse it)."""
    method = method_of(net)
    if grounding_steps != 1.0 and method != "gligen":
        raise ConfigError(f"--grounding-steps is GLIGEN's scheduled sampling; this control "
                          f"adapter is {method or type(net).__name__}")
    if method == "controlnet":
        return apply_controlnet(pipe.net, net)
    if method == "controlnet-xs":
        from difflab.control.controlnet_xs import apply_controlnet_xs

        return apply_controlnet_xs(pipe.net, net)
    if method == "t2i-adapter":
        from difflab.control.t2i_adapter import apply_t2i_adapter

        return apply_t2i_adapter(pipe.net, net)
    if method == "gligen":
        from difflab.control.gligen import apply_gligen, phrase_encoder

        return apply_gligen(pipe.net, net, phrase_encoder(pipe), grounding_steps)
    raise ConfigError(f"{type(net).__name__} is not a control adapter")


@dataclass(frozen=True)
class ControlTrainConfig:
    """One training run of a control adapter."""

    method: str = "controlnet"
    steps: int = 1500
    batch_size: int = 16
    lr: float = 1e-3
    cond_dropout: float = 0.1  # the caption is dropped (the map kept), so CFG still works
    # the layout is dropped (the caption kept): the adapter learns to leave the base alone
    # when it is given no boxes (GLIGEN drops its grounding tokens the same way)
    layout_dropout: float = 0.0
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
        check_float("layout_dropout", self.layout_dropout, 0.0, 1.0)
        check_float("max_seconds", self.max_seconds, 1.0, 1e6)


def scene_batch(n: int, size: int, gen: np.random.Generator):
    """(images (n, 3, H, W) in [-1, 1], captions, layouts) of world scenes: each layout holds
    the scene's objects as phrases ("red circle") and their exact boxes."""
    from difflab.data.captions import noun
    from difflab.data.shapes import render
    from difflab.data.shapes_dataset import ShapesConfig, sample_scene, to_tensor

    cfg = ShapesConfig(size=size, kinds=("relation", "relation", "single", "multi"))
    images, captions, layouts = [], [], []
    for _ in range(n):
        scene, caption = sample_scene(gen, cfg)
        images.append(to_tensor(render(scene)))
        captions.append(caption)
        layouts.append(Layout(caption, tuple(noun(o.shape, o.color) for o in scene.objects),
                              tuple(scene.boxes(normalized=True))))
    return torch.stack(images), captions, layouts


def train_control(pipe: Any, cfg: ControlTrainConfig, progress: bool = True,
                  options: dict | None = None) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Train an adapter of `cfg.method` (its config's defaults, or the fields in `options`) on
    `pipe`'s frozen network; returns it and what the run cost."""
    torch.manual_seed(cfg.seed)
    net = to_device(build_adapter(cfg.method, pipe, options), pipe.net)
    pipe.net.requires_grad_(False)
    handle = apply_control(pipe, net)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=0.0)
    size = pipe.image_shape[-1]
    losses, start, step = [], time.perf_counter(), 0
    net.train()
    try:
        for step in range(cfg.steps):
            if time.perf_counter() - start > cfg.max_seconds:
                break
            gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
            x0, captions, layouts = scene_batch(cfg.batch_size, size,
                                              np.random.default_rng([cfg.seed, step]))
            drop = torch.rand(cfg.batch_size, generator=gen) < cfg.cond_dropout
            captions = ["" if d else c for c, d in zip(captions, drop.tolist(), strict=True)]
            if cfg.layout_dropout > 0:  # drawn after, so runs without it keep their draws
                empty = torch.rand(cfg.batch_size, generator=gen) < cfg.layout_dropout
                layouts = [lay.without_boxes() if e else lay
                           for lay, e in zip(layouts, empty.tolist(), strict=True)]
            sigma = pipe.process.sample_sigma(cfg.batch_size, generator=gen)
            noise = torch.randn(x0.shape, generator=gen)
            x_in, t = pipe.process.net_input(x0, noise, sigma)
            handle.set_layouts(layouts, x_in.device)
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
                      f"{time.perf_counter() - start:.0f}s{_diagnostics_text(net)}", flush=True)
    finally:
        handle.remove()
    net.eval()
    seconds = time.perf_counter() - start
    diagnostics = getattr(net, "diagnostics", None)  # e.g. GLIGEN's gate openings
    return net, {"steps_done": len(losses), "seconds": round(seconds, 1),
                 "final_loss": float(np.mean(losses[-50:])) if losses else None,
                 **(diagnostics() if diagnostics else {})}


def _diagnostics_text(net: torch.nn.Module) -> str:
    """' gates 0.01/0.02/0.03' for an adapter whose `diagnostics()` reports gate openings."""
    diagnostics = getattr(net, "diagnostics", None)
    gates = diagnostics().get("gates") if diagnostics else None
    return " gates " + "/".join(f"{v:.3f}" for v in gates.values()) if gates else ""


def save_control(net: torch.nn.Module, out: str | Path, base: dict[str, str],
                 cfg: ControlTrainConfig, metrics: dict[str, Any]) -> None:
    """Write a control folder: weights plus a manifest naming its method and base (a new
    folder)."""
    from difflab.eval.provenance import provenance
    from difflab.runtime.artefacts import new_folder, write_manifest

    method = method_of(net)
    with new_folder(out) as tmp:
        save_file({k: v.contiguous() for k, v in net.state_dict().items()},
                  str(tmp / weights_name(method)))
        write_manifest(tmp, KIND, {"train": asdict(cfg), "method": method,
                                   method: net.cfg.to_dict()},
                       base=base, metrics=metrics, provenance=provenance("train"))


def control_method(folder: str | Path) -> str:
    """The method a control folder's manifest names (a one-line error for anything else)."""
    from difflab.runtime.artefacts import read_manifest

    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"control folder {folder} does not exist")
    manifest = read_manifest(folder)
    if manifest.kind != KIND:
        raise ConfigError(f"{folder} is a {manifest.kind!r} artefact, not a control folder")
    config = manifest.config or {}
    method = config.get("method", "controlnet" if "controlnet" in config else None)
    if method not in METHODS or method not in config:
        raise ConfigError(f"{folder} names control method {method!r}; valid: "
                          f"{', '.join(METHODS)}")
    return method


def load_control(folder: str | Path, pipe: Any, method: str = "") -> torch.nn.Module:
    """The adapter saved in `folder`, checked against `pipe`'s base (same weights hash) and,
    when given, the expected `method`."""
    from difflab.runtime.artefacts import read_manifest, verify

    folder = Path(folder)
    found = control_method(folder)
    if method and found != method:
        raise ConfigError(f"{folder} holds a {found} adapter, not {method}")
    manifest = read_manifest(folder)
    verify(folder, manifest, (weights_name(found),))
    base_sha = (manifest.base or {}).get("sha256")
    pipe_sha = pipe.config.get("_sha256") or _pipe_sha(pipe)
    if base_sha and pipe_sha and base_sha != pipe_sha:
        raise ConfigError(f"{folder} was trained on another base (sha256 {base_sha[:12]}...); "
                          f"this base is {pipe_sha[:12]}...")
    net = build_adapter(found, pipe, manifest.config[found])
    net.load_state_dict(load_file(str(folder / weights_name(found))))
    return to_device(net, pipe.net).eval().requires_grad_(False)


def _pipe_sha(pipe: Any) -> str:
    from difflab.runtime.artefacts import sha256_file

    weights = Path(pipe.source) / "model.safetensors" if pipe.source else None
    return sha256_file(weights) if weights is not None and weights.is_file() else ""
