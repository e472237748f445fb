"""DDPO and SPO on small models: the recorded step is the sampler's own Gaussian transition and
its log-prob is that Gaussian's density; the trajectory is the plain sample; on the first inner
step the PPO ratio is 1 and the clipped loss's gradient is the REINFORCE gradient; advantages
are normalised per prompt; the SPO loss has the hand-derived value and sign; each method trains
two iterations and writes an adapter that loads to the trained network."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import norm

from difflab.align.ddpo import (
    DdpoConfig,
    align_ddpo,
    gaussian_logprob,
    group_advantages,
    ppo_loss,
    sample_trajectory,
    save_policy_run,
    step_logprob,
    transition,
)
from difflab.align.spo import SpoConfig, align_spo, spo_loss
from difflab.config import ConfigError
from difflab.core.samplers import ddim_step
from difflab.runtime import SampleConfig, load, read_manifest
from difflab.tune.fit import TuneConfig
from difflab.tune.methods import prepare_peft

CONFIG = SampleConfig(sampler="euler_ancestral", steps=4, cfg=2.0, precision="fp32")
PROMPTS = ["two red circles", "a red circle to the left of a blue square"]
SEEDS = [3, 8]


def test_step_is_the_samplers_gaussian_and_logprob_is_its_density(tiny_pipeline):
    model, cond = tiny_pipeline.denoiser(PROMPTS, CONFIG)
    sigmas = tiny_pipeline.sigmas(CONFIG)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 16, 16, generator=g) * sigmas[1]
    z = torch.randn(x.shape, generator=g)
    with torch.no_grad():
        denoised = model(x, sigmas[1] * x.new_ones(2), **cond)
    mean, std = transition(model, x, denoised, sigmas[1], sigmas[2])
    step = ddim_step(model, x, denoised, sigmas[1], sigmas[2], 1.0, z)
    torch.testing.assert_close(mean + std * z, step)  # the sampler's step, eta 1
    assert 0 < float(std) < float(sigmas[2])
    lp = gaussian_logprob(step, mean, std)
    density = norm.logpdf(step.double().numpy(), mean.double().numpy(), float(std))
    np.testing.assert_allclose(lp.numpy() * x[0].numel(),
                               density.reshape(2, -1).sum(1), rtol=1e-4)


def test_trajectory_is_the_plain_sample(tiny_pipeline):
    traj = sample_trajectory(tiny_pipeline, PROMPTS, SEEDS, CONFIG)
    plain = tiny_pipeline.sample(PROMPTS, SEEDS, CONFIG)
    torch.testing.assert_close(traj.states[-1], plain, atol=1e-5, rtol=1e-5)
    assert traj.logprobs.shape == (CONFIG.steps - 1, 2)  # the last step adds no noise


def test_ppo_ratio_is_one_and_its_gradient_is_reinforce(tiny_pipeline):
    torch.manual_seed(0)
    adaptation = prepare_peft(tiny_pipeline.net, TuneConfig(method="lora", steps=1, rank=2))
    with torch.no_grad():  # a LoRA away from zero, so both its factors get a gradient
        for p in adaptation.params:
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) * 0.05)
    traj = sample_trajectory(tiny_pipeline, PROMPTS, SEEDS, CONFIG)
    adv = torch.tensor([1.0, -1.0])
    grads = []
    for objective in ("ppo", "reinforce", "clipped"):
        adaptation.net.zero_grad(set_to_none=True)
        logp, _ = step_logprob(traj.model, traj.cond, traj.states[1], traj.states[2],
                               traj.sigmas[1], traj.sigmas[2])
        if objective == "ppo":
            torch.testing.assert_close(torch.exp(logp - traj.logprobs[1]), torch.ones(2),
                                       atol=1e-6, rtol=0)
            loss = ppo_loss(logp, traj.logprobs[1], adv, 1e-4)
        elif objective == "reinforce":
            loss = -(adv * logp).mean()
        else:  # ratio pushed past the clip in the direction the advantage favours: no gradient
            loss = ppo_loss(logp, traj.logprobs[1] - adv * 0.01, adv, 1e-4)
        loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in adaptation.params]))
    assert grads[0].abs().max() > 1e-6
    torch.testing.assert_close(grads[0], grads[1])
    assert grads[2].abs().max() == 0


def test_group_advantages_are_per_prompt():
    rewards = np.array([1.0, 0.5, 0.0, 0.5, 0.5, 0.5])  # image-major: 2 images x 3 prompts
    adv = group_advantages(rewards, 2).reshape(2, 3)
    np.testing.assert_allclose(adv[:, 0], [1, -1])
    np.testing.assert_allclose(adv[:, 1], [0, 0])  # both alike: no signal
    np.testing.assert_allclose(adv[:, 2], [-1, 1])


def test_spo_loss_value_and_sign():
    lw = torch.tensor([0.3], requires_grad=True)
    zero = torch.zeros(1)
    loss = spo_loss(lw, zero, zero, zero, 10.0)
    assert loss.item() == pytest.approx(math.log1p(math.exp(-3.0)))  # prefers w: below log 2
    loss.backward()
    assert lw.grad.item() == pytest.approx(-10.0 / (1 + math.exp(3.0)))
    assert spo_loss(zero, zero, zero, zero, 10.0).item() == pytest.approx(math.log(2))


SMALL = SampleConfig(sampler="euler_ancestral", steps=3, cfg=3.0, precision="fp32")


@pytest.mark.parametrize("method", ["ddpo", "spo"])
def test_two_iterations_write_an_adapter_that_loads(method, tmp_path):
    from difflab.tune.adapters import base_reference

    pipe = load("shapes-base")
    if method == "ddpo":
        cfg = DdpoConfig(iterations=2, prompts=1, group=2, train_steps=1, suites=("counting",),
                         lr=1e-2)
        result = align_ddpo(pipe, cfg, SMALL, progress=False)
    else:
        cfg = SpoConfig(iterations=2, prompts=1, candidates=2, train_steps=1,
                        suites=("counting",), lr=1e-2)
        result = align_spo(pipe, cfg, SMALL, progress=False)
    assert result.steps_done == 2 and len(result.rewards) == 2
    save_policy_run(result, tmp_path / method, base_reference("shapes-base"), SMALL, method)
    manifest = read_manifest(tmp_path / method)
    assert manifest.config["align"]["method"] == method
    assert len(manifest.metrics["reward_curve"]) == 1
    tuned = load(tmp_path / method)
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    t = torch.full((1,), 0.5)
    with torch.no_grad():
        a = tuned.net(x, t, **tuned.condition(["two red circles"]))
        b = result.adaptation.net(x, t, **pipe.condition(["two red circles"]))
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_bad_configs_are_refused():
    from difflab.align.ddpo import check_chain

    with pytest.raises(ConfigError, match="group"):
        DdpoConfig(group=1)
    with pytest.raises(ConfigError, match="candidates"):
        SpoConfig(candidates=1)
    with pytest.raises(ConfigError, match="Gaussian"):
        check_chain(SampleConfig(sampler="euler", steps=4))
