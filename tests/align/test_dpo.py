"""Diffusion-DPO: the loss's value and gradient on constructed errors match the hand-derived
ones, a fresh LoRA sits exactly at log 2, training moves towards the preferred image, and the
result is an adapter folder that `load` and `difflab sample --adapter` read."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from difflab.align.dpo import AlignConfig, Pairs, align_dpo, dpo_loss, dpo_step_loss
from difflab.align.rewardnet import perturb
from difflab.config import ConfigError
from difflab.data.shapes import render_spec
from difflab.data.suites import load_suite
from difflab.demo import DEMO_SAMPLING
from difflab.runtime import load
from difflab.tune.adapters import base_reference, save_adapter
from difflab.tune.fit import TuneConfig, _to_tensor
from difflab.tune.methods import prepare_peft


def test_dpo_loss_value_and_sign_on_a_constructed_pair():
    beta = 4.0
    ref_w, ref_l = torch.tensor([0.5]), torch.tensor([0.5])
    err_w = torch.tensor([0.3], requires_grad=True)  # the tuned net fits the winner better
    err_l = torch.tensor([0.6], requires_grad=True)  # and the loser worse than the reference
    loss = dpo_loss(err_w, err_l, ref_w, ref_l, beta)
    u = 0.5 * beta * ((0.3 - 0.5) - (0.6 - 0.5))  # -0.6: loss = softplus(u)
    assert loss.item() == pytest.approx(math.log1p(math.exp(u)))
    assert loss.item() < math.log(2)  # preferring the winner beats indifference
    loss.sum().backward()
    grad = 0.5 * beta / (1 + math.exp(-u))  # d softplus(u) / d err_w
    assert err_w.grad.item() == pytest.approx(grad) and err_w.grad.item() > 0
    assert err_l.grad.item() == pytest.approx(-grad)
    # equal to the reference on both: exactly log 2, whatever beta
    same = dpo_loss(ref_w, ref_l, ref_w, ref_l, 1000.0)
    assert same.item() == pytest.approx(math.log(2))


def _pairs(n: int = 4) -> Pairs:
    specs = load_suite("spatial")[:n]
    win = np.stack([render_spec(s, 32, seed=i)[0] for i, s in enumerate(specs)])
    lose = np.stack([render_spec(perturb(s, 0), 32, seed=i)[0] for i, s in enumerate(specs)])
    return Pairs(win, lose, [s.text for s in specs], np.ones(n), np.zeros(n))


def test_a_fresh_lora_sits_at_log_2_and_steps_towards_the_winner():
    pipe = load("shapes-base")
    cfg = TuneConfig(method="lora", steps=1, rank=2)
    torch.manual_seed(0)
    adaptation = prepare_peft(pipe.net, cfg)
    pairs = _pairs()
    win, lose = _to_tensor(pairs.win), _to_tensor(pairs.lose)
    gen = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    loss, _ = dpo_step_loss(pipe, adaptation, win, lose, pairs.prompts, 2000.0, gen())
    assert loss.item() == pytest.approx(math.log(2), abs=1e-6)  # LoRA's B starts at zero
    opt = torch.optim.SGD(adaptation.params, lr=1e-4)
    for _ in range(3):
        loss, _ = dpo_step_loss(pipe, adaptation, win, lose, pairs.prompts, 2000.0, gen())
        opt.zero_grad()
        loss.backward()
        opt.step()
    after, prefers = dpo_step_loss(pipe, adaptation, win, lose, pairs.prompts, 2000.0, gen())
    assert after.item() < math.log(2) and prefers.item() > 0.5


def test_dpo_writes_an_adapter_that_loads(tmp_path):
    pipe = load("shapes-base")
    cfg = AlignConfig(steps=2, batch_size=2, rank=2, suites=("spatial",))
    result = align_dpo(pipe, cfg, DEMO_SAMPLING, progress=False, pairs=_pairs())
    assert result.steps_done == 2 and len(result.losses) == 2
    save_adapter(result, tmp_path / "dpo", base_reference("shapes-base"),
                 sections={"align": {"method": "dpo"}})
    tuned = load(tmp_path / "dpo")
    base = load("shapes-base")
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    t = torch.full((1,), 0.5)
    with torch.no_grad():
        a = tuned.net(x, t, **tuned.condition(["a red circle"]))
        b = base.net(x, t, **base.condition(["a red circle"]))
    assert not torch.equal(a, b)
    assert "lora" in tuned.labels["adapters"]


@pytest.mark.parametrize("kw, message", [
    ({"method": "ppo"}, "unknown alignment method"),
    ({"suites": ("heldout",)}, "cannot be tuned on"),
    ({"suites": ()}, "names no suite"),
    ({"images": 1}, "images"),
])
def test_bad_align_configs_are_config_errors(kw, message):
    with pytest.raises(ConfigError, match=message):
        AlignConfig(**kw)
