"""difflab's caches on wrapped diffusers models, through the same hooks as native models: a cache
that never reuses equals the uncached model, one that reuses changes the output and counts its
cached calls, and removing it restores the model bit for bit."""

import pytest
import torch
from interop_helpers import (
    SKIP_REASON,
    TRANSFORMERS,
    conditioning,
    noise_like,
    tiny_net,
    tiny_process,
)

pytest.importorskip("diffusers", reason=SKIP_REASON)

from difflab.accel import apply_accel, hook_names  # noqa: E402
from difflab.config import ConfigError  # noqa: E402
from difflab.core.guidance import cfg  # noqa: E402
from difflab.core.samplers import sample_euler  # noqa: E402

# method -> (options that never reuse, options that reuse)
TRANSFORMER_CACHES = {"block_cache": ({"interval": 1}, {"interval": 3}),
                      "teacache": ({"threshold": 0.0}, {"threshold": 0.5}),
                      "first_block_cache": ({"threshold": 0.0}, {"threshold": 0.5})}
UNET_CACHES = {"deepcache": ({"interval": 1}, {"interval": 3}),
               "encoder_propagation": ({"interval": 1}, {"interval": 3})}
CASES = [(n, m) for n in TRANSFORMERS for m in TRANSFORMER_CACHES] + \
    [("unet", m) for m in UNET_CACHES]


def sampling_run(name):
    """(wrapped net, run): Euler with CFG 2 (cond and uncond in one batch), 6 steps."""
    _, net = tiny_net(name)
    cond, uncond = conditioning(name)
    process = tiny_process(name)
    sigmas = process.default_schedule(6)
    x = noise_like(net) * sigmas[0]
    model = cfg(process.denoiser(net), 2.0, uncond)

    @torch.no_grad()
    def run():
        return sample_euler(model, x, sigmas, extra_args=cond)

    return net, run


@pytest.mark.parametrize(("name", "method"), CASES)
def test_cache_attaches_and_removes_bit_identically(name, method):
    net, run = sampling_run(name)
    off, on = {**TRANSFORMER_CACHES, **UNET_CACHES}[method]
    ref = run()
    with apply_accel(net, method, off) as handle:
        assert torch.equal(run(), ref)  # never reusing is the uncached model
        assert handle.stats["cached"] == 0
    with apply_accel(net, method, on) as handle:
        cached = run()
        assert handle.stats["cached"] > 0 and handle.stats["full"] > 0
    assert not torch.equal(cached, ref) and torch.isfinite(cached).all()
    assert torch.equal(run(), ref)
    for module in net.modules():
        assert hook_names(module) == [] and "forward" not in module.__dict__


def test_caches_for_the_other_architecture_are_refused():
    pixart, _ = sampling_run("pixart")
    unet, _ = sampling_run("unet")
    with pytest.raises(ConfigError, match="need a UNet"):
        apply_accel(pixart, "deepcache", {})
    with pytest.raises(ConfigError, match="for a UNet use deepcache"):
        apply_accel(unet, "block_cache", {})
    with pytest.raises(ConfigError, match="ras needs a DiT"):
        apply_accel(pixart, "ras", {})
