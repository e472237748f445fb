"""Every `difflab` command on tiny models, through `difflab.cli.main` as a user runs it: the
happy path, and a mistake that prints one `error:` line and exits 2."""

from __future__ import annotations

import json
from pathlib import Path

from difflab import cli

CONFIGS = Path(__file__).resolve().parents[2] / "configs"

TINY_GRID = """
baseline = "euler-2"
suite = "single"
max_prompts = 2
seeds_per_prompt = 1
batch_size = 2
timing_repeats = 1
timing_warmup = 0
metrics = ["accuracy"]
strip_images = 2

[[points]]
name = "euler-2"
sampler = "euler"
steps = 2
sample = {precision = "fp32"}

[[points]]
name = "heun-2"
sampler = "heun"
steps = 2
sample = {precision = "fp32"}
"""


def difflab(capsys, monkeypatch, *args: str) -> tuple[int, str, str]:
    """Run `difflab ARGS` in this process: (exit code, stdout, stderr)."""
    monkeypatch.setattr("sys.argv", ["difflab", *map(str, args)])
    try:
        cli.main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err


def user_error(capsys, monkeypatch, *args: str, match: str, usage: bool = False) -> None:
    """`difflab ARGS` fails as a user mistake: exit 2 and, last, one `error:` line naming the
    problem (usage mistakes caught by the argument parser too; `usage` is kept for callers)."""
    code, _, err = difflab(capsys, monkeypatch, *args)
    assert code == 2 and "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines[-1].startswith("error: ") and match in lines[-1], err
    assert sum(ln.startswith("error:") for ln in lines) == 1, err


def test_version_models_samplers_recipes(capsys, monkeypatch):
    from difflab import __version__

    assert difflab(capsys, monkeypatch, "version")[:2] == (0, __version__ + "\n")
    code, out, _ = difflab(capsys, monkeypatch, "models")
    assert code == 0 and "| dit-tiny | dit |" in out
    code, out, _ = difflab(capsys, monkeypatch, "samplers")
    assert code == 0 and "euler" in out and "schedules:" in out
    code, out, _ = difflab(capsys, monkeypatch, "quant-recipes")
    assert code == 0 and "w8a8" in out
    for command in ("version", "models", "samplers", "quant-recipes"):
        user_error(capsys, monkeypatch, command, "extra", match="unexpected extra argument",
                   usage=True)


def test_data_preview(capsys, monkeypatch, tmp_path):
    out = tmp_path / "digits.png"
    code, _, err = difflab(capsys, monkeypatch, "data", "preview", "--world", "digits", "--n", 4,
                           "--size", 8, "--out", out)
    assert code == 0 and out.is_file(), err
    user_error(capsys, monkeypatch, "data", "preview", "--world", "cifar", "--out", out,
               match="cifar")


def test_sample_class_and_unconditional(capsys, monkeypatch, tmp_path, digits_run, uncond_run):
    grid = tmp_path / "grid.png"
    code, out, err = difflab(capsys, monkeypatch, "sample", digits_run.path, "-p", "3", "-p", "8",
                             "--n", 2, "--steps", 2, "--cfg", 2, "--precision", "fp32",
                             "--out", grid)
    assert code == 0 and grid.is_file() and "wrote" in out, err
    code, out, err = difflab(capsys, monkeypatch, "sample", uncond_run.path, "-p", "", "--n", 2,
                             "--steps", 2, "--precision", "fp32", "--out", grid)
    assert code == 0 and "2 images" in out, err
    user_error(capsys, monkeypatch, "sample", digits_run.path, "-p", "eleven", "--steps", 2,
               match="'eleven' is not a class")
    user_error(capsys, monkeypatch, "sample", uncond_run.path, "-p", "a cat", match="''")
    user_error(capsys, monkeypatch, "sample", tmp_path / "nowhere", "-p", "3",
               match="no artefact at")


def test_quantize_then_sample_the_folder(capsys, monkeypatch, tmp_path, digits_run):
    q = tmp_path / "q"
    code, out, err = difflab(capsys, monkeypatch, "quantize", digits_run.path, "--out", q,
                             "--recipe", "w8a8", "--calib-steps", 2)
    assert code == 0 and "(simulated)" in out, err
    assert json.loads((q / "difflab.json").read_text())["kind"] == "quantized"
    grid = tmp_path / "q.png"
    code, out, err = difflab(capsys, monkeypatch, "sample", q, "-p", "5", "--n", 1,
                             "--steps", 2, "--precision", "fp32", "--out", grid)
    assert code == 0 and grid.is_file(), err
    assert "quantization: weights int8, activations int8" in out and "simulated" in out
    user_error(capsys, monkeypatch, "quantize", digits_run.path, "--out", q, "--recipe",
               "w3a3", match="w3a3")
    user_error(capsys, monkeypatch, "quantize", digits_run.path, "--out", q,
               match="exactly one of a recipe name or a config file")


