"""kill -9 of a real `difflab train` at seeded random moments, then --resume: every checkpoint
left on disk loads, and the final weights equal an uninterrupted run's bit for bit."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from difflab import cli
from difflab.io import load_tensors
from difflab.train.checkpoint import latest_checkpoint, load_checkpoint, read_state

ROOT = Path(__file__).resolve().parents[2]
STEPS = 160
KILLS = 4
CONFIG = f"""
[model]
preset = "dit-tiny"

[model.overrides]
input_size = 16
patch_size = 4
hidden_size = 32
depth = 1
num_heads = 2
num_classes = 48

[data]
name = "shapes"

[data.options]
size = 16
max_objects = 1
kinds = ["single"]
conditioning = "class"
length = 256

[text]
encoder = "none"

[schedule]
steps = {STEPS}
batch_size = 16
warmup_steps = 2

[optim]
lr = 1e-3

[ema]
decay = 0.9

[run]
precision = "fp32"
device = "cpu"
ckpt_every = 3
keep_last = 2
log_every = 1
progress = false
"""


def _launch(config: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "difflab.cli", "train", str(config), "--out", str(out),
         "--resume"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


def _mtime(path: Path) -> int:
    return path.stat().st_mtime_ns if path.exists() else 0


def _kill_at_random_moment(proc: subprocess.Popen, run: Path, rng: random.Random) -> bool:
    """Wait until this process has reached the training loop (it touches metrics.jsonl), then
    a random delay; kill -9 unless it finished first. Returns whether it was killed."""
    log, before = run / "metrics.jsonl", _mtime(run / "metrics.jsonl")
    deadline = time.monotonic() + 30
    while _mtime(log) == before and proc.poll() is None:
        assert time.monotonic() < deadline, "the training never started"
        time.sleep(0.005)
    time.sleep(rng.uniform(0.0, 0.8))
    if proc.poll() is not None:
        return False
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return True


def _assert_loadable(run: Path) -> None:
    """Every step_* folder and the `latest` pointer resolve to complete, loadable checkpoints."""
    for folder in sorted(run.glob("step_*")):
        read_state(folder)
        load_checkpoint(folder)
    if (run / "latest").exists():
        assert latest_checkpoint(run) is not None


@pytest.mark.slow
def test_random_kills_then_resume_match_an_uninterrupted_run(tmp_path, one_thread):
    config = tmp_path / "tiny.toml"
    config.write_text(CONFIG)
    rng = random.Random(20240611)
    killed_run = tmp_path / "killed"
    kills = 0
    for _ in range(KILLS):
        proc = _launch(config, killed_run)
        kills += _kill_at_random_moment(proc, killed_run, rng)
        _assert_loadable(killed_run)
    assert kills >= KILLS - 1, "most runs finished before their kill: the run is too short"
    final = _launch(config, killed_run)
    _, err = final.communicate(timeout=600)  # a hang guard, not a speed check
    assert final.returncode == 0, err.decode()[-2000:]
    _assert_loadable(killed_run)

    reference = tmp_path / "reference"
    with pytest.raises(SystemExit) as done:
        cli.main(["train", str(config), "--out", str(reference)])
    assert done.value.code == 0
    step = f"step_{STEPS:06d}"
    for name in ("model.safetensors", "train_state.safetensors"):
        a = load_tensors(killed_run / step / name)
        b = load_tensors(reference / step / name)
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), f"{name}:{k} differs after {kills} kills"
