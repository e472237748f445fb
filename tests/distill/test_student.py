"""Student folders from shapes-base: the manifest round-trips, `difflab sample DIR` uses the
student's own sampler and steps, a killed run resumes to the same student, bad input is one
line. Runs are a few iterations of batch 2: what is checked is the plumbing, not quality."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from difflab.cli import run as cli
from difflab.config import ConfigError
from difflab.distill import fit
from difflab.distill.checkpoint import work_folder
from difflab.distill.commands import distill
from difflab.distill.fit import DistillConfig
from difflab.runtime import load, read_manifest
from difflab.runtime.artefacts import sha256_file

BASE = "shapes-base"
TINY = dict(batch_size=2, iterations=2, budget_minutes=10.0, ckpt_every=1)


@pytest.fixture(scope="module")
def progressive(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("student") / "prog"
    config = DistillConfig(method="progressive", steps=2, teacher_steps=4, **TINY)
    distill(BASE, config, out, progress=False)
    return out


def test_the_student_manifest_round_trips(progressive):
    manifest = read_manifest(progressive)
    base = load(BASE)
    assert manifest.kind == "student"
    assert manifest.base["path"] == BASE
    assert manifest.base["sha256"] == sha256_file(Path(base.source) / "model.safetensors")
    section = manifest.config["distill"]
    assert (section["method"], section["sampler"], section["steps"], section["guidance"]) == \
        ("progressive", "euler", 2, 3.0)
    assert manifest.metrics["phases"] == {"round 4->2": 2}
    assert manifest.metrics["teacher_evaluations"] == 2 * 2 * 2  # 2 its x 2 images x 2 steps
    pipe = load(progressive)
    assert pipe.kind == "student" and pipe.sample_defaults == {"sampler": "euler", "steps": 2,
                                                               "cfg": 1.0}
    assert "guidance 3 folded in" in pipe.labels["student"]
    # the student's weights are not the teacher's, and they load back exactly
    moved = [not torch.equal(a, b) for a, b in zip(pipe.net.state_dict().values(),
                                                    base.net.state_dict().values(), strict=True)]
    assert any(moved)
    config = pipe.default_config()
    assert (config.sampler, config.steps, config.cfg) == ("euler", 2, 1.0)
    assert pipe.default_config(steps=4).steps == 4  # a given field wins over the student's


def test_difflab_sample_uses_the_students_sampler_and_steps(progressive, tmp_path, capsys):
    out = tmp_path / "grid.png"
    assert cli(["sample", str(progressive), "-p", "a red circle", "--n", "2",
                "--out", str(out)]) == 0
    assert "(2 images, euler x2, cfg 1.0)" in capsys.readouterr().out
    assert cli(["sample", str(progressive), "-p", "a red circle", "--n", "2", "--steps", "3",
                "--out", str(out)]) == 0
    assert "euler x3" in capsys.readouterr().out
    assert cli(["sample", BASE, "-p", "a red circle", "--n", "1", "--steps", "2",
                "--out", str(out)]) == 0
    assert "euler x2, cfg 1.0" in capsys.readouterr().out  # a checkpoint: the stock defaults


def test_difflab_eval_uses_the_students_sampler_and_steps(progressive, tmp_path):
    import json

    out = tmp_path / "eval"
    assert cli(["eval", str(progressive), "--suite", "heldout", "--out", str(out)]) == 0
    used = json.loads((out / "metrics.json").read_text())["sample_config"]
    assert (used["sampler"], used["steps"], used["cfg"]) == ("euler", 2, 1.0)


def test_a_damaged_student_is_refused(progressive, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(progressive, copy)
    with open(copy / "model.safetensors", "r+b") as f:
        f.seek(200)
        f.write(b"\0\0\0\0")
    with pytest.raises(ConfigError, match="does not match"):
        load(copy)


@pytest.mark.parametrize("method", ["lcm", "dmd"])
def test_a_killed_run_resumes_to_the_same_student(method, tmp_path, monkeypatch):
    extra = {"grid": 4, "skip": 1} if method == "lcm" else {"fake_updates": 2}
    config = DistillConfig(method=method, steps=2, **extra, **{**TINY, "iterations": 4,
                                                               "ckpt_every": 2})
    whole = tmp_path / "whole"
    distill(BASE, config, whole, progress=False)

    calls = {"n": 0}
    original = fit.Run.loss

    def dies_on_the_fourth(self, gen):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return original(self, gen)

    cut = tmp_path / "cut"
    monkeypatch.setattr(fit.Run, "loss", dies_on_the_fourth)
    with pytest.raises(KeyboardInterrupt):
        distill(BASE, config, cut, progress=False)
    monkeypatch.setattr(fit.Run, "loss", original)
    assert not cut.exists() and (work_folder(cut) / "state.safetensors").is_file()
    with pytest.raises(ConfigError, match="--resume"):
        distill(BASE, config, cut, progress=False)
    with pytest.raises(ConfigError, match="other settings"):
        distill(BASE, DistillConfig(**{**config.__dict__, "lr": 1e-3}), cut, resume=True,
                progress=False)
    distill(BASE, config, cut, resume=True, progress=False)
    assert not work_folder(cut).exists()
    a, b = load(whole), load(cut)
    for (name, x), y in zip(a.net.state_dict().items(), b.net.state_dict().values(),
                            strict=True):
        assert torch.equal(x, y), name
    ma, mb = read_manifest(whole).metrics, read_manifest(cut).metrics
    assert ma["teacher_evaluations"] == mb["teacher_evaluations"] == 4 * 2
    prompts, seeds = ["a blue square"], [5]
    np.testing.assert_array_equal(a.generate(prompts, seeds, a.default_config()),
                                  b.generate(prompts, seeds, b.default_config()))


def test_reflow_pairs_come_from_the_teacher(tmp_path):
    config = DistillConfig(method="reflow", steps=1, pairs=2, pair_steps=2, **TINY)
    out = tmp_path / "reflow"
    distill(BASE, config, out, progress=False)
    m = read_manifest(out).metrics
    assert m["phases"] == {"pairs": 1, "reflow": 2, "one-step": 2}
    assert m["teacher_evaluations"] == 2 * 2  # two pairs of two Euler steps
    assert load(out).sample_defaults["steps"] == 1


@pytest.mark.parametrize("args, message", [
    (["--method", "dmd2"], "unknown distillation method 'dmd2'"),
    (["--method", "progressive", "--steps", "4", "--teacher-steps", "12"], "power of 2"),
    (["--steps", "0"], "steps"),
])
def test_bad_settings_are_one_line_errors(args, message, tmp_path, capsys):
    assert cli(["distill", BASE, *args, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_an_existing_out_is_refused(tmp_path, capsys):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "f").write_text("")
    assert cli(["distill", BASE, "--out", str(tmp_path / "x")]) == 2
    assert "not an empty folder" in capsys.readouterr().err

