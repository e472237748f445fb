"""Checkpoint folders: atomic, validated, pruned, pickle-free optimiser state."""

import json

import pytest
import torch
from tiny_parts import TinyNet, tiny_config, tiny_parts

from difflab.config import ConfigError
from difflab.train import checkpoint as ckpt
from difflab.train.trainer import run_training


def test_optimizer_state_round_trips_without_pickle():
    torch.manual_seed(0)
    net = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, betas=(0.8, 0.9))
    for _ in range(2):
        net(torch.randn(5, 4)).square().sum().backward()
        opt.step()
    tensors, meta = ckpt.optimizer_to_flat(opt)
    json.dumps(meta)  # the non-tensor part is plain JSON
    fresh = torch.optim.AdamW(torch.nn.Linear(4, 3).parameters(), lr=5.0)
    ckpt.optimizer_from_flat(fresh, tensors, meta)
    a, b = opt.state_dict(), fresh.state_dict()
    assert a["param_groups"] == b["param_groups"]
    for i in a["state"]:
        for k in a["state"][i]:
            assert torch.equal(a["state"][i][k], b["state"][i][k])


def test_crash_mid_save_leaves_previous_checkpoint_visible(tmp_path, monkeypatch):
    run = tmp_path / "run"
    run_training(tiny_config(str(run), **{"schedule.steps": 3}), tiny_parts())
    assert ckpt.latest_checkpoint(run).name == "step_000003"

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed while writing state.json")

    monkeypatch.setattr(ckpt, "write_json", crash)
    cfg = tiny_config(str(run), **{"schedule.steps": 6})
    with pytest.raises(KeyboardInterrupt):
        run_training(cfg, tiny_parts(), resume=True)
    # The half-written folder is only ever a hidden temp folder; `latest` still points to 3.
    assert not (run / "step_000006").exists()
    assert sorted(p.name for p in run.glob(".tmp-*")) == [".tmp-step_000006"]
    assert ckpt.latest_checkpoint(run).name == "step_000003"
    monkeypatch.undo()
    run_training(cfg, tiny_parts(), resume=True)
    assert ckpt.latest_checkpoint(run).name == "step_000006"
    assert not list(run.glob(".tmp-*"))


def test_keep_last_prunes_old_checkpoints(tmp_path):
    run = tmp_path / "run"
    cfg = tiny_config(str(run), **{"schedule.steps": 10, "run.ckpt_every": 2, "run.keep_last": 2})
    run_training(cfg, tiny_parts())
    assert sorted(p.name for p in run.glob("step_*")) == ["step_000008", "step_000010"]


def test_load_checkpoint_gives_ema_model_and_validates(tmp_path):
    run = tmp_path / "run"
    run_training(tiny_config(str(run), **{"schedule.steps": 3}), tiny_parts())
    loaded = ckpt.load_checkpoint(run, build=lambda cfg: TinyNet())
    assert loaded.step == 3 and loaded.path.name == "step_000003"
    assert loaded.config.schedule.steps == 3
    for k, v in loaded.model.state_dict().items():
        assert torch.equal(v, loaded.ema_state[k])
    assert any(not torch.equal(loaded.raw_state[k], loaded.ema_state[k]) for k in loaded.raw_state)

    with pytest.raises(ConfigError, match="does not fit this model: .*shape mismatches"):
        ckpt.load_checkpoint(run, build=lambda cfg: TinyNet(width=8))
    (loaded.path / "state.json").unlink()
    with pytest.raises(FileNotFoundError, match="missing state.json"):
        ckpt.load_checkpoint(loaded.path, build=lambda cfg: TinyNet())
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        ckpt.load_checkpoint(tmp_path / "nope", build=lambda cfg: TinyNet())
