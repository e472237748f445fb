"""Training throughput of the flagship preset vs this machine's matmul peak and vs diffusers.

Trains the model of a training config (configs/demo.toml's unet-tiny by default) and its
diffusers twin on the same fixed batches, in one process, and prints images/s, the fraction of
the matmul peak (at the precision used) measured in the same run, and the ratio between the
two. The twin of a DiT is PixArtTransformer2DModel with the same width, depth, heads and patch
size; the twin of a UNet is UNet2DConditionModel with the same channels, levels, attention
levels, heads and text width (diffusers' up stages have one layer more per level and a GEGLU
MLP, so the twin does more FLOPs: both the images/s ratio and the FLOP/s ratio, counted by
torch's flop counter, are printed). Timings are only meaningful on a quiet machine.

The two models take turns step by step (difflab, diffusers, difflab, ...) on the same batches,
with the same AdamW settings, precision (auto: bf16 where native, else fp32), loss and
clipping, so load changes on a shared machine hit both alike; each side's time is the median
over its timed steps. `--threads` pins torch's thread count: on an oversubscribed CPU, threads
beyond the free cores spin-wait at every parallel region, which punishes whichever model
launches more kernels.

    .venv/bin/python benchmarks/train_throughput.py [--steps 10] [--batch 64] [--warmup 2]
        [--threads N] [--optimizer foreach|fused|forloop] [--config configs/demo.toml]
        [--override model.preset=pixart-s]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from pathlib import Path

import torch

from difflab.models import build_model
from difflab.models.base import model_config
from difflab.runtime.machine import resolve_precision
from difflab.train.config import load_train_config

ROOT = Path(__file__).resolve().parents[1]
OPTIMIZER_FLAGS = {"foreach": {"foreach": True}, "fused": {"fused": True},
                   "forloop": {"foreach": False}}


def matmul_peak(dtype: torch.dtype = torch.bfloat16, n: int = 1024, reps: int = 20) -> float:
    """Best-of FLOP/s of an n^3 matmul in `dtype` (this machine's practical ceiling)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def time_interleaved(steps: dict, batches, warmup: int) -> dict:
    """Median seconds per step of each named step function, taking turns on every batch."""
    times = {name: [] for name in steps}
    for i, (x, t, ctx, mask) in enumerate(batches):
        for name, step_fn in steps.items():
            start = time.perf_counter()
            step_fn(x, t, ctx, mask)
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def make_step(net: torch.nn.Module, call, optimizer: str = "foreach",
              dtype: torch.dtype | None = None):
    """An AdamW step (autocast to `dtype` unless None) on the flow-matching loss."""
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4, **OPTIMIZER_FLAGS[optimizer])

    def step(x, t, ctx, mask):
        autocast = torch.autocast("cpu", dtype=dtype) if dtype else contextlib.nullcontext()
        with autocast:
            out = call(net, x, t, ctx, mask)
        loss = (out.float() - x).pow(2).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def diffusers_pixart(cfg) -> torch.nn.Module:
    """PixArtTransformer2DModel with the same width, depth, heads and patch size as `cfg`."""
    from diffusers import PixArtTransformer2DModel

    return PixArtTransformer2DModel(
        num_attention_heads=cfg.num_heads, attention_head_dim=cfg.hidden_size // cfg.num_heads,
        in_channels=cfg.in_channels, out_channels=cfg.in_channels, num_layers=cfg.depth,
        sample_size=cfg.input_size, patch_size=cfg.patch_size, cross_attention_dim=cfg.hidden_size,
        caption_channels=cfg.context_dim, norm_type="ada_norm_single",
        use_additional_conditions=False, dropout=0.0)


def diffusers_unet(cfg) -> torch.nn.Module:
    """UNet2DConditionModel with the same levels, channels, attention levels and heads as `cfg`."""
    from diffusers import UNet2DConditionModel

    levels = range(len(cfg.channel_mult))
    attn = set(cfg.attention_levels)
    return UNet2DConditionModel(
        sample_size=cfg.input_size, in_channels=cfg.in_channels, out_channels=cfg.in_channels,
        block_out_channels=tuple(cfg.channels), layers_per_block=cfg.num_res_blocks,
        down_block_types=tuple("CrossAttnDownBlock2D" if i in attn else "DownBlock2D"
                               for i in levels),
        up_block_types=tuple("CrossAttnUpBlock2D" if i in attn else "UpBlock2D"
                             for i in reversed(levels)),
        # diffusers' UNet reads `attention_head_dim` as the number of heads (diffusers#2011)
        cross_attention_dim=cfg.context_dim, attention_head_dim=cfg.num_heads,
        norm_num_groups=cfg.norm_groups,
        transformer_layers_per_block=cfg.transformer_depth, use_linear_projection=True)


