"""One training loop for every network/process pair, resumable bit for bit after a SIGKILL.

Every random draw (data order, sigma, noise, condition dropout, patch masks) is a function of
(seed, step), so a checkpoint needs only the weights, the EMA, the optimiser state and a few
counters; a resumed run replays exactly the draws an uninterrupted one makes.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from difflab.config import ConfigError, storage_error
from difflab.io import atomic_write
from difflab.runtime.machine import resolve_precision, run_record
from difflab.text.cache import EmbeddingCache
from difflab.train import checkpoint as ckpt
from difflab.train import distributed as ddp
from difflab.train.conditioning import condition_batch
from difflab.train.config import TrainConfig
from difflab.train.parts import Parts
from difflab.train.runlock import run_lock
from difflab.train.schedule import (
    STREAM_LATENT,
    STREAM_MASK,
    STREAM_ORDER,
    STREAM_STEP,
    batch_indices,
    generator,
    lr_at,
)


class DivergedError(ConfigError, RuntimeError):
    """Training kept producing non-finite losses and no rollback is left: the settings (often
    the learning rate) or the data need changing."""


class _Plan:
    """Batch sampler: this rank's index list for each micro-batch of each step from `start`."""

    def __init__(self, cfg: TrainConfig, info: ddp.DistInfo, n: int, start: int) -> None:
        self.cfg, self.info, self.n, self.start = cfg, info, n, start

    def __iter__(self) -> Iterator[list[int]]:
        s = self.cfg.schedule
        micro = s.batch_size // s.accumulation
        for step in range(self.start, s.steps):
            idx = batch_indices(self.cfg.run.seed, step, s.batch_size, self.n)
            for a in range(s.accumulation):
                yield idx[a * micro:(a + 1) * micro][ddp.shard(micro, self.info)]

    def __len__(self) -> int:
        return (self.cfg.schedule.steps - self.start) * self.cfg.schedule.accumulation