def test_eval_on_a_suite(capsys, monkeypatch, tmp_path, shapes_run):
    out_dir = tmp_path / "eval"
    code, out, err = difflab(capsys, monkeypatch, "eval", shapes_run.path, "--suite", "single",
                             "--steps", 2, "--out", out_dir)
    assert code == 0 and "overall" in out and "FD" in out, err
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert metrics["suite"] == "single" and metrics["n_images"] == 42
    assert metrics["split"] == "dev" and metrics["provenance"]["split"] == "dev"
    prov = metrics["provenance"]
    assert len(prov["checkpoint_sha256"]) == 64 and prov["config"] and prov["machine"]["cpu"]
    assert prov["code_version"] and prov["date"] and "eval" in prov["command"]
    lo, hi = metrics["accuracy_interval"]
    assert lo <= metrics["accuracy"] <= hi and len(metrics["passed"]) == 42
    assert sum(metrics["passed"]) == metrics["n_passed"]
    user_error(capsys, monkeypatch, "eval", shapes_run.path, "--suite", "everything",
               match="unknown prompt suite 'everything'")
    user_error(capsys, monkeypatch, "eval", shapes_run.path, "--suite", "reworded",
               match="test split only")
    user_error(capsys, monkeypatch, "eval", shapes_run.path, "--split", "val",
               match="unknown split 'val'; valid: dev, test")


def test_eval_refuses_prompts_the_model_cannot_take(capsys, monkeypatch, digits_run):
    # a digits model cannot draw the shapes suite: its prompts are not digit classes
    user_error(capsys, monkeypatch, "eval", digits_run.path, "--suite", "single", "--steps", 1,
               match="'a red circle' is not a class")


def test_bench_on_a_tiny_grid(capsys, monkeypatch, tmp_path, shapes_run):
    grid = tmp_path / "grid.toml"
    grid.write_text(TINY_GRID)
    out_dir = tmp_path / "bench"
    code, out, err = difflab(capsys, monkeypatch, "bench", shapes_run.path, "--grid", grid,
                             "--out", out_dir, "--cache-dir", tmp_path / "cache")
    assert code == 0 and "heun-2" in out, err
    result = json.loads((out_dir / "bench.json").read_text())
    assert [p["name"] for p in result["points"]] == ["euler-2", "heun-2"]
    user_error(capsys, monkeypatch, "bench", shapes_run.path, "--grid", tmp_path / "none.toml",
               "--out", out_dir, match="grid file not found")


def test_demo_trains_scores_and_reports(capsys, monkeypatch, tmp_path):
    # The CLI's sampling settings are the demo's own (20 ancestral steps, two seeds per prompt);
    # the happy path runs the same function with two fp32 steps to stay fast.
    from difflab.demo import demo_sampling, run_demo

    quick = ["schedule.steps=2", "schedule.batch_size=4", "run.ckpt_every=2",
             "data.options.length=16", "run.progress=false", "run.precision=fp32",
             "run.log_every=1"]
    out = tmp_path / "demo"
    metrics = run_demo(CONFIGS / "tiny.toml", out, quick, suite="single", seeds_per_prompt=1,
                       sampling=demo_sampling(steps=2, precision="fp32"))
    assert metrics["n_images"] == 42 and metrics["run"]["steps"] == 2
    assert metrics["split"] == metrics["reworded"]["split"] == "test"
    assert metrics["reworded"]["n_images"] == 404 and metrics["fd_floor"] >= 0
    assert metrics["provenance"]["split"] == "test"
    assert len(metrics["provenance"]["checkpoint_sha256"]) == 64
    assert (out / "report.html").is_file() and (out / "metrics.json").is_file()
    user_error(capsys, monkeypatch, "demo", "--config", tmp_path / "none.toml", "--out", out,
               match="config file not found")


def test_train_and_accel_commands(capsys, monkeypatch, tmp_path, text_run):
    run = tmp_path / "run"
    code, out, err = difflab(capsys, monkeypatch, "train", CONFIGS / "tiny.toml", "--out", run,
                             "-o", "schedule.steps=1", "-o", "schedule.batch_size=2",
                             "-o", "run.ckpt_every=1", "-o", "data.options.length=4",
                             "-o", "run.precision=fp32", "-o", "run.progress=false")
    assert code == 0 and f"run folder: {run}" in out, err
    user_error(capsys, monkeypatch, "train", CONFIGS / "tiny.toml", "--out", run,
               "-o", "schedule.steps=1", match="already holds checkpoints")
    code, out, err = difflab(capsys, monkeypatch, "accel", "list")
    assert code == 0 and "teacache:" in out, err
    coeffs = tmp_path / "teacache.json"
    code, out, err = difflab(capsys, monkeypatch, "accel", "calibrate", text_run.path,
                             "--out", coeffs, "--images", 2, "--steps", 3)
    assert code == 0 and json.loads(coeffs.read_text())["coefficients"], err
    user_error(capsys, monkeypatch, "accel", "calibrate", text_run.path, "--out", coeffs,
               "--sampler", "eulr", match="unknown sampler 'eulr'")
