"""RAFT: only passing samples are kept, sampling never touches the dev images a recipe is chosen
on, the change written is the tuned weights minus the base's, and bad settings are one-line
errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from difflab.align.raft import FIRST_IMAGE, RaftConfig, align_raft, passing_samples
from difflab.align.rewards import evaluator_reward, parse_prompt
from difflab.config import ConfigError
from difflab.data.suites import load_suite, suite_seeds
from difflab.runtime import SampleConfig, load, read_manifest
from difflab.tune.adapters import base_reference, save_adapter

FAST = SampleConfig(sampler="euler", steps=8, cfg=3.0)


def test_kept_samples_all_pass_and_come_from_unseen_dev_images():
    pipe = load("shapes-base")
    cfg = RaftConfig(suites=("single",), images=1)
    images, prompts, sampled, kept = passing_samples(pipe, cfg, FAST, round_index=1,
                                                     progress=False)
    assert sampled == {"single": len(load_suite("single"))}
    assert 0 < len(prompts) == kept["single"] <= sampled["single"]
    assert (evaluator_reward(images, [parse_prompt(p) for p in prompts]) == 1.0).all()
    # round 1 draws dev image FIRST_IMAGE + 1 of each prompt: its seed, and none of 0..7
    spec = load_suite("single")[0]
    chosen = suite_seeds(spec, 1, FIRST_IMAGE + 1, "dev")
    assert chosen[0] not in suite_seeds(spec, FIRST_IMAGE, 0, "dev")
    again = pipe.generate([spec.text], chosen, FAST, progress=False)
    if spec.text in prompts:
        assert np.array_equal(again[0], images[prompts.index(spec.text)])


def test_the_change_is_the_tuned_weights_minus_the_base_and_reloads(tmp_path):
    pipe = load("shapes-base")
    before = {k: v.clone() for k, v in pipe.net.state_dict().items()}
    cfg = RaftConfig(suites=("single",), images=1, rounds=2, steps=2, batch_size=2)
    result = align_raft(pipe, cfg, FAST, progress=False)
    assert len(result.rounds) == 2 and len(result.losses) == 4
    tuned = pipe.net.state_dict()
    assert result.delta.dense and not any(p.requires_grad for p in pipe.net.parameters())
    for name, d in result.delta.dense.items():
        torch.testing.assert_close(before[name] + d, tuned[name], rtol=0, atol=1e-6)
    save_adapter(result, tmp_path / "raft", base_reference("shapes-base"))
    again = load(str(tmp_path / "raft"))
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0.3, 0.7])
    cond = pipe.condition(["a red circle", "a blue square"])
    with torch.no_grad():
        torch.testing.assert_close(again.net(x, t, **cond), pipe.net(x, t, **cond),
                                   rtol=0, atol=1e-5)


@pytest.mark.parametrize("bad, message", [
    ({"tuner": "full"}, "unknown RAFT tuner"),
    ({"suites": ("heldout",)}, "cannot be tuned on"),
    ({"images": 0}, "images"),
    ({"rounds": 0}, "rounds"),
    ({"uncond_weight": -1.0}, "uncond_weight"),
])
def test_bad_settings_are_one_line_errors(bad, message):
    with pytest.raises(ConfigError, match=message):
        RaftConfig(**bad)


def test_each_round_tunes_with_the_runs_losses():
    tc = RaftConfig(prior_weight=2.0, uncond_weight=0.5, seed=3).tune_config(kept=5, round_index=1)
    assert (tc.prior_weight, tc.uncond_weight, tc.images, tc.seed) == (2.0, 0.5, 5, 3001)


def test_a_lora_runs_one_round():
    with pytest.raises(ConfigError, match="one round"):
        align_raft(None, RaftConfig(tuner="lora", rounds=2), FAST)


def test_align_raft_writes_an_adapter_that_loads(tmp_path, capsys):
    from difflab import cli

    out = tmp_path / "raft"
    code = cli.run(["align", "shapes-base", "--method", "raft", "--suite", "single",
                    "--images", "1", "--steps", "2", "--batch-size", "2", "--out", str(out)])
    text = capsys.readouterr()
    assert code == 0, text.out + text.err
    assert "aligned by raft: 1 round(s), kept" in text.out
    manifest = read_manifest(out)
    assert manifest.config["align"]["method"] == "raft"
    assert manifest.metrics["rounds"][0]["sampled"] == {"single": len(load_suite("single"))}
    load(str(out))  # the adapter applies to its base


@pytest.mark.parametrize("budget, rounds", [(3.0, 1), (10_000.0, 3)])
def test_no_round_starts_that_would_pass_the_budget(monkeypatch, budget, rounds):
    import types

    import difflab.align.raft as raft

    clock = iter(range(0, 100_000, 60))  # each reading of RAFT's clock is a minute later
    monkeypatch.setattr(raft, "time", types.SimpleNamespace(perf_counter=lambda: next(clock)))
    cfg = RaftConfig(suites=("single",), images=1, rounds=3, steps=1, batch_size=2,
                     budget_minutes=budget)
    logged: list[str] = []
    result = align_raft(load("shapes-base"), cfg, FAST, progress=False, log=logged.append)
    # round 0 reads the clock 4 times (3 minutes spent): a second round would end past 3 min
    assert len(result.rounds) == rounds
    assert any("stopping after 1 round" in line for line in logged) == (rounds == 1)
