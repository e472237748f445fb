"""Rewards: template prompts parse back to their suite specs, the evaluator reward is 1 exactly
on images that pass, and the reward net has the stated shapes and gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from difflab.align.rewardnet import (
    SPEC_DIM,
    RewardNet,
    RewardNetConfig,
    encode_specs,
    label_images,
    load_reward_net,
    perturb,
    predict_scores,
    save_reward_net,
    train_reward_net,
)
from difflab.align.rewards import (
    REQUIREMENTS,
    evaluator_reward,
    evaluator_scores,
    parse_prompt,
)
from difflab.config import ConfigError
from difflab.data.shapes import render_spec
from difflab.data.suites import load_suite


@pytest.mark.parametrize("suite", ["single", "binding", "counting", "spatial"])
def test_suite_prompts_parse_back_to_their_specs(suite):
    for spec in load_suite(suite):
        got = parse_prompt(spec.text)
        assert (got.objects, got.relation) == (spec.objects, spec.relation)
        # "a red circle" of the counting suite reads as a single-object prompt
        assert got.category == spec.category or spec.objects[0].count == 1


def test_unparseable_prompt_is_a_config_error():
    with pytest.raises(ConfigError, match="not one the evaluator can score"):
        parse_prompt("a photo of a cat")


def test_evaluator_reward_is_one_on_renders_and_lower_on_near_misses():
    specs = [load_suite(s)[3] for s in ("single", "binding", "counting", "spatial")]
    images = np.stack([render_spec(s, 32, seed=i)[0] for i, s in enumerate(specs)])
    scores = evaluator_scores(images, specs)
    assert scores.shape == (4, len(REQUIREMENTS))
    assert np.isnan(scores[:3, REQUIREMENTS.index("relation")]).all()
    np.testing.assert_array_equal(evaluator_reward(images, specs), np.ones(4))
    missed = [perturb(s, 0) for s in specs]
    r = evaluator_reward(images, missed)
    assert (r < 1).all() and (r > 0).all()  # objects still present: partial credit


def test_reward_net_forward_shape_and_gradient():
    net = RewardNet(width=8)
    specs = load_suite("spatial")[:3]
    x = torch.zeros(3, 3, 32, 32, requires_grad=True)
    logits = net(x, encode_specs(specs))
    assert logits.shape == (3, len(REQUIREMENTS)) and encode_specs(specs).shape == (3, SPEC_DIM)
    r = net.reward(x, specs)
    assert r.shape == (3,) and ((r > 0) & (r < 1)).all()
    r.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_reward_net_learns_and_round_trips(tmp_path):
    specs = load_suite("counting")[:8]
    images = np.stack([render_spec(s, 32, seed=i)[0] for i, s in enumerate(specs)])
    idx, rows, scores = label_images(images, specs, near_misses=1)
    cfg = RewardNetConfig(width=8, steps=60, batch_size=16)
    net, losses = train_reward_net(images, rows, scores, idx, cfg)
    assert np.mean(losses[-10:]) < np.mean(losses[:10])
    save_reward_net(net, cfg, tmp_path / "rn", {})
    back = load_reward_net(tmp_path / "rn")
    np.testing.assert_array_equal(predict_scores(net, images, rows, idx),
                                  predict_scores(back, images, rows, idx))
