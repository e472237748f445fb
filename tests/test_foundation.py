import dataclasses
import os
import subprocess
import sys

import pytest
import torch

from difflab.config import (
    ConfigError,
    dumps_toml,
    from_dict,
    load_toml,
    parse_override,
    replace_path,
    to_dict,
)
from difflab.io import atomic_write, load_tensors, save_tensors
from difflab.registry import Registry, UnknownNameError


def test_registry_lists_valid_names():
    reg = Registry("sampler")
    reg.register("euler")(lambda: 1)
    reg.register("heun")(lambda: 2)
    assert reg.get("heun")() == 2
    with pytest.raises(UnknownNameError, match="valid: euler, heun"):
        reg.get("eulr")
    with pytest.raises(ValueError):
        reg.register("euler")(lambda: 3)


@dataclasses.dataclass(frozen=True)
class Inner:
    lr: float = 1e-3
    betas: tuple[float, ...] = (0.9, 0.99)


@dataclasses.dataclass(frozen=True)
class Outer:
    name: str = "x"
    steps: int = 10
    opt: Inner = dataclasses.field(default_factory=Inner)
    note: str | None = None


def test_config_round_trip_toml(tmp_path):
    cfg = Outer(name="run", steps=3, opt=Inner(lr=2e-4))
    path = tmp_path / "c.toml"
    path.write_text(dumps_toml(to_dict(cfg)))
    assert load_toml(Outer, path) == cfg


def test_config_rejects_typos_and_types():
    with pytest.raises(ConfigError, match="unknown key 'stpes'"):
        from_dict(Outer, {"stpes": 3})
    with pytest.raises(ConfigError, match="expected int"):
        from_dict(Outer, {"steps": "many"})
    with pytest.raises(ConfigError, match="unknown key"):
        replace_path(Outer(), "opt.lrr", 1.0)


def test_override_parses_toml_literals():
    assert parse_override("opt.lr=3e-4") == ("opt.lr", 3e-4)
    assert parse_override("name=hello") == ("name", "hello")
    cfg = replace_path(Outer(), *parse_override("opt.lr=0.5"))
    assert cfg.opt.lr == 0.5


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("old")

    def boom(p):
        p.write_text("half")
        raise RuntimeError("crash")

    with pytest.raises(RuntimeError):
        atomic_write(path, boom)
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["a.txt"]


def test_safetensors_round_trip(tmp_path):
    t = {"w": torch.randn(3, 4), "b": torch.arange(5)}
    save_tensors(tmp_path / "m.safetensors", t)
    back = load_tensors(tmp_path / "m.safetensors")
    assert all(torch.equal(t[k], back[k]) for k in t)
    with pytest.raises(FileNotFoundError, match="not found"):
        load_tensors(tmp_path / "missing.safetensors")


def test_cli_runs():
    out = subprocess.run(
        [sys.executable, "-m", "difflab.cli", "version"], capture_output=True, text=True
    )
    assert out.returncode == 0 and out.stdout.strip()


def test_test_module_names_are_unique():
    # pytest imports test files by basename (rootdir mode): two of the same name stop collection
    from collections import Counter
    from pathlib import Path

    names = Counter(p.name for p in Path(__file__).parent.rglob("test_*.py"))
    assert [n for n, k in names.items() if k > 1] == []
