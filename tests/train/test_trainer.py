"""The loop: accumulation equivalence, non-finite skip + rollback, schedules, config errors."""

import json

import pytest
import torch
from tiny_parts import tiny_config, tiny_parts

from difflab.config import ConfigError
from difflab.io import load_tensors
from difflab.train.config import ScheduleSection, load_train_config
from difflab.train.schedule import batch_indices, lr_at
from difflab.train.trainer import run_training


def _weights(run, step):
    return load_tensors(run / f"step_{step:06d}" / "train_state.safetensors")


def test_accumulation_matches_full_batch(tmp_path, one_thread):
    common = {"schedule.steps": 4, "run.ckpt_every": 4}
    run_training(tiny_config(str(tmp_path / "full"), **common), tiny_parts())
    run_training(tiny_config(str(tmp_path / "acc"), **common, **{"schedule.accumulation": 2}),
                 tiny_parts())
    full, acc = _weights(tmp_path / "full", 4), _weights(tmp_path / "acc", 4)
    for k in full:
        if k.startswith(("model/", "ema/")):
            torch.testing.assert_close(acc[k], full[k], rtol=1e-5, atol=1e-6)


def test_nonfinite_steps_are_skipped_then_rolled_back(tmp_path, one_thread):
    # Steps 4, 5, 6 see NaN batches (patience 3): 4 and 5 are skipped, the checkpoint at
    # step 6 is written, step 6 triggers a rollback to it with half the learning rate.
    run = tmp_path / "nan"
    run_training(tiny_config(str(run), **{"debug.nan_steps": [4, 5, 6]}), tiny_parts())
    clean = tmp_path / "clean"
    run_training(tiny_config(str(clean), **{"schedule.steps": 4, "run.ckpt_every": 4}),
                 tiny_parts())
    # Skipped steps changed nothing: weights, EMA and optimiser state at 6 equal those at 4.
    a, b = _weights(run, 6), _weights(clean, 4)
    for k in a:
        if not k.startswith("rng/"):
            assert torch.equal(a[k], b[k]), k
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] - 1 for m in lines if m.get("skipped")] == [4, 5, 6]
    events = [m["event"] for m in lines if "event" in m]
    assert any("rolled back to step_000006" in e and "x0.5" in e for e in events)
    after = [m for m in lines if "lr" in m and m["step"] > 6 and not m["skipped"]]
    assert after and all(m["lr"] == pytest.approx(0.5e-2) for m in after)
    state = json.loads((run / "step_000012" / "state.json").read_text())
    assert state["lr_scale"] == 0.5 and state["rollbacks"] == 1
    final = load_tensors(run / "step_000012" / "model.safetensors")
    assert all(torch.isfinite(v.float()).all() for v in final.values())


def test_nonfinite_without_checkpoint_raises(tmp_path):
    cfg = tiny_config(str(tmp_path / "r"), **{"debug.nan_steps": [0, 1, 2], "run.ckpt_every": 5})
    with pytest.raises(RuntimeError, match="no checkpoint to roll back to"):
        run_training(cfg, tiny_parts())


def test_existing_run_needs_resume(tmp_path):
    cfg = tiny_config(str(tmp_path / "r"), **{"schedule.steps": 3})
    run_training(cfg, tiny_parts())
    with pytest.raises(ConfigError, match="--resume"):
        run_training(cfg, tiny_parts())
    other = tiny_config(str(tmp_path / "r"),
                        **{"schedule.steps": 6, "model.preset": "pixart-tiny"})
    with pytest.raises(ConfigError,
                       match="model.preset: checkpoint 'dit-tiny' vs config 'pixart-tiny'"):
        run_training(other, tiny_parts(), resume=True)


def test_lr_schedule_warmup_then_cosine():
    s = ScheduleSection(steps=100, warmup_steps=10, decay="cosine", min_lr_ratio=0.1)
    lrs = [lr_at(i, 1.0, s) for i in range(100)]
    assert lrs[9] == pytest.approx(1.0) and lrs[0] == pytest.approx(0.1)
    assert all(b >= a for a, b in zip(lrs[:9], lrs[1:10], strict=True))
    assert all(b <= a for a, b in zip(lrs[10:-1], lrs[11:], strict=True))
    assert lr_at(100, 1.0, s) == pytest.approx(0.1)


def test_data_order_is_a_permutation_per_epoch():
    n, b = 12, 4
    epoch0 = sum((batch_indices(7, s, b, n) for s in range(3)), [])
    assert sorted(epoch0) == list(range(n))
    assert batch_indices(7, 5, b, n) == batch_indices(7, 5, b, n)


def test_config_typos_are_clear(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[optim]\nlrr = 0.1\n")
    with pytest.raises(ConfigError, match="unknown key optim.'lrr'.*valid: lr, betas"):
        load_train_config(path)
    path.write_text("[schedule]\nsteps = 10\nbatch_size = 6\naccumulation = 4\n")
    with pytest.raises(ConfigError, match="batch_size = 6 is not divisible"):
        load_train_config(path)
    path.write_text("[schedule]\ndecay = 'linear'\n")
    with pytest.raises(ConfigError, match="'linear' is not one of"):
        load_train_config(path)
    path.write_text("")
    with pytest.raises(ConfigError, match="override optim.lrr=1: unknown key 'lrr'; valid: lr"):
        load_train_config(path, ["optim.lrr=1"])
    cfg = load_train_config(path, ["model.overrides.depth=2", "run.precision=fp32"])
    assert cfg.model.overrides == {"depth": 2} and cfg.run.precision == "fp32"
    with pytest.raises(ConfigError, match="config file not found"):
        load_train_config(tmp_path / "missing.toml")


def test_fp16_on_cpu_is_refused(tmp_path):
    cfg = tiny_config(str(tmp_path / "r"), **{"run.precision": "fp16"})
    with pytest.raises(ConfigError, match="fp16.*CUDA-only"):
        run_training(cfg, tiny_parts())


def test_bf16_autocast_trains(tmp_path):
    cfg = tiny_config(str(tmp_path / "r"), **{"run.precision": "bf16", "schedule.steps": 3})
    run_training(cfg, tiny_parts())
    lines = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 3 and all(torch.isfinite(torch.tensor(m["loss"])) for m in lines)


def test_channels_last_trains_like_contiguous_and_resumes_bit_identically(tmp_path):
    import shutil

    def run(name, resume=False, **over):
        cfg = tiny_config(str(tmp_path / name), **{"schedule.steps": 6, **over})
        return run_training(cfg, tiny_parts(), resume=resume)

    final = "step_000006/model.safetensors"
    cl = load_tensors(run("cl", **{"run.channels_last": True}) / final)
    plain = load_tensors(run("plain") / final)
    assert all(torch.allclose(cl[k], plain[k], atol=1e-5) for k in cl)
    # resume from step 3 of a copy: the same bits as the uninterrupted channels_last run
    shutil.copytree(tmp_path / "cl", tmp_path / "cut")
    shutil.rmtree(tmp_path / "cut" / "step_000006")
    (tmp_path / "cut" / "latest").write_text("step_000003")
    resumed = load_tensors(run("cut", resume=True, **{"run.channels_last": True}) / final)
    assert all(torch.equal(resumed[k], cl[k]) for k in cl)
