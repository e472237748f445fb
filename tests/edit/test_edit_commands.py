"""`difflab edit` and `difflab restore` as a user runs them, and their one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cli_helpers import difflab
from difflab.data.shapes import render
from difflab.edit.suite import edit_suite


@pytest.fixture
def scene(tmp_path):
    case = next(c for c in edit_suite("dev", 4) if c.kind == "recolor")
    path = tmp_path / "in.png"
    Image.fromarray(render(case.source)).save(path)
    return case, path


def test_edit_writes_the_edited_image(tmp_path, capsys, monkeypatch, scene):
    case, path = scene
    out = tmp_path / "out.png"
    code, text = difflab(capsys, monkeypatch, "edit", "shapes-base", "--image", path, "--from",
                         case.source_prompt, "--to", case.source_prompt, "--method",
                         "sdedit:0", "--out", out)
    assert code == 0, text
    assert np.array_equal(np.asarray(Image.open(out)), render(case.source))  # strength 0
    mask = tmp_path / "mask.png"
    Image.fromarray((case.box() * 255).astype(np.uint8)).save(mask)
    code, text = difflab(capsys, monkeypatch, "edit", "shapes-base", "--image", path, "--from",
                         case.source_prompt, "--to", case.target_prompt, "--method",
                         "masked:0.8", "--mask", mask, "--steps", "2", "--out", out)
    assert code == 0, text
    assert "wrote" in text and "masked:0.8" in text


def _error(text: str) -> str:
    lines = text.strip().splitlines()
    assert lines[-1].startswith("error: "), text
    return lines[-1]


def test_edit_errors_are_one_line(tmp_path, capsys, monkeypatch, scene):
    case, path = scene
    small, gray, mask = tmp_path / "small.png", tmp_path / "gray.png", tmp_path / "m.png"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(small)
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(gray)
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(mask)
    base = ["edit", "shapes-base", "--from", "a red circle", "--out", tmp_path / "o.png"]
    cases = {
        ("--image", small, "--to", "a blue circle"): "is 16x16, but this model works on 32x32",
        ("--image", gray, "--to", "a blue circle"): "is a L image; give an 8-bit RGB image",
        ("--image", path, "--to", "a blue circle", "--method", "masked", "--mask", mask):
            "is 16x16, but the image is 32x32",
        ("--image", path, "--to", "a big blue square"): "p2p swaps one word, but",
        ("--image", path, "--to", "a blue circle", "--method", "warp"):
            "unknown edit method 'warp'",
        ("--image", path, "--to", "a blue circle", "--method", "masked"): "needs --mask",
        ("--image", path, "--to", "a blue circle", "--method", "sdedit:x"): "is not a number",
        ("--image", path, "--to", "a blue circle", "--method", "sdedit:1.5"):
            "strength = 1.5",
    }
    for extra, message in cases.items():
        code, text = difflab(capsys, monkeypatch, *base, *extra)
        assert code == 2 and message in _error(text), (extra, text)


def test_restore_measures_and_restores(tmp_path, capsys, monkeypatch, scene):
    _, path = scene
    out = tmp_path / "x.png"
    code, text = difflab(capsys, monkeypatch, "restore", "shapes-base", "--problem", "sr4",
                         "--image", path, "--measure", "--method", "ddnm", "--steps", "3",
                         "--out", out)
    assert code == 0, text
    assert "sr x4, ddnm" in text and "dB against --image" in text
    low = tmp_path / "low.png"
    Image.fromarray(render(edit_suite("dev", 1)[0].source)[::4, ::4].copy()).save(low)
    code, text = difflab(capsys, monkeypatch, "restore", "shapes-base", "--problem", "sr4",
                         "--image", low, "--method", "bicubic", "--out", out)
    assert code == 0, text
    assert Image.open(out).size == (32, 32)
    errors = {
        ("--problem", "sr4", "--image", path): "measurement of shape (3, 32, 32), but this "
                                               "problem measures (3, 8, 8)",
        ("--problem", "cs:0.25", "--image", path): "pass the clean image with --measure",
        ("--problem", "blur", "--image", path): "problem 'blur'; valid: cs, deblur, inpaint",
        ("--problem", "sr4", "--image", path, "--method", "repaint", "--measure"):
            "repaint inpaints",
        ("--problem", "inpaint", "--image", path, "--mask", tmp_path / "nope.png"):
            "is not a file",
    }
    for extra, message in errors.items():
        code, text = difflab(capsys, monkeypatch, "restore", "shapes-base", *extra, "--out", out)
        assert code == 2 and message in _error(text), (extra, text)
