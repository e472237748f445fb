"""What every result file records about how it was made: command, code version, checkpoint
hash and config, split, machine and date."""

from __future__ import annotations

import datetime
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

_SOURCE = Path(__file__).resolve().parents[1]  # src/difflab


def code_version() -> str:
    """The git commit of the difflab sources ("+dirty" with uncommitted changes), or the
    package version where the sources are not a git checkout."""
    from difflab import __version__

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(_SOURCE), *args], capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no", "--", "."))
    except (OSError, subprocess.SubprocessError):
        return f"difflab {__version__} (no git)"
    return commit + ("+dirty" if dirty else "")


def command_line() -> str:
    """The command that is running, as typed (module or script and its arguments)."""
    return shlex.join([Path(sys.argv[0]).name or "python", *sys.argv[1:]])


def provenance(split: str, checkpoint: str = "", checkpoint_sha256: str = "",
               config: dict[str, Any] | None = None, command: str | None = None,
               machine: dict[str, Any] | None = None) -> dict[str, Any]:
    """The provenance block of a result file; `machine` defaults to `runtime.machine.run_record`."""
    from difflab.runtime.machine import run_record

    return {
        "command": command if command is not None else command_line(),
        "code_version": code_version(),
        "split": split,
        "checkpoint": checkpoint,
        "checkpoint_sha256": checkpoint_sha256,
        "config": config or {},
        "machine": machine if machine is not None else run_record(),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
    }
