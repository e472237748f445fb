"""Block adapters: difflab's caches attach to diffusers models through `apply_accel`, equal the
uncached model when they never reuse, and leave bit-identical outputs once removed."""

import pytest
import torch

pytest.importorskip("diffusers", reason="diffusers is an optional extra: difflab[diffusers]")

from diffusers import DDIMScheduler, FlowMatchEulerDiscreteScheduler  # noqa: E402

from difflab.accel import apply_accel, hook_names  # noqa: E402
from difflab.core.samplers import get_sampler  # noqa: E402
from difflab.core.schedules import get_sigmas_flow  # noqa: E402
from difflab.interop import (  # noqa: E402
    diffusers_denoiser,
    tiny_dit,
    tiny_pixart,
    tiny_sd3,
    tiny_unet,
    vp_sigmas,
)

STEPS = 6
BUILD = {"unet": tiny_unet, "pixart": tiny_pixart, "sd3": tiny_sd3, "dit": tiny_dit}
OFF = {  # each method configured so that it never reuses anything
    "unet": [("deepcache", {"interval": 1}), ("encoder_propagation", {"interval": 1})],
    "pixart": [("block_cache", {"interval": 1}), ("teacache", {"threshold": 0.0}),
               ("first_block_cache", {"threshold": 0.0})],
}
OFF["sd3"] = OFF["dit"] = OFF["pixart"]
ON = {
    "unet": [("deepcache", {"interval": 3}), ("encoder_propagation", {"interval": 3})],
    "pixart": [("block_cache", {"interval": 3, "start": 1}),
               ("teacache", {"threshold": 10.0}), ("first_block_cache", {"threshold": 10.0})],
}
ON["sd3"] = ON["dit"] = ON["pixart"]


def _nets():
    return {kind: build(seed=3) for kind, build in BUILD.items()}


NETS = _nets()


@torch.no_grad()
def _sample(kind: str) -> torch.Tensor:
    net = NETS[kind]
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(2, 4, 8, 8, generator=g)
    cond = {"context": torch.randn(2, 5, 16, generator=g), "pooled": torch.randn(2, 8, generator=g),
            "y": torch.tensor([1, 7])}
    if kind == "sd3":
        scheduler, sigmas = FlowMatchEulerDiscreteScheduler(), get_sigmas_flow(STEPS)
    else:
        scheduler = DDIMScheduler()
        sigmas = vp_sigmas(scheduler, STEPS)
    model = diffusers_denoiser(net, scheduler)
    return get_sampler("euler")(model, noise * sigmas[0], sigmas, extra_args=cond)


@pytest.mark.parametrize("kind", list(BUILD))
def test_caches_that_never_reuse_equal_the_uncached_model(kind):
    base = _sample(kind)
    for name, options in OFF[kind]:
        with apply_accel(NETS[kind], name, options) as handle:
            assert torch.equal(_sample(kind), base), name
        assert handle.stats["cached"] == 0 and handle.stats["full"] > 0, name


@pytest.mark.parametrize("kind", list(BUILD))
def test_caches_reuse_and_remove_bit_identically(kind):
    base = _sample(kind)
    net = NETS[kind]
    for name, options in ON[kind]:
        handle = apply_accel(net, name, options)
        cached = _sample(kind)
        assert handle.stats["cached"] > 0, name
        assert not torch.equal(cached, base), name
        handle.remove()
        assert hook_names(net) == [] and all(hook_names(b) == [] for b in net.blocks)
        assert torch.equal(_sample(kind), base), name


def test_unet_and_sd3_forward_equal_diffusers_forward():
    g = torch.Generator().manual_seed(1)
    x, t = torch.randn(2, 4, 8, 8, generator=g), torch.tensor([999.0, 250.0])
    context, pooled = torch.randn(2, 5, 16, generator=g), torch.randn(2, 8, generator=g)
    mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])
    with torch.no_grad():
        unet, sd3 = NETS["unet"], NETS["sd3"]
        ref = unet.model(x, t, encoder_hidden_states=context,
                         encoder_attention_mask=mask.float()).sample
        assert torch.equal(unet(x, t, context=context, context_mask=mask), ref)
        ref = sd3.model(hidden_states=x, encoder_hidden_states=context,
                        pooled_projections=pooled, timestep=t).sample
        assert torch.equal(sd3(x, t, context=context, pooled=pooled), ref)


def test_wrappers_hold_each_weight_once():
    for net in NETS.values():
        assert len(net.state_dict()) == len(net.model.state_dict())


def test_unet_block_list_is_refused_by_transformer_caches():
    from difflab.config import ConfigError

    with pytest.raises(ConfigError, match="deepcache"):
        apply_accel(NETS["unet"], "block_cache", {"interval": 2})
