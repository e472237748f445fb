"""SIGKILL at any moment + --resume gives the same weights, bit for bit, as an uninterrupted run."""

import os
import signal
import subprocess
import sys
import time

import torch
from tiny_parts import HERE_SCRIPT, tiny_config, tiny_parts

from difflab.io import load_tensors
from difflab.train.checkpoint import latest_checkpoint
from difflab.train.trainer import run_training

STEPS = 60


def _launch(out, *extra):
    args = [sys.executable, str(HERE_SCRIPT), str(out), f"schedule.steps={STEPS}", *extra]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_sigkill_then_resume_is_bit_identical(tmp_path, one_thread):
    killed = tmp_path / "killed"
    proc = _launch(killed)
    deadline = time.monotonic() + 120
    while not (killed / "latest").exists():  # wait for the first complete checkpoint
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline
        time.sleep(0.002)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    stopped_at = latest_checkpoint(killed)
    assert stopped_at is not None and stopped_at.name != f"step_{STEPS:06d}"

    resumed = _launch(killed, "--resume")
    _, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err.decode()

    reference = tmp_path / "reference"
    run_training(tiny_config(str(reference), **{"schedule.steps": STEPS}), tiny_parts())
    for name in ("model.safetensors", "train_state.safetensors"):
        a = load_tensors(killed / f"step_{STEPS:06d}" / name)
        b = load_tensors(reference / f"step_{STEPS:06d}" / name)
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), f"{name}:{k} differs after resume"