def call_ours(net, x, t, ctx, mask):
    pooled = ctx.mean(1) if net.config.pooled_dim else None
    return net(x, t, context=ctx, context_mask=mask, pooled=pooled)


def call_pixart(net, x, t, ctx, mask):
    return net(x, encoder_hidden_states=ctx, timestep=t, encoder_attention_mask=mask.long(),
               added_cond_kwargs={"resolution": None, "aspect_ratio": None}).sample


def call_unet(net, x, t, ctx, mask):
    return net(x, t, encoder_hidden_states=ctx, encoder_attention_mask=mask.long()).sample


TWINS = {"dit": ("PixArtTransformer2DModel", diffusers_pixart, call_pixart),
         "unet": ("UNet2DConditionModel", diffusers_unet, call_unet)}


def train_flops(net, call, batch) -> int:
    """FLOPs of one training step's forward and backward on `batch` (torch's flop counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    from difflab.eval.cost import register_flop_formulas

    register_flop_formulas()  # SDPA's CPU kernel, which torch's counter does not know
    with FlopCounterMode(display=False) as counter:
        call(net, *batch).float().pow(2).mean().backward()
    net.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--config", default=str(ROOT / "configs" / "demo.toml"))
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--tokens", type=int, default=16)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--optimizer", default="foreach", choices=sorted(OPTIMIZER_FLAGS))
    p.add_argument("--override", action="append", default=[], help="config key=value")
    p.add_argument("--precision", default="auto", help="auto, fp32 or bf16")
    args = p.parse_args()
    prec = resolve_precision(args.precision)
    dtype = prec.autocast_dtype
    if args.threads:
        torch.set_num_threads(args.threads)
    train_cfg = load_train_config(args.config, args.override)
    cfg = model_config(train_cfg.model.preset, **train_cfg.model.overrides)
    if cfg.arch not in TWINS:
        raise SystemExit(f"no diffusers twin for {cfg.arch!r}; valid: {', '.join(TWINS)}")
    twin_name, make_twin, call_theirs = TWINS[cfg.arch]
    g = torch.Generator().manual_seed(0)
    B, T, n = args.batch, args.tokens, args.warmup + args.steps
    shape = (B, cfg.in_channels, cfg.input_size, cfg.input_size)
    batches = [(torch.randn(shape, generator=g), torch.rand(B, generator=g) * 1000,
                torch.randn(B, T, cfg.context_dim, generator=g),
                torch.ones(B, T, dtype=torch.bool)) for _ in range(n)]
    torch.manual_seed(0)
    ours, theirs = build_model(cfg), make_twin(cfg)
    flops = {"difflab": train_flops(ours, call_ours, batches[0]),
             "diffusers": train_flops(theirs, call_theirs, batches[0])}
    peak = matmul_peak(dtype or torch.float32)
    sec = time_interleaved({"difflab": make_step(ours, call_ours, args.optimizer, dtype),
                            "diffusers": make_step(theirs, call_theirs, args.optimizer, dtype)},
                           batches, args.warmup)
    rate = {k: flops[k] / sec[k] for k in sec}  # FLOP/s
    params = {k: sum(p.numel() for p in m.parameters()) / 1e6
              for k, m in (("difflab", ours), ("diffusers", theirs))}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {B}, "
          f"AdamW {args.optimizer}, median of {args.steps} interleaved steps, "
          f"{prec.name} ({prec.reason})")
    print(f"{prec.name} matmul peak: {peak / 1e9:.1f} GFLOP/s")
    for name, label in (("difflab", f"difflab {train_cfg.model.preset}"),
                        ("diffusers", f"diffusers {twin_name}")):
        print(f"{label}: {B / sec[name]:.1f} images/s, {params[name]:.2f}M params, "
              f"{flops[name] / B / 1e9:.2f} GFLOP/img per step, {rate[name] / 1e9:.1f} GFLOP/s "
              f"= {rate[name] / peak:.1%} of the {prec.name} matmul peak")
    print(f"difflab / diffusers: images/s {sec['diffusers'] / sec['difflab']:.2f}x, "
          f"FLOP/s {rate['difflab'] / rate['diffusers']:.2f}x")


if __name__ == "__main__":
    main()
