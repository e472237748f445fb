"""Faults around a training run: a second process on the same run folder, a failed checkpoint
write (disk full, permission denied), a kill between the steps of a save."""

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_parts import TinyNet, tiny_config, tiny_parts

from difflab.config import ConfigError, StorageError
from difflab.train import checkpoint as ckpt
from difflab.train.runlock import RunLockedError, run_lock
from difflab.train.trainer import run_training

ROOT = Path(__file__).resolve().parents[2]


def test_second_process_on_a_locked_run_folder_is_refused(tmp_path):
    run = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from difflab.train.runlock import run_lock\n"
         "with run_lock(sys.argv[1]):\n    print('locked', flush=True); time.sleep(60)",
         str(run)], stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    try:
        assert holder.stdout.readline().strip() == b"locked"
        with pytest.raises(RunLockedError, match=f"in use by another difflab process "
                                                 f"\\(PID {holder.pid}\\)"):
            run_training(tiny_config(str(run)), tiny_parts())
        assert not list(run.glob("step_*")), "nothing was trained"
    finally:
        holder.kill()
        holder.wait()
    run_training(tiny_config(str(run), **{"schedule.steps": 3}), tiny_parts())  # lock released
    assert ckpt.latest_checkpoint(run).name == "step_000003"


def test_lock_is_released_on_exit_and_on_error(tmp_path):
    with run_lock(tmp_path / "r"):
        pass
    with pytest.raises(ValueError), run_lock(tmp_path / "r"):
        raise ValueError("boom")
    with run_lock(tmp_path / "r") as path:
        assert path.read_text().strip() == str(os.getpid())


def _failing_write(error: OSError, fail_on: str):
    """A Path.write_bytes that fails for files named `fail_on` (a patched write, as the disk
    would fail it)."""
    original = Path.write_bytes

    def write_bytes(self: Path, data: bytes) -> int:
        if self.name.startswith(f".{fail_on}."):  # atomic_write's temporary file
            raise error
        return original(self, data)

    return write_bytes


@pytest.mark.parametrize(("error", "says"), [
    (OSError(errno.ENOSPC, "No space left on device"), "the disk is full"),
    (PermissionError(errno.EACCES, "Permission denied"), "permission denied"),
])
def test_failed_checkpoint_write_keeps_the_last_good_one(tmp_path, monkeypatch, error, says):
    run = tmp_path / "run"
    run_training(tiny_config(str(run), **{"schedule.steps": 3}), tiny_parts())
    before = {p.name: p.read_bytes() for p in (run / "step_000003").iterdir()}
    monkeypatch.setattr(Path, "write_bytes", _failing_write(error, "train_state.safetensors"))
    cfg = tiny_config(str(run), **{"schedule.steps": 6})
    with pytest.raises(StorageError) as info:
        run_training(cfg, tiny_parts(), resume=True)
    message = str(info.value)
    assert "\n" not in message
    assert "checkpoint step_000006 not saved" in message and says in message
    assert "the last good checkpoint step_000003 is intact" in message
    assert isinstance(info.value, ConfigError)  # the CLI prints it as one error line
    monkeypatch.undo()
    assert ckpt.latest_checkpoint(run).name == "step_000003"
    assert {p.name: p.read_bytes() for p in (run / "step_000003").iterdir()} == before
    assert not list(run.glob(".tmp-*")) and not (run / "step_000006").exists()
    ckpt.load_checkpoint(run, build=lambda _: TinyNet())
    run_training(cfg, tiny_parts(), resume=True)  # space is back: the run continues
    assert ckpt.latest_checkpoint(run).name == "step_000006"


def test_failed_log_write_is_one_storage_error(tmp_path, monkeypatch):
    import builtins

    original = builtins.open

    def full_disk_open(file, mode="r", *args, **kwargs):
        if str(file).endswith("metrics.jsonl") and "a" in mode:
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", full_disk_open)
    with pytest.raises(StorageError, match="metrics.jsonl: the disk is full"):
        run_training(tiny_config(str(tmp_path / "run")), tiny_parts())


def test_latest_pointing_at_a_vanished_folder_falls_back(tmp_path):
    # A kill between moving an old copy of a step aside and renaming the new one into place
    # leaves `latest` naming a folder that is not there; the newest complete one is used.
    run = tmp_path / "run"
    run_training(tiny_config(str(run), **{"schedule.steps": 6, "run.keep_last": 3}),
                 tiny_parts())
    os.replace(run / "step_000006", run / ".old-step_000006")
    assert ckpt.latest_checkpoint(run).name == "step_000003"
    run_training(tiny_config(str(run), **{"schedule.steps": 6, "run.keep_last": 3}),
                 tiny_parts(), resume=True)
    assert ckpt.latest_checkpoint(run).name == "step_000006"
    assert not (run / ".old-step_000006").exists()


def test_cut_log_line_is_dropped_on_resume(tmp_path):
    run = tmp_path / "run"
    run_training(tiny_config(str(run), **{"schedule.steps": 3}), tiny_parts())
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 4, "lo')  # a kill in the middle of a write
    run_training(tiny_config(str(run), **{"schedule.steps": 6}), tiny_parts(), resume=True)
    import json

    steps = [json.loads(ln)["step"] for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]
