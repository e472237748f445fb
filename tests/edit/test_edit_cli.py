"""`difflab restore` and `difflab edit` as a user runs them, and their one-line errors."""

from __future__ import annotations

import pytest
from PIL import Image

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


@pytest.fixture
def image(tmp_path, scene):
    pixels = ((scene[1][0].permute(1, 2, 0) + 1) * 127.5).round().byte().numpy()
    path = tmp_path / "in.png"
    Image.fromarray(pixels).save(path)
    return path


def test_restore_and_edit(tmp_path, image, capsys, monkeypatch):
    out = tmp_path / "out.png"
    code, text = difflab(capsys, monkeypatch, "restore", "shapes-base", "--problem", "sr4",
                         "--image", image, "--method", "ddnm", "--steps", "2", "--out", out)
    assert code == 0, text
    assert "pseudo-inverse" in text and Image.open(out).size == (32, 32)
    code, text = difflab(capsys, monkeypatch, "edit", "shapes-base", "--image", image,
                         "--to", "a blue circle", "--method", "sdedit:0", "--out", out)
    assert code == 0, text
    assert "PSNR to the input inf dB" in text


@pytest.mark.parametrize("args, message", [
    (["restore", "shapes-base", "--problem", "sr3"], "unknown problem 'sr3'"),
    (["restore", "shapes-base", "--problem", "cs:x"], "compressed-sensing ratio"),
    (["restore", "shapes-base", "--problem", "sr4", "--method", "pigdm"], "restore method"),
    (["edit", "shapes-base", "--to", "a blue circle", "--method", "p2p"], "unknown edit method"),
    (["edit", "shapes-base", "--to", "a blue circle", "--method", "sdedit:2"], "strength"),
])
def test_bad_input_is_one_line(tmp_path, image, capsys, monkeypatch, args, message):
    code, text = difflab(capsys, monkeypatch, *args, "--image", image, "--out", tmp_path / "o.png")
    assert code == 2 and message in text and len(text.strip().splitlines()) == 1, text


def test_bad_image(tmp_path, image, capsys, monkeypatch):
    gray, big = tmp_path / "gray.png", tmp_path / "big.png"
    Image.open(image).convert("L").save(gray)
    Image.open(image).resize((64, 64)).save(big)
    for path, message in [(gray, "is L; give an RGB image"), (big, "is 64x64"),
                          (tmp_path / "none.png", "is not a file")]:
        code, text = difflab(capsys, monkeypatch, "restore", "shapes-base", "--problem", "sr4",
                             "--image", path, "--out", tmp_path / "o.png")
        assert code == 2 and message in text, text
