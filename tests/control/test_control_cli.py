"""Sampling under control on the shipped base, and the CLI as a user runs it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cli_helpers import difflab
from difflab.control.controlnet import ControlNet, apply_controlnet
from difflab.control.guidance import GuidanceConfig
from difflab.control.layout import Layout
from difflab.control.sampling import generate_controlled
from difflab.control.train import apply_control, build_adapter
from difflab.runtime import SampleConfig, load

PROMPT = "a red circle to the left of a blue square"
LAYOUT = {"prompt": PROMPT, "objects": [{"phrase": "red circle", "box": [0.05, 0.3, 0.45, 0.7]},
                                        {"phrase": "blue square", "box": [0.55, 0.3, 0.95, 0.7]}]}
CONFIG = SampleConfig(steps=2, cfg=2.0, precision="fp32")


@pytest.fixture(scope="module")
def pipe():
    return load("shapes-base")


def test_controlled_sampling_is_the_base_when_nothing_controls_it(pipe):
    lay = Layout(PROMPT, ("red circle", "blue square"), ((0.05, 0.3, 0.45, 0.7),
                                                        (0.55, 0.3, 0.95, 0.7)))
    base = pipe.generate([PROMPT] * 2, [0, 1], CONFIG)
    assert np.array_equal(generate_controlled(pipe, [lay] * 2, [0, 1], CONFIG), base)
    with apply_controlnet(pipe.net, ControlNet(pipe.net)) as handle:  # zero-initialised
        assert np.array_equal(generate_controlled(pipe, [lay] * 2, [0, 1], CONFIG,
                                                  control=handle), base)
    for method in ("t2i-adapter", "gligen"):  # fresh: zero projections, closed gates
        with apply_control(pipe, build_adapter(method, pipe)) as handle:
            assert np.array_equal(generate_controlled(pipe, [lay] * 2, [0, 1], CONFIG,
                                                      control=handle), base)
    assert np.array_equal(pipe.generate([PROMPT] * 2, [0, 1], CONFIG), base)  # removed
    for method in ("box", "attend-excite"):
        guided = generate_controlled(pipe, [lay] * 2, [0, 1], CONFIG,
                                     GuidanceConfig(method, scale=0.5, fraction=1.0))
        assert guided.shape == base.shape and not np.array_equal(guided, base)


@pytest.mark.parametrize("method", ["controlnet", "controlnet-xs", "t2i-adapter", "gligen"])
def test_train_an_adapter_then_sample_with_a_layout(tmp_path, capsys, monkeypatch, method):
    layout = tmp_path / "layout.json"
    layout.write_text(json.dumps(LAYOUT))
    out = tmp_path / "cn"
    code, text = difflab(capsys, monkeypatch, "control", "train", "shapes-base", "--method",
                         method, "--steps", "2", "--batch-size", "2", "--out", out)
    assert code == 0, text
    manifest = json.loads((out / "difflab.json").read_text())
    assert manifest["kind"] == "control" and manifest["metrics"]["steps_done"] == 2
    assert manifest["config"]["method"] == method
    # GLIGEN's gate openings, the diagnostic of whether it learned, are printed and kept
    assert ("gates |tanh(gamma)|" in text) == (method == "gligen")
    assert ("gates" in manifest["metrics"]) == (method == "gligen")
    grid = tmp_path / "grid.png"
    guidance = [["--box-guidance"], ["--attend-excite"]] if method == "controlnet" else []
    for flags in (["--control", str(out)], *guidance):
        code, text = difflab(capsys, monkeypatch, "sample", "shapes-base", "--layout", layout,
                             "--n", "1", "--steps", "2", *flags, "--out", grid)
        assert code == 0, text
        assert "2 boxes" in text and grid.is_file()


def test_gligen_trains_without_positions_on_request_and_only_gligen_takes_the_flag(
        tmp_path, capsys, monkeypatch):
    out = tmp_path / "paper"
    code, text = difflab(capsys, monkeypatch, "control", "train", "shapes-base", "--method",
                         "gligen", "--no-positions", "--steps", "1", "--batch-size", "2",
                         "--out", out)
    assert code == 0, text
    manifest = json.loads((out / "difflab.json").read_text())
    assert manifest["config"]["gligen"]["positions"] is False
    code, text = difflab(capsys, monkeypatch, "control", "train", "shapes-base", "--method",
                         "t2i-adapter", "--no-positions", "--out", tmp_path / "t2i")
    assert code == 2 and "--no-positions is a GLIGEN setting" in text
    assert not (tmp_path / "t2i").exists()


def test_a_control_folder_of_another_base_or_method_is_one_error_line(tmp_path, capsys,
                                                                       monkeypatch, pipe):
    from difflab.control.t2i_adapter import T2IAdapter
    from difflab.control.train import ControlTrainConfig, save_control

    layout = tmp_path / "layout.json"
    layout.write_text(json.dumps(LAYOUT))
    folder = tmp_path / "other"
    save_control(T2IAdapter(pipe.net), folder, {"path": "other", "sha256": "0" * 64},
                 ControlTrainConfig(method="t2i-adapter"), {})
    code, text = difflab(capsys, monkeypatch, "sample", "shapes-base", "--layout", layout,
                         "--control", folder, "--out", tmp_path / "g.png")
    assert code == 2 and "trained on another base" in text
    assert len([line for line in text.splitlines() if line.startswith("error")]) == 1
    manifest = json.loads((folder / "difflab.json").read_text())
    manifest["config"]["method"] = "lora"
    (folder / "difflab.json").write_text(json.dumps(manifest))
    code, text = difflab(capsys, monkeypatch, "sample", "shapes-base", "--layout", layout,
                         "--control", folder, "--out", tmp_path / "g.png")
    assert code == 2 and "names control method 'lora'" in text
    assert len([line for line in text.splitlines() if line.startswith("error")]) == 1


@pytest.mark.parametrize("change, message", [
    ({"objects": [{"phrase": "green ring", "box": [0, 0, 0.5, 0.5]}]}, "not in the prompt"),
    ({"objects": [{"phrase": "red circle", "box": [0, 0, 1.5, 0.5]}]}, "out of range"),
    ({"objects": [{"phrase": "red circle", "box": [0, 0, 0.5, 0.5]}] * 5}, "at most 4"),
])
def test_a_bad_layout_is_one_error_line(tmp_path, capsys, monkeypatch, change, message):
    layout = tmp_path / "layout.json"
    layout.write_text(json.dumps({**LAYOUT, **change}))
    code, text = difflab(capsys, monkeypatch, "sample", "shapes-base", "--layout", layout,
                         "--box-guidance", "--out", tmp_path / "g.png")
    assert code == 2 and message in text
    assert len([line for line in text.splitlines() if line.startswith("error")]) == 1


def test_guidance_without_a_layout_is_refused(tmp_path, capsys, monkeypatch):
    code, text = difflab(capsys, monkeypatch, "sample", "shapes-base", "-p", PROMPT,
                         "--box-guidance", "--out", tmp_path / "g.png")
    assert code == 2 and "need --layout" in text
    code, text = difflab(capsys, monkeypatch, "sample", "shapes-base", "--out",
                         tmp_path / "g.png")
    assert code == 2 and "--prompt" in text


def test_layout_sampling_refuses_options_it_would_ignore(tmp_path, capsys, monkeypatch):
    layout = tmp_path / "layout.json"
    layout.write_text(json.dumps(LAYOUT))
    code, text = difflab(capsys, monkeypatch, "sample", "shapes-base", "--layout", layout,
                         "--box-guidance", "--search", "bestof:n=2", "--quant", "w8a8",
                         "--out", tmp_path / "g.png")
    assert code == 2 and "takes no --search, --quant" in text


def test_a_planned_layout_samples_without_a_layout_file(tmp_path, capsys, monkeypatch):
    grid = tmp_path / "grid.png"
    code, text = difflab(capsys, monkeypatch, "sample", "shapes-base", "--layout", "plan",
                         "--prompt", "a red circle and a blue square", "--box-guidance",
                         "--n", "1", "--steps", "2", "--out", grid)
    assert code == 0, text
    assert "2 boxes" in text and "box x0.1" in text and grid.is_file()
    for prompts, message in ((["a red circle", "a blue square"], "plans the boxes of one"),
                             (["a red teapot"], "not one the evaluator can score")):
        code, text = difflab(capsys, monkeypatch, "sample", "shapes-base", "--layout", "plan",
                             *[a for p in prompts for a in ("--prompt", p)], "--box-guidance",
                             "--out", grid)
        assert code != 0 and message in text