class _TrainForward(nn.Module):
    """The training forward (plain or patch-masked) as one module, so DDP sees every call."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: dict[str, torch.Tensor],
                mask_ratio: float = 0.0, generator: torch.Generator | None = None) -> Any:
        if "token_ids" in cond:  # a trainable text encoder, part of the network
            cond = dict(cond)
            ids, mask = cond.pop("token_ids"), cond.pop("token_mask")
            cond.update(self.net.text_encoder.encode_ids(ids, mask).network_kwargs())
        if mask_ratio > 0:
            return self.net.forward_masked(x, t, **cond, mask_ratio=mask_ratio,
                                           generator=generator)
        return self.net(x, t, **cond)


def _collate(items: list[dict]) -> dict[str, Any]:
    out: dict[str, Any] = {"image": torch.stack([it["image"] for it in items])}
    for key in items[0]:
        if key != "image":
            out[key] = [it[key] for it in items]
    return out


class Trainer:
    """AdamW + warm-up, clipping, accumulation, EMA, autocast, CFG dropout, DDP, checkpoints."""

    def __init__(self, cfg: TrainConfig, parts: Parts, info: ddp.DistInfo, run_dir: Path) -> None:
        self.cfg, self.parts, self.info, self.run_dir = cfg, parts, info, Path(run_dir)
        self.process = parts.process
        fmt = torch.channels_last if cfg.run.channels_last else torch.preserve_format
        self.net = parts.net.to(info.device, memory_format=fmt)
        if cfg.run.mask_ratio > 0 and not hasattr(self.net, "forward_masked"):
            raise ConfigError(f"run.mask_ratio = {cfg.run.mask_ratio} needs a model with patch "
                              f"masking (forward_masked, e.g. DiT); {type(self.net).__name__} "
                              "has none")
        self.model = ddp.wrap_model(_TrainForward(self.net), info)
        ae = parts.autoencoder  # latent diffusion: batches are encoded before the loss
        self.autoencoder = ae.to(info.device).eval().requires_grad_(False) if ae else None
        o = cfg.optim
        # Decoupled Weight Decay Regularization (Loshchilov & Hutter, 2019).
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=o.lr, betas=tuple(o.betas),
                                     eps=o.eps, weight_decay=o.weight_decay)
        self.ema = {k: v.detach().clone() for k, v in self.net.state_dict().items()}
        self.precision = resolve_precision(cfg.run.precision, info.device)
        self.autocast_dtype = self.precision.autocast_dtype
        use_scaler = self.autocast_dtype == torch.float16
        self.scaler = torch.amp.GradScaler("cuda") if use_scaler else None
        enc = parts.text_encoder
        self.text = enc if enc is None or getattr(enc, "trainable", False) else EmbeddingCache(enc)
        self.step, self.lr_scale, self.rollbacks, self.bad_streak = 0, 1.0, 0, 0
        self.loss_tail: list[list[float]] = []

    # ---- one optimisation step -------------------------------------------------------------

    def _draws(self, step: int, image_shape: torch.Size) -> dict[str, torch.Tensor]:
        """sigma (B,), noise (B, C, H, W) and CFG drop flags (B,) for the whole global batch."""
        gen = generator(self.cfg.run.seed, STREAM_STEP, step)
        b = self.cfg.schedule.batch_size
        sigma = self.process.sample_sigma(b, generator=gen)
        noise = torch.randn((b, *image_shape), generator=gen)
        drop = torch.rand(b, generator=gen) < self.cfg.text.cond_dropout
        return {"sigma": sigma, "noise": noise, "drop": drop}

    @torch.no_grad()
    def _encode(self, x: torch.Tensor, step: int, lo: int, hi: int) -> torch.Tensor:
        """Scaled latents z * scale_factor of a pixel batch (Latent Diffusion Models, 2022): the
        posterior mean, or a sample whose noise is drawn for the whole global batch from
        (seed, step), so that ranks, accumulation and resumes all see the same latents."""
        posterior = self.autoencoder.encode(x.float())
        z = posterior.mean  # (b, z, H/f, W/f)
        if self.cfg.latent.posterior == "sample":
            gen = generator(self.cfg.run.seed, STREAM_LATENT, step)
            eps = torch.randn((self.cfg.schedule.batch_size, *z.shape[1:]), generator=gen)
            z = z + torch.exp(0.5 * posterior.logvar) * eps[lo:hi].to(z.device)
        return z * self.autoencoder.scale_factor

    def _loss(self, x0: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor,
              cond: dict[str, torch.Tensor], mask_gen: torch.Generator) -> torch.Tensor:
        """Sum over the micro-batch of loss_weight(sigma) * mean squared error (kept patches)."""
        x_in, t = self.process.net_input(x0, noise, sigma)
        if self.cfg.run.channels_last and x_in.dim() == 4:
            x_in = x_in.contiguous(memory_format=torch.channels_last)
        target = self.process.target(x0, noise, sigma)
        ratio = self.cfg.run.mask_ratio
        with self._autocast():
            if ratio > 0:
                # Stretching Each Dollar (micro-budget training, 2024): the backbone sees only
                # the kept patches and the loss is computed on them; keep: (b, 1, H, W) bool.
                out, _, keep = self.model(x_in, t, cond, mask_ratio=ratio, generator=mask_gen)
            else:
                out, keep = self.model(x_in, t, cond), None
        err = (out.float() - target.float()).pow(2)  # (b, C, H, W)
        if keep is None:
            per_sample = err.flatten(1).mean(1)
        else:
            keep = keep.to(err.dtype).expand_as(err)
            per_sample = (err * keep).flatten(1).sum(1) / keep.flatten(1).sum(1).clamp_min(1)
        return (self.process.loss_weight(sigma).float() * per_sample).sum()

    def train_step(self, micro_batches: list[dict[str, Any]]) -> dict[str, float]:
        """One optimiser update from the accumulation micro-batches of this rank."""
        s, dev, step = self.cfg.schedule, self.info.device, self.step
        lr = lr_at(step, self.cfg.optim.lr, s) * self.lr_scale
        for group in self.opt.param_groups:
            group["lr"] = lr
        micro, draws = s.batch_size // s.accumulation, None
        total = torch.zeros((), device=dev)
        for a, batch in enumerate(micro_batches):
            x0 = batch["image"].to(dev)
            sl = ddp.shard(micro, self.info)
            lo, hi = a * micro + sl.start, a * micro + sl.stop
            if self.autoencoder is not None:
                x0 = self._encode(x0, step, lo, hi)
            draws = draws or self._draws(step, x0.shape[1:])
            if step in self.cfg.debug.nan_steps and self.rollbacks == 0:
                x0 = torch.full_like(x0, float("nan"))  # injected fault (debug.nan_steps)
            cond = condition_batch(batch, draws["drop"][lo:hi], self.text,
                                   self.parts.null_class, dev)
            mask_gen = generator(self.cfg.run.seed, STREAM_MASK, step, lo)
            with ddp.no_sync(self.model, a < len(micro_batches) - 1):
                loss = self._loss(x0, draws["sigma"][lo:hi].to(dev), draws["noise"][lo:hi].to(dev),
                                  cond, mask_gen) * (self.info.world_size / s.batch_size)
                (self.scaler.scale(loss) if self.scaler else loss).backward()
            total += loss.detach()
        return self._update(ddp.all_sum(total, self.info).item(), lr)

    def _update(self, loss: float, lr: float) -> dict[str, float]:
        """Clip, step and update the EMA, or skip the step when the loss/gradient is not finite."""
        if self.scaler is not None:
            self.scaler.unscale_(self.opt)
        clip = self.cfg.optim.grad_clip or math.inf
        norm = float(torch.nn.utils.clip_grad_norm_(self.net.parameters(), clip))
        # With a GradScaler an inf gradient is routine (it skips and lowers the scale itself).
        ok = math.isfinite(loss) and (math.isfinite(norm) or self.scaler is not None)
        if ok:
            if self.scaler is not None:
                self.scaler.step(self.opt)
                self.scaler.update()
            else:
                self.opt.step()
            self._update_ema()
            self.bad_streak = 0
            self.loss_tail = (self.loss_tail + [[self.step, loss]])[-100:]
        else:
            self.bad_streak += 1
        self.opt.zero_grad(set_to_none=True)
        self.step += 1
        return {"step": self.step, "loss": loss, "lr": lr, "grad_norm": norm, "skipped": not ok}

    @torch.no_grad()
    def _update_ema(self) -> None:
        """Polyak averaging (Acceleration of Stochastic Approximation by Averaging, 1992)."""
        decay = min(self.cfg.ema.decay, (1 + self.step) / (10 + self.step))
        for k, v in self.net.state_dict().items():
            if v.is_floating_point():
                self.ema[k].lerp_(v, 1.0 - decay)
            else:
                self.ema[k].copy_(v)

    def _autocast(self) -> contextlib.AbstractContextManager:
        return self.precision.autocast(self.info.device)

    # ---- checkpoints -----------------------------------------------------------------------

    def save(self) -> None:
        """Rank 0 writes a complete checkpoint; the other ranks wait for it."""
        if self.info.is_main:
            tensors, opt_meta = ckpt.optimizer_to_flat(self.opt)
            tensors["rng/torch"] = torch.get_rng_state()
            np_state = np.random.get_state()
            state = {
                "lr_scale": self.lr_scale, "rollbacks": self.rollbacks,
                "bad_streak": self.bad_streak, "loss_tail": self.loss_tail,
                "optimizer": opt_meta, "world_size": self.info.world_size,
                "scaler": self.scaler.state_dict() if self.scaler else None,
                "machine": run_record(self.precision, self.info.device.type),
                "data": {"seed": self.cfg.run.seed,
                         "position": self.step * self.cfg.schedule.batch_size},
                "rng": {"numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
                        "python": _jsonable(random.getstate())},
            }
            ckpt.save_checkpoint(self.run_dir, self.step, weights=self.net.state_dict(),
                                 ema=self.ema, train_tensors=tensors, config=self.cfg,
                                 state=state, keep_last=self.cfg.run.keep_last,
                                 extra_files=self.parts.extra_files())
        ddp.barrier(self.info)

    def restore(self, folder: Path) -> None:
        """Load weights, EMA, optimiser, counters and RNG states from a checkpoint folder."""
        saved, state, tensors = ckpt.read_state(folder)
        ckpt.check_same_run(saved, self.cfg, folder)
        raw = {k[6:]: v for k, v in tensors.items() if k.startswith("model/")}
        ckpt.load_weights(self.net, raw, folder / "train_state.safetensors")
        for k, v in tensors.items():
            if k.startswith("ema/"):
                self.ema[k[4:]].copy_(v)
        ckpt.optimizer_from_flat(self.opt, tensors, state["optimizer"])
        if self.scaler is not None and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(tensors["rng/torch"])
        np_rng = state["rng"]["numpy"]
        np.random.set_state((np_rng[0], np.array(np_rng[1], dtype=np.uint32), *np_rng[2:]))
        random.setstate(_tupled(state["rng"]["python"]))
        self.step, self.lr_scale = state["step"], state["lr_scale"]
        self.rollbacks, self.bad_streak = state["rollbacks"], state["bad_streak"]
        self.loss_tail = state["loss_tail"]

    def _rollback(self) -> None:
        """After N non-finite steps in a row: back to the last checkpoint with half the LR."""
        r = self.cfg.run
        folder = ckpt.latest_checkpoint(self.run_dir)
        if folder is None or self.rollbacks >= r.max_rollbacks:
            why = "no checkpoint to roll back to" if folder is None else (
                f"already rolled back {self.rollbacks} times (run.max_rollbacks)")
            raise DivergedError(f"{r.nonfinite_patience} non-finite steps in a row at step "
                                f"{self.step} and {why}; lower optim.lr or check the data")
        failed_at, scale, count = self.step, self.lr_scale * 0.5, self.rollbacks + 1
        self.restore(folder)
        self.lr_scale, self.rollbacks, self.bad_streak = scale, count, 0
        self._event(f"{r.nonfinite_patience} non-finite steps in a row at step {failed_at}: "
                    f"rolled back to {folder.name}, learning rate x{scale:g}")

    # ---- the loop --------------------------------------------------------------------------

    def _batches(self) -> Iterator[list[dict[str, Any]]]:
        plan = _Plan(self.cfg, self.info, len(self.parts.dataset), self.step)
        # Its own generator: creating a loader must not consume the global torch RNG.
        loader = DataLoader(self.parts.dataset, batch_sampler=plan, collate_fn=_collate,
                            num_workers=self.cfg.run.workers,
                            generator=generator(self.cfg.run.seed, STREAM_ORDER, self.step))
        group: list[dict[str, Any]] = []
        for batch in loader:
            group.append(batch)
            if len(group) == self.cfg.schedule.accumulation:
                yield group
                group = []

    def run(self) -> Path:
        """Train until `schedule.steps`; returns the run folder."""
        r, total = self.cfg.run, self.cfg.schedule.steps
        bar = tqdm(total=total, initial=self.step, unit="step", dynamic_ncols=True,
                   disable=not (self.info.is_main and r.progress), file=sys.stderr)
        if self.info.is_main and r.progress:  # the machine record goes into state.json
            tqdm.write(f"[difflab train] precision {self.precision.name} "
                       f"({self.precision.reason}), {torch.get_num_threads()} threads",
                       file=sys.stderr)
        while self.step < total:
            rolled_back = False
            t0 = time.perf_counter()
            for group in self._batches():
                m = self.train_step(group)
                now = time.perf_counter()
                m["images_per_s"] = self.cfg.schedule.batch_size / max(now - t0, 1e-9)
                t0 = now
                bar.set_postfix(loss=f"{m['loss']:.4f}", img_s=f"{m['images_per_s']:.1f}",
                                refresh=False)
                bar.update(1)
                if m["skipped"]:
                    self._event(f"non-finite loss/gradient at step {self.step - 1}: skipped")
                if self.step % r.log_every == 0 or m["skipped"]:
                    self._log(m)
                if self.bad_streak >= r.nonfinite_patience:
                    self._rollback()
                    bar.reset(total=total)
                    bar.update(self.step)
                    rolled_back = True
                    break
                if self.step % r.ckpt_every == 0 or self.step == total:
                    self.save()
                if r.sample_every and self.step % r.sample_every == 0 and self.info.is_main:
                    self._sample()
            if not rolled_back:
                break
        bar.close()
        return self.run_dir

    def _sample(self) -> None:
        if self.parts.sample_grid is None:
            return
        self.parts.sample_grid(self.ema_network(), self.step)

    def ema_network(self) -> nn.Module:
        """A copy of the network holding the EMA weights (for sampling during training)."""
        import copy

        net = copy.deepcopy(self.net).eval()
        net.load_state_dict(self.ema)
        return net

    def _log(self, metrics: dict[str, Any]) -> None:
        if self.info.is_main:
            path = self.run_dir / "metrics.jsonl"
            try:
                with open(path, "a") as f:
                    f.write(json.dumps(metrics) + "\n")
            except OSError as e:
                raise storage_error(e, str(path)) from e

    def _event(self, message: str) -> None:
        if self.info.is_main:
            tqdm.write(f"[difflab train] {message}", file=sys.stderr)
            self._log({"step": self.step, "event": message})

    def trim_log(self) -> None:
        """On resume, drop metric lines past the checkpoint (they will be logged again) and a
        last line cut short by a kill."""
        path = self.run_dir / "metrics.jsonl"
        if self.info.is_main and path.is_file():
            keep = [ln for ln in path.read_text(errors="replace").splitlines()
                    if _step_of(ln) is not None and _step_of(ln) <= self.step]
            atomic_write(path, lambda p: p.write_text("".join(ln + "\n" for ln in keep)))


def _step_of(line: str) -> int | None:
    """The step of a metrics.jsonl line, or None for a damaged line."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError:
        return None
    return row.get("step", 0) if isinstance(row, dict) else None


