"""The tiny training, sampling, caching and int8 paths on CUDA (skipped where no GPU is visible)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device visible")


def _tiny_parts_module():
    path = Path(__file__).parent / "train" / "tiny_parts.py"
    spec = importlib.util.spec_from_file_location("gpu_tiny_parts", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_precision_auto_on_cuda():
    from difflab.runtime.machine import resolve_precision

    p = resolve_precision("auto", "cuda")
    assert p.name == ("bf16" if torch.cuda.is_bf16_supported() else "fp32")


def test_tiny_training_on_cuda_learns_and_saves(tmp_path):
    import json

    from difflab.train.trainer import run_training

    tp = _tiny_parts_module()
    cfg = tp.tiny_config(str(tmp_path / "run"), **{"run.device": "cuda", "schedule.steps": 30,
                                                    "run.precision": "auto"})
    run = run_training(cfg, tp.tiny_parts())
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert all(map(lambda v: v == v, losses)) and losses[-1] < losses[0]
    assert (run / "latest").is_file()


def test_sampling_on_cuda_is_deterministic_and_batch_independent(tiny_pipeline):
    from difflab.runtime import SampleConfig

    pipe = tiny_pipeline
    pipe.net.to("cuda")
    config = SampleConfig(sampler="euler_ancestral", steps=4, cfg=2.0, precision="fp32")
    a = pipe.generate(["a red circle", "a blue square"], [0, 1], config)
    b = pipe.generate(["a red circle", "a blue square"], [0, 1], config)
    alone = pipe.generate(["a blue square"], [1], config)
    assert a.shape == (2, 16, 16, 3) and (a == b).all()
    assert (abs(alone[0].astype(int) - a[1].astype(int)) <= 1).all()


def test_cache_hook_on_cuda_removes_bit_identically(tiny_pipeline):
    from difflab.accel import apply_accel
    from difflab.runtime import SampleConfig

    pipe = tiny_pipeline
    pipe.net.to("cuda")
    config = SampleConfig(steps=6, precision="fp32")
    before = pipe.generate(["a red circle"], [0], config)
    with apply_accel(pipe.net, "deepcache", {"interval": 2}):
        cached = pipe.generate(["a red circle"], [0], config)
    assert cached.shape == before.shape
    assert (pipe.generate(["a red circle"], [0], config) == before).all()


@torch.no_grad()
def test_real_int8_on_cuda_matches_simulated():
    import copy

    from difflab.quant.config import QuantConfig
    from difflab.quant.transform import quantize

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.GELU(),
                              torch.nn.Linear(128, 32)).cuda()
    x = torch.randn(40, 64, device="cuda")
    sim, real = copy.deepcopy(net), copy.deepcopy(net)
    h_sim = quantize(sim, QuantConfig())
    h_real = quantize(real, QuantConfig(execution="auto"))
    assert (h_sim.execution, h_real.execution) == ("simulated", "real")
    y_sim, y_real = sim(x), real(x)
    assert torch.allclose(y_real, y_sim, rtol=1e-3, atol=1e-4 * float(y_sim.abs().max()))
