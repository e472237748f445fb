"""The error contract: user mistakes are one `error:` line and exit 2, bugs one line pointing at
a saved traceback and exit 1; files are UTF-8 or refused; limits come from one place."""

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from difflab import cli
from difflab.config import ConfigError, MissingFileError, read_text_file, read_toml
from difflab.limits import (
    MAX_SEED,
    Limits,
    check_prompt,
    check_seed,
    get_limits,
    image_format,
    override_limits,
)

ROOT = Path(__file__).resolve().parents[2]


def _run(argv, capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(argv)
    out, err = capsys.readouterr()
    return done.value.code, out, err


def test_a_bug_is_one_line_and_its_traceback_goes_to_the_cache_dir(tmp_path, monkeypatch,
                                                                     capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("DIFFLAB_TRACEBACK", raising=False)

    def broken() -> None:
        raise ZeroDivisionError("an internal mistake")

    monkeypatch.setattr("difflab.models.presets_table", broken)
    code, out, err = _run(["models"], capsys)
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err
    assert lines[0].startswith("difflab hit an internal error (ZeroDivisionError: an internal "
                               "mistake); please report it with ")
    report = Path(lines[0].rsplit(" ", 1)[1])
    assert report.parent == tmp_path / "xdg" / "difflab" and report.name.startswith("crash-")
    text = report.read_text()
    assert "Traceback" in text and "ZeroDivisionError" in text and "difflab models" in text


def test_traceback_env_var_shows_the_bug(monkeypatch):
    monkeypatch.setenv("DIFFLAB_TRACEBACK", "1")
    monkeypatch.setattr("difflab.models.presets_table", lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        cli.main(["models"])


def test_user_error_and_success_exit_codes(capsys):
    code, _, err = _run(["sample", "nowhere", "-p", "a", "--n", "0"], capsys)
    assert code == 2 and err == "error: --n = 0 is out of range; valid: >= 1\n"
    code, out, _ = _run(["version"], capsys)
    assert code == 0 and out.strip()
    code, out, _ = _run(["sample", "--help"], capsys)
    assert code == 0 and "--prompt" in out


def test_the_installed_entry_point_prints_one_error_line(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "XDG_CACHE_HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "difflab.cli", "train", "nope.toml"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr == "error: config file not found: nope.toml\n"


# ---- files -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("data", "match"), [
    ("a = 1\n".encode("utf-16"), "is UTF-16 text; save it as UTF-8"),
    ("a = 'caf\xe9'\n".encode("latin-1"), r"is not UTF-8 text \(byte 8: b'\\xe9'\)"),
    (bytes(range(256)), "is not UTF-8 text"),
    (b"a = 1\x00\n", "holds NUL bytes"),
])
def test_non_utf8_files_are_refused_by_name(tmp_path, data, match):
    path = tmp_path / "f.toml"
    path.write_bytes(data)
    with pytest.raises(ConfigError, match=f"grid file {path} {match}"):
        read_text_file(path, "grid file")


def test_text_file_reader(tmp_path):
    path = tmp_path / "f.toml"
    path.write_bytes("\ufeffa = 'é'\n".encode())
    assert read_toml(path, "config file") == {"a": "é"}  # a UTF-8 BOM is fine
    with pytest.raises(MissingFileError, match="config file not found"):
        read_text_file(tmp_path / "none.toml", "config file")
    with pytest.raises(ConfigError, match="is a folder"):
        read_text_file(tmp_path, "config file")
    path.write_text("a = [\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        read_toml(path, "config file")


# ---- limits and value checks -------------------------------------------------------------------


def test_limits_come_from_defaults_env_and_overrides(monkeypatch):
    for key in [k for k in os.environ if k.startswith("DIFFLAB_")]:
        monkeypatch.delenv(key)
    assert get_limits() == Limits()
    monkeypatch.setenv("DIFFLAB_MAX_IMAGES", "12")
    assert get_limits().max_images == 12
    with override_limits(max_images=3) as lim:
        assert lim.max_images == 3 and get_limits().max_images == 3
    assert get_limits().max_images == 12
    monkeypatch.setenv("DIFFLAB_MAX_IMAGES", "many")
    with pytest.raises(ConfigError, match="DIFFLAB_MAX_IMAGES='many' must be a positive integer"):
        get_limits()
    monkeypatch.setenv("DIFFLAB_MAX_IMAGES", "0")
    with pytest.raises(ConfigError, match="limit max_images = 0 must be a positive number"):
        get_limits()
    with pytest.raises(ConfigError, match="unknown limit 'max_cats'"), \
            override_limits(max_cats=1):
        pass


def test_library_and_cli_share_the_checks():
    from difflab.models import DiTConfig, UNetConfig
    from difflab.runtime import SampleConfig
    from difflab.train.config import OptimSection, RunSection, ScheduleSection, TextSection

    with pytest.raises(ConfigError, match="depth = 0 is out of range; valid: >= 1"):
        DiTConfig(depth=0)
    with pytest.raises(ConfigError, match=r"channel_mult\[1\] = 0"):
        UNetConfig(channel_mult=(1, 0))
    for bad in (math.nan, math.inf, -1e30):
        with pytest.raises(ConfigError, match="cfg = "):
            SampleConfig(cfg=bad)
    with override_limits(max_sample_steps=10):
        with pytest.raises(ConfigError, match="DIFFLAB_MAX_SAMPLE_STEPS"):
            SampleConfig(steps=11)
    with pytest.raises(ConfigError, match="optim.lr = nan must be a finite number"):
        OptimSection(lr=math.nan)
    with pytest.raises(ConfigError, match=r"optim.lr = -0.1 is out of range; valid: \(0.0, 1.0\]"):
        OptimSection(lr=-0.1)
    with pytest.raises(ConfigError, match="text.max_length = 0"):
        TextSection(max_length=0)
    with pytest.raises(ConfigError, match="run.seed = -1"):
        RunSection(seed=-1)
    with pytest.raises(ConfigError, match="schedule.accumulation = 0"):
        ScheduleSection(accumulation=0)


def test_prompt_seed_and_image_checks(tmp_path):
    assert check_prompt("p", "a red circle") == "a red circle"
    assert check_prompt("p", "", allow_empty=True) == ""
    for bad, match in [("   ", "no visible text"), ("", "no visible text"),
                       ("a\x01b", r"control character U\+0001 at position 1"),
                       ("x" * 2000, "length of p = 2000")]:
        with pytest.raises(ConfigError, match=match):
            check_prompt("p", bad)
    assert check_seed("s", MAX_SEED) == MAX_SEED
    with pytest.raises(ConfigError, match="out of range"):
        check_seed("s", MAX_SEED, count=2)
    assert image_format("o", "a.png") == "PNG" and image_format("o", "a.JPG") == "JPEG"
    for bad in ("a.xyz", "noext", str(tmp_path)):
        with pytest.raises(ConfigError, match="--out|o = "):
            image_format("o", bad)


def test_the_limits_table_in_the_docs_matches_the_code():
    import dataclasses

    from difflab.limits import env_name

    rows = {}
    for line in (ROOT / "docs" / "troubleshooting.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("max_"):
            rows[cells[0]] = (cells[1], cells[2].strip("`"))
    expected = {f.name: (str(f.default), env_name(f.name)) for f in dataclasses.fields(Limits)}
    assert rows == expected
