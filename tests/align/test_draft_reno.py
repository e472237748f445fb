"""DRaFT-K and ReNO on a tiny model: DRaFT's gradient reaches the network only through the last
K sampling steps and matches a finite difference of its (stop-gradient) objective; a run
trains only LoRA weights and writes an adapter that loads; ReNO keeps the noise on its shell,
climbs the reward, and with no iterations returns the plain sample."""

from __future__ import annotations

import pytest
import torch

from difflab.align.draft import DraftConfig, align_draft, draft_loss, sample_last_k, save_draft
from difflab.align.reno import RenoConfig, norm_prior, project_to_shell, search_reno, shell_bounds
from difflab.align.rewardnet import RewardNet
from difflab.align.rewards import parse_prompt
from difflab.config import ConfigError
from difflab.core.samplers import BatchNoise, get_sampler, initial_noise
from difflab.runtime import SampleConfig, load

CONFIG = SampleConfig(sampler="euler_ancestral", steps=4, cfg=2.0, precision="fp32")
SPECS = [parse_prompt("two red circles"), parse_prompt("a red circle to the left of a blue "
                                                       "square")]
SEEDS = [3, 8]


def _net(size: int = 16) -> RewardNet:
    torch.manual_seed(0)
    return RewardNet(width=8, size=size).eval()


def _t_of(sigma: torch.Tensor, pipe) -> float:
    return round(float(pipe.process.sigma_to_t(sigma)), 5)


@pytest.mark.parametrize("k", [1, 2])
def test_draft_gradient_reaches_only_the_last_k_steps(tiny_pipeline, k):
    pipe = tiny_pipeline
    got_grad: set[float] = set()

    def record(module, args, out):  # every call; recomputed ones run inside backward
        if out.requires_grad:
            t = round(float(args[1].flatten()[0]), 5)
            out.register_hook(lambda g, t=t: got_grad.add(t) if g.abs().sum() > 0 else None)

    handle = pipe.net.register_forward_hook(record)
    try:
        loss, _ = draft_loss(pipe, _net(), SPECS, SEEDS, CONFIG, k)
        loss.backward()
    finally:
        handle.remove()
    sigmas = pipe.sigmas(CONFIG)
    assert got_grad == {_t_of(s, pipe) for s in sigmas[-k - 1:-1]}


def test_draft_forward_equals_the_plain_sample(tiny_pipeline):
    pipe = tiny_pipeline
    model, cond = pipe.denoiser([s.text for s in SPECS], CONFIG)
    sigmas = pipe.sigmas(CONFIG)
    x = initial_noise(pipe.image_shape, SEEDS) * sigmas[0]
    noise = BatchNoise([s + 1_000_003 for s in SEEDS])
    out = sample_last_k(model, x, sigmas, 2, get_sampler(CONFIG.sampler), cond, noise)
    plain = pipe.sample([s.text for s in SPECS], SEEDS, CONFIG)
    torch.testing.assert_close(out.detach(), plain, rtol=0, atol=1e-5)


def _tail_loss(pipe, net, x_head, sigmas, k):
    """The DRaFT-K objective from a fixed x at sigma_{n-k}: the last k steps, then -reward
    (unclamped: the clamp's kinks would make the finite difference depend on its step)."""
    model, cond = pipe.denoiser([s.text for s in SPECS], CONFIG)
    noise = BatchNoise([s + 7 for s in SEEDS])
    x = sample_last_k(model, x_head, sigmas, k, get_sampler(CONFIG.sampler), cond, noise)
    return -net.reward(x, SPECS).mean()


@pytest.mark.parametrize("k", [2, 4])  # k = 4 = all steps: the full gradient
def test_draft_gradient_matches_a_finite_difference(tiny_pipeline, k):
    pipe, net = tiny_pipeline, _net()
    params = [p for p in pipe.net.parameters() if p.requires_grad]
    sigmas = pipe.sigmas(CONFIG)[-k - 1:]  # the tail of the schedule, from sigma_{n-k}
    x_head = initial_noise(pipe.image_shape, SEEDS) * sigmas[0]
    loss = _tail_loss(pipe, net, x_head, sigmas, k)
    grads = torch.autograd.grad(loss, params)
    g = torch.Generator().manual_seed(1)
    v = [torch.randn(p.shape, generator=g) for p in params]
    analytic = sum((gr * vi).sum() for gr, vi in zip(grads, v, strict=True)).item()
    eps = 1e-4
    values = []
    with torch.no_grad():
        for sign in (1, -1):
            for p, vi in zip(params, v, strict=True):
                p.add_(sign * eps * vi)
            values.append(_tail_loss(pipe, net, x_head, sigmas, k).item())
            for p, vi in zip(params, v, strict=True):
                p.sub_(sign * eps * vi)
    numeric = (values[0] - values[1]) / (2 * eps)
    assert abs(analytic) > 1e-4  # the check has something to compare
    assert numeric == pytest.approx(analytic, rel=0.02, abs=1e-4)


