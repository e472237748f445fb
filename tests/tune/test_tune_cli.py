"""`difflab tune` then `difflab sample --adapter` as a user runs them."""

from __future__ import annotations

import json

from cli_helpers import difflab


def test_tune_then_sample_with_the_adapter(tmp_path, capsys, monkeypatch):
    out = tmp_path / "star-lora"
    code, text = difflab(capsys, monkeypatch, "tune", "shapes-base", "--method", "lora",
                         "--concept", "star", "--generate", "4", "--steps", "2",
                         "--batch-size", "2", "--prior-images", "2", "--out", out)
    assert code == 0, text
    assert "tuned lora on 4 images of 'star'" in text
    manifest = json.loads((out / "difflab.json").read_text())
    assert manifest["kind"] == "adapter" and manifest["base"]["path"] == "shapes-base"
    assert {"adapter_config.json", "adapter_model.safetensors"} <= set(manifest["files"])
    grid = tmp_path / "grid.png"
    code, text = difflab(capsys, monkeypatch, "sample", "shapes-base", "--adapter",
                         f"{out}:0.5", "-p", "a red star", "--n", "1", "--steps", "2",
                         "--out", grid)
    assert code == 0, text
    assert "adapters: lora star-lora x0.5" in text and grid.is_file()
    code, text = difflab(capsys, monkeypatch, "sample", str(out), "-p", "a red star", "--n", "1",
                         "--steps", "2", "--out", grid)
    assert code == 0, text
    quant = tmp_path / "w4a4"
    code, text = difflab(capsys, monkeypatch, "quantize", "shapes-base", "--recipe", "w4a4_svd",
                         "--calib-steps", "2", "--out", quant)
    assert code == 0, text
    code, text = difflab(capsys, monkeypatch, "sample", quant, "--adapter", out, "-p",
                         "a red star", "--n", "1", "--steps", "2", "--out", grid)
    assert code == 0, text
    assert "adapters: lora star-lora x1 (joined)" in text


def test_tune_refuses_an_existing_folder(tmp_path, capsys, monkeypatch):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "f").write_text("")
    code, text = difflab(capsys, monkeypatch, "tune", "shapes-base", "--generate", "4",
                         "--out", tmp_path / "x")
    assert code == 2 and text.strip().splitlines()[-1].startswith("error: --out")


def test_tune_names_a_bad_precision_or_loss_weight_in_one_line(tmp_path, capsys, monkeypatch):
    for option, value, message in (("--precision", "fp8", "unknown tuning precision"),
                                   ("--uncond-weight", "-1", "uncond_weight"),
                                   ("--lora-init", "pissa", "unknown lora_init"),
                                   ("--object-sizes", "huge", "unknown object sizes"),
                                   ("--shift", "-2", "shift")):
        code, text = difflab(capsys, monkeypatch, "tune", "shapes-base", "--generate", "4",
                             option, value, "--out", tmp_path / "x")
        last = text.strip().splitlines()[-1]
        assert code == 2 and last.startswith("error:") and message in last, text
        assert not (tmp_path / "x").exists()
    code, text = difflab(capsys, monkeypatch, "tune", "shapes-base", "--images", tmp_path,
                         "--object-sizes", "largest-first", "--out", tmp_path / "x")
    assert code == 2 and "--object-sizes is for rendered images" in text.strip().splitlines()[-1]


def test_tune_takes_a_start_draws_layer_ranks_and_a_schedule(tmp_path, capsys, monkeypatch):
    out = tmp_path / "star-lora"
    code, text = difflab(capsys, monkeypatch, "tune", "shapes-base", "--generate", "4",
                         "--steps", "2", "--batch-size", "2", "--prior-images", "2", "--rank",
                         "1", "--lora-init", "gradient", "--stratified", "--rank-pattern",
                         r"cross\.kv=2", "--schedule", "cosine", "--shift", "3",
                         "--object-sizes", "largest-first", "--out", out)
    assert code == 0, text
    tune = json.loads((out / "difflab.json").read_text())["config"]["tune"]
    assert tune["lora_init"] == "gradient" and tune["stratified"] is True
    assert tune["rank_pattern"] == r"cross\.kv=2" and tune["schedule"] == "cosine"
    assert tune["shift"] == 3.0 and tune["object_sizes"] == "largest-first"
    peft_config = json.loads((out / "adapter_config.json").read_text())
    assert peft_config["r"] == 1 and len(peft_config["rank_pattern"]) == 3
    assert all(k.endswith(r"cross\.kv") and r == 2
               for k, r in peft_config["rank_pattern"].items())
