"""Bug reports: an unexpected exception's traceback goes to a file, never onto the terminal."""

from __future__ import annotations

import datetime
import os
import platform
import sys
import traceback
from pathlib import Path


def cache_dir() -> Path:
    """difflab's cache folder: `$XDG_CACHE_HOME/difflab`, else `~/.cache/difflab`."""
    base = os.environ.get("XDG_CACHE_HOME", "").strip()
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".cache"
    return root / "difflab"


def write_crash_report(exc: BaseException, argv: list[str] | None = None) -> Path:
    """Write the traceback of `exc` with the command line and versions; returns the file."""
    from difflab import __version__

    now = datetime.datetime.now()
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"crash-{now:%Y%m%d-%H%M%S}-{os.getpid()}.txt"
    lines = [
        f"difflab {__version__}, Python {platform.python_version()}, {platform.platform()}",
        f"time: {now.isoformat(timespec='seconds')}",
        f"command: {' '.join(argv if argv is not None else sys.argv)}",
        "",
        *traceback.format_exception(type(exc), exc, exc.__traceback__),
    ]
    path.write_text("\n".join(line.rstrip("\n") for line in lines) + "\n")
    return path


def report_bug(exc: BaseException, argv: list[str] | None = None) -> str:
    """The one line the CLI prints for a bug, after saving its traceback where it says."""
    summary = f"{type(exc).__name__}: {exc}".splitlines()[0][:160]
    try:
        path = write_crash_report(exc, argv)
    except OSError as e:
        return (f"difflab hit an internal error ({summary}) and could not save its traceback "
                f"({e.strerror or e}); rerun with DIFFLAB_TRACEBACK=1 and please report it")
    return f"difflab hit an internal error ({summary}); please report it with {path}"