def test_draft_trains_only_lora_and_writes_an_adapter(tmp_path):
    from difflab.tune.adapters import base_reference

    pipe = load("shapes-base")
    before = {k: v.clone() for k, v in pipe.net.state_dict().items()}
    cfg = DraftConfig(k=1, steps=2, batch_size=1, rank=2, suites=("counting",), lr=1e-2)
    sampling = SampleConfig(sampler="euler_ancestral", steps=2, cfg=3.0)
    result = align_draft(pipe, _net(32), cfg, sampling)
    assert result.steps_done == 2 and len(result.rewards) == 2
    for name, p in result.adaptation.net.named_parameters():
        assert p.requires_grad == ("lora_" in name), name
    base_names = {k.replace("base_model.model.", "").replace(".base_layer", ""): v
                  for k, v in result.adaptation.net.state_dict().items() if "lora_" not in k}
    assert all(torch.equal(base_names[k], v) for k, v in before.items())
    save_draft(result, tmp_path / "draft", base_reference("shapes-base"), sampling, "net")
    tuned, base = load(tmp_path / "draft"), load("shapes-base")
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    t = torch.full((1,), 0.5)
    with torch.no_grad():
        a = tuned.net(x, t, **tuned.condition(["two red circles"]))
        b = base.net(x, t, **base.condition(["two red circles"]))
    assert not torch.equal(a, b)


def test_draft_refuses_what_it_cannot_split():
    with pytest.raises(ConfigError, match="one-step samplers"):
        from difflab.align.draft import check_sampling
        check_sampling(SampleConfig(sampler="heun", steps=4))
    with pytest.raises(ConfigError, match="exceeds"):
        check_sampling(SampleConfig(steps=4), k=5)
    with pytest.raises(ConfigError, match="k"):
        DraftConfig(k=0)
    with pytest.raises(ConfigError, match="cannot be tuned on"):
        DraftConfig(suites=("heldout",))


def test_shell_projection_and_norm_prior():
    z = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    z[1] *= 3  # far outside
    z[2] *= 0.1  # far inside
    low, high = shell_bounds(z[0].numel(), 3.0)
    r = project_to_shell(z, 3.0).flatten(1).norm(dim=1)
    assert torch.all(r >= low - 1e-4) and torch.all(r <= high + 1e-4)
    # the prior's minimum is the chi mode sqrt(d - 1)
    d = z[0].numel()
    u = z[:1] / z[:1].norm()
    at = [norm_prior(u * (d - 1) ** 0.5 * s).item() for s in (0.95, 1.0, 1.05)]
    assert at[1] < at[0] and at[1] < at[2]


def test_reno_keeps_the_noise_in_its_shell_and_climbs_the_reward(tiny_pipeline):
    net = _net()
    seen = []

    def constant(images, spec):
        return [0.0] * len(images)

    opts = RenoConfig(iters=3, lr=2.0, clip=1.0, momentum=0.0, reg=0.0, shell=1.0)
    real_project = project_to_shell

    import difflab.align.reno as reno

    def spy(z, shell):
        out = real_project(z, shell)
        seen.append(out.flatten(1).norm(dim=1))
        return out

    reno.project_to_shell = spy
    try:
        results = search_reno(tiny_pipeline, [s.text for s in SPECS], SPECS, SEEDS, CONFIG,
                              opts, constant, net=net)
    finally:
        reno.project_to_shell = real_project
    low, high = shell_bounds(3 * 16 * 16, 1.0)
    assert len(seen) == 3 and all(torch.all((r >= low - 1e-4) & (r <= high + 1e-4))
                                  for r in seen)
    for r in results:
        assert len(r.trace) == 4 and r.trace[-1] > r.trace[0]  # the net's reward rose
        assert r.nfe == 7 * CONFIG.nfe and r.backward == 3 * CONFIG.nfe


def test_reno_without_iterations_is_the_plain_sample(tiny_pipeline):
    from difflab.data.grid import to_uint8

    out = search_reno(tiny_pipeline, [s.text for s in SPECS], SPECS, SEEDS, CONFIG,
                      RenoConfig(iters=0), lambda im, s: [0.0] * len(im), net=_net())
    plain = to_uint8(tiny_pipeline.sample([s.text for s in SPECS], SEEDS, CONFIG))
    assert all((r.image == p).all() for r, p in zip(out, plain, strict=True))


def test_reno_needs_a_reward_net(tiny_pipeline):
    with pytest.raises(ConfigError, match="reward net"):
        search_reno(tiny_pipeline, [SPECS[0].text], SPECS[:1], [0], CONFIG, RenoConfig(),
                    lambda im, s: [0.0] * len(im))
