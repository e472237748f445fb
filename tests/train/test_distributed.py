"""2 processes under torchrun (gloo) with global batch B match 1 process with batch B."""

import subprocess
import sys

import torch
from tiny_parts import HERE_SCRIPT, tiny_config, tiny_parts

from difflab.io import load_tensors
from difflab.train.trainer import run_training

STEPS = 4


def test_two_process_ddp_matches_one_process(tmp_path, one_thread):
    overrides = [f"schedule.steps={STEPS}", f"run.ckpt_every={STEPS}", "schedule.accumulation=2"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(HERE_SCRIPT), str(tmp_path / "ddp"), *overrides]
    done = subprocess.run(cmd, capture_output=True, timeout=180)
    assert done.returncode == 0, done.stderr.decode()[-3000:]

    single = tmp_path / "single"
    run_training(tiny_config(str(single), **{"schedule.steps": STEPS, "run.ckpt_every": STEPS}),
                 tiny_parts())
    a = load_tensors(tmp_path / "ddp" / f"step_{STEPS:06d}" / "train_state.safetensors")
    b = load_tensors(single / f"step_{STEPS:06d}" / "train_state.safetensors")
    checked = 0
    for k in b:
        if k.startswith(("model/", "ema/")) and b[k].is_floating_point():
            torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-5)
            checked += 1
    assert checked >= 10
    # Rank 0 alone wrote the log: one line per step.
    assert len((tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()) == STEPS
