"""`difflab accelerate` checks its options before any model loads: one error line, status 2."""

import pytest

from difflab.cli import run


@pytest.mark.parametrize("args, message", [
    (["--budget", "fd<10%"], "must look like METRIC>=VALUE"),
    (["--budget", "accuracy>=-1pt,speed>=2"], "unknown metric 'speed'"),
    (["--reference", "sampler=euler,stepz=50"], "unknown key candidate.'stepz'"),
    (["--reference", "sampler=nope"], "unknown sampler 'nope'"),
    (["--budget-minutes", "0"], "--budget-minutes"),
    (["--suite", "nope"], "unknown prompt suite 'nope'"),
    (["--calib-images", "1"], "--calib-images"),
])
def test_bad_options_fail_before_the_model_loads(tmp_path, capsys, args, message):
    rc = run(["accelerate", "no-such-model", "--out", str(tmp_path / "o"), *args])
    err = capsys.readouterr().err
    assert rc == 2 and message in err, err
    assert err.count("\n") == 1  # one line


def test_an_existing_output_file_is_refused(tmp_path, capsys):
    (tmp_path / "o").write_text("x")
    assert run(["accelerate", "shapes-base", "--out", str(tmp_path / "o")]) == 2
    assert "exists and is not an empty folder" in capsys.readouterr().err
