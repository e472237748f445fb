"""Data-parallel training under `torchrun`: process-group init, DDP wrapping, batch sharding."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from difflab.config import ConfigError


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: its rank among `world_size` and the device it trains on."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    """`auto` picks CUDA (this process's local GPU) when present, else CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("run.device = 'cuda' but no CUDA device is available; use cpu/auto")
        return torch.device("cuda", local_rank)
    if name != "cpu":
        raise ConfigError(f"run.device = {name!r} is not one of ['auto', 'cpu', 'cuda']")
    return torch.device("cpu")


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the process group torchrun describes in RANK/WORLD_SIZE/LOCAL_RANK (gloo/nccl)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, init_method="env://")
    return DistInfo(rank, world_size, local_rank, dev)


def shutdown(info: DistInfo) -> None:
    """Leave the process group (a no-op for a single process)."""
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def wrap_model(model: nn.Module, info: DistInfo) -> nn.Module:
    """DDP-wrap the model when several processes train; gradients are averaged over ranks."""
    if not info.enabled:
        return model
    ids = [info.device.index] if info.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def shard(global_batch: int, info: DistInfo) -> slice:
    """This rank's contiguous slice of a global batch (like `DistributedSampler`, no padding)."""
    if global_batch % info.world_size:
        raise ConfigError(
            f"schedule.batch_size = {global_batch} is not divisible by the world size "
            f"{info.world_size} (x schedule.accumulation)"
        )
    per = global_batch // info.world_size
    return slice(info.rank * per, (info.rank + 1) * per)


def no_sync(model: nn.Module, skip_sync: bool) -> contextlib.AbstractContextManager:
    """Skip DDP's gradient all-reduce on accumulation micro-steps other than the last."""
    if skip_sync and isinstance(model, DistributedDataParallel):
        return model.no_sync()
    return contextlib.nullcontext()


def all_sum(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum a tensor over ranks (identity for one process)."""
    if info.enabled:
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


def barrier(info: DistInfo) -> None:
    """Wait for every rank (e.g. until rank 0 has written a checkpoint)."""
    if info.enabled:
        dist.barrier()


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside a DDP wrapper."""
    return model.module if isinstance(model, DistributedDataParallel) else model

