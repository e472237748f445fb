"""Run the `difflab` command in-process, as a user's shell would: (exit status, output)."""

from __future__ import annotations

from difflab import cli


def difflab(capsys, monkeypatch, *args: str) -> tuple[int, str]:
    monkeypatch.setattr("sys.argv", ["difflab", *map(str, args)])
    try:
        cli.main()
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    out = capsys.readouterr()
    return code, out.out + out.err
