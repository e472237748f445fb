"""One training process per run folder: an exclusive `fcntl.flock` on `run_dir/.lock`."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from difflab.config import ConfigError, storage_error

LOCK_NAME = ".lock"


class RunLockedError(ConfigError):
    """Another process holds the run folder's lock."""


def check_unlocked(run_dir: str | Path) -> None:
    """Raise RunLockedError now if another process holds `run_dir`'s lock (an early check
    before slow set-up; `run_lock` is what actually excludes others)."""
    path = Path(run_dir) / LOCK_NAME
    if not path.is_file():
        return
    with run_lock(run_dir):
        pass


@contextlib.contextmanager
def run_lock(run_dir: str | Path) -> Iterator[Path]:
    """Hold the run folder's lock for the `with` block; the file records the holder's PID.

    The operating system drops the lock when the process exits in any way (kill -9 included),
    so a stale `.lock` file never blocks a later run."""
    run_dir = Path(run_dir)
    path = run_dir / LOCK_NAME
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise storage_error(e, str(path)) from e
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise RunLockedError(f"run folder {run_dir} is in use by another difflab process "
                             f"(PID {holder}); wait for it to finish or choose another "
                             "--out") from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield path
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
