"""`difflab sample --search` and `difflab align` as a user runs them: a search writes its grid
and says what it cost; bad input is one `error:` line and exit status 2, before any model
work."""

from __future__ import annotations

import pytest

from difflab import cli


def difflab(capsys, *args: str) -> tuple[int, str]:
    code = cli.run([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out + out.err


def test_sample_with_bestof_search(tmp_path, capsys):
    grid = tmp_path / "grid.png"
    code, text = difflab(capsys, "sample", "shapes-base", "-p", "two red circles", "--n", "1",
                         "--steps", "2", "--search", "bestof:n=2", "--out", grid)
    assert code == 0, text
    assert "search bestof:n=2: mean evaluator reward" in text
    assert "4 model evaluations" in text and grid.is_file()


def test_sample_with_reno_search(tmp_path, capsys):
    import torch

    from difflab.align.rewardnet import RewardNet, RewardNetConfig, save_reward_net

    torch.manual_seed(0)
    save_reward_net(RewardNet(width=8), RewardNetConfig(width=8), tmp_path / "net", {})
    grid = tmp_path / "grid.png"
    code, text = difflab(capsys, "sample", "shapes-base", "-p", "two red circles", "--n", "1",
                         "--steps", "2", "--search", "reno:iters=1", "--reward-net",
                         tmp_path / "net", "--out", grid)
    assert code == 0, text
    assert "search reno:iters=1: mean evaluator reward" in text
    assert "6 model evaluations, 2 backward passes" in text and grid.is_file()


@pytest.mark.parametrize("args, message", [
    (["sample", "shapes-base", "-p", "a red circle", "--search", "beam"], "unknown search"),
    (["sample", "shapes-base", "-p", "a red circle", "--search", "smc:particles=0"],
     "particles"),
    (["sample", "shapes-base", "-p", "a red circle", "--search", "smc", "--sampler", "heun"],
     "one-step samplers"),
    (["sample", "shapes-base", "-p", "a cat", "--search", "bestof"], "evaluator can score"),
    (["sample", "shapes-base", "-p", "a red circle", "--search", "bestof", "--accel",
      "deepcache"], "does not combine"),
    (["align", "shapes-base", "--method", "ppo", "--out", "x"], "unknown alignment method"),
    (["align", "shapes-base", "--method", "ddpo", "--group", "1", "--out", "x"], "group"),
    (["align", "shapes-base", "--method", "ddpo", "--clip", "-1", "--out", "x"], "clip"),
    (["align", "shapes-base", "--method", "ddpo", "--suite", "", "--out", "x"], "no suite"),
    (["align", "shapes-base", "--method", "spo", "--group", "1", "--out", "x"], "candidates"),
    (["align", "shapes-base", "--method", "spo", "--beta", "-1", "--out", "x"], "beta"),
    (["align", "shapes-base", "--suite", "heldout", "--out", "x"], "cannot be tuned on"),
    (["align", "shapes-base", "--images", "1", "--out", "x"], "images"),
    (["align", "shapes-base", "--budget-minutes", "0", "--out", "x"], "budget_minutes"),
    (["align", "no-such-model", "--out", "x"], "no-such-model"),
    (["align", "shapes-base", "--method", "draft", "--out", "x"], "give --reward-net"),
    (["align", "shapes-base", "--method", "raft", "--tuner", "full", "--out", "x"],
     "unknown RAFT tuner"),
    (["align", "shapes-base", "--method", "raft", "--rounds", "0", "--out", "x"], "rounds"),
    (["align", "shapes-base", "--method", "raft", "--prior-weight", "-1", "--out", "x"],
     "prior_weight"),
    (["align", "shapes-base", "--method", "draft", "--k", "0", "--out", "x"], "k = 0"),
    (["align", "shapes-base", "--method", "draft", "--k", "30", "--out", "x"], "exceeds"),
    (["align", "shapes-base", "--method", "draft", "--reward-net", "x", "--out", "x"],
     "not a difflab artefact"),
    (["sample", "shapes-base", "-p", "a red circle", "--search", "reno"], "give --reward-net"),
    (["sample", "shapes-base", "-p", "a red circle", "--reward-net", "x"], "serves --search"),
    (["sample", "shapes-base", "-p", "a red circle", "--search", "reno:iters=-1"], "iters"),
    (["sample", "shapes-base", "-p", "a red circle", "--search", "reno", "--sampler", "heun"],
     "one-step samplers"),
])
def test_bad_input_is_one_error_line(args, message, capsys, tmp_path):
    args = [str(tmp_path / a) if a == "x" else a for a in args]
    code, text = difflab(capsys, *args, *([] if "--out" in args else
                                          ["--out", tmp_path / "g.png"]))
    lines = [line for line in text.splitlines() if line.strip()]
    assert code == 2, text
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], text