def _jsonable(obj: Any) -> Any:
    return [_jsonable(x) for x in obj] if isinstance(obj, tuple) else obj


def _tupled(obj: Any) -> Any:
    return tuple(_tupled(x) for x in obj) if isinstance(obj, list) else obj


def run_training(cfg: TrainConfig, parts: Parts, *, resume: bool = False,
                 out_dir: str | Path | None = None) -> Path:
    """Train `parts` as `cfg` says, in this process or as one rank of a torchrun job."""
    info = ddp.init_distributed(cfg.run.device)
    run_dir = Path(out_dir or cfg.run.out_dir)
    if out_dir is not None:
        cfg = replace(cfg, run=replace(cfg.run, out_dir=str(out_dir)))
    try:
        # Rank 0 holds the run folder's lock for the whole run (other ranks share its folder).
        with run_lock(run_dir) if info.is_main else contextlib.nullcontext():
            trainer = Trainer(cfg, parts, info, run_dir)
            latest = ckpt.latest_checkpoint(run_dir) if run_dir.exists() else None
            if resume and latest is not None:
                trainer.restore(latest)
                trainer.trim_log()
            elif latest is not None:
                raise ConfigError(f"run folder {run_dir} already holds checkpoints "
                                  f"({latest.name}); pass --resume to continue it or choose "
                                  "another --out")
            return trainer.run()
    finally:
        ddp.shutdown(info)
