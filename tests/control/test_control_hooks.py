"""The attention probe and the ControlNet attach through hooks: bit-identical at init and after
removal; the guidance energies fall along their own gradient."""

from __future__ import annotations

import pytest
import torch
from control_nets import all_hooks, inputs, tiny_unet

from difflab.config import ConfigError
from difflab.control.controlnet import ControlNet, apply_controlnet, is_zero_initialised
from difflab.control.guidance import ENERGIES, GuidanceConfig, Targets
from difflab.control.layout import MAP_CHANNELS, Layout
from difflab.control.probe import ProbeConfig, apply_attention_probe, token_maps


def test_the_probe_reads_maps_without_changing_the_output_and_removes_cleanly():
    net, (x, t, cond) = tiny_unet(), inputs()
    before = net(x, t, **cond)
    dicts = {id(m): dict(m.__dict__) for m in net.modules()}
    with apply_attention_probe(net) as probe:
        assert torch.equal(net(x, t, **cond), before)
        maps = probe.maps()
        assert len(maps) == 3  # down level 1, mid, up level 1
        for m in maps.values():
            assert m.shape == (2, 16, 5)
            assert torch.allclose(m.sum(-1), torch.ones(2, 16))
            assert m[0, :, 3:].abs().max() == 0  # padding gets no attention
        assert token_maps(probe).shape == (2, 5, 4, 4)
    assert all_hooks(net) == [] and torch.equal(net(x, t, **cond), before)
    assert all(dict(m.__dict__) == dicts[id(m)] for m in net.modules())
    with pytest.raises(ConfigError, match="out of range"):
        apply_attention_probe(net, ProbeConfig(blocks=(9,)))
    with pytest.raises(ConfigError, match="no cross-attention"):
        apply_attention_probe(net, ProbeConfig(blocks=(0,)))


def test_a_fresh_controlnet_leaves_the_base_bit_identical_and_removal_restores_it():
    net, (x, t, cond) = tiny_unet(), inputs()
    before = net(x, t, **cond)
    control = ControlNet(net)
    assert is_zero_initialised(control)
    cmap = torch.randn(2, MAP_CHANNELS, 8, 8)
    with apply_controlnet(net, control) as handle:
        with pytest.raises(ConfigError, match="no control map"):
            net(x, t, **cond)
        handle.set_map(cmap)
        assert torch.equal(net(x, t, **cond), before)
        with torch.no_grad():  # a trained (non-zero) branch changes the output
            control.zero_mid.weight.normal_(0, 0.1)
            control.hint[-1].weight.normal_(0, 0.1)
            for z in control.zero_skips[0]:
                z.weight.normal_(0, 0.1)
        changed = net(x, t, **cond)
        assert not torch.allclose(changed, before)
        handle.set_map(cmap[:1])  # one map per image: a CFG batch of 2 repeats it
        assert net(x[:1].repeat(2, 1, 1, 1), t[:1].repeat(2), **cond).shape == before.shape
    assert all_hooks(net) == [] and torch.equal(net(x, t, **cond), before)


def test_the_controlnet_trains_only_its_own_weights():
    net, (x, t, cond) = tiny_unet(), inputs()
    net.requires_grad_(False)
    control = ControlNet(net)
    with apply_controlnet(net, control) as handle:
        handle.set_map(torch.randn(2, MAP_CHANNELS, 8, 8))
        net(x, t, **cond).square().mean().backward()
    assert all(p.grad is None for p in net.parameters())
    assert control.zero_mid.weight.grad.abs().sum() > 0  # zero convs get gradients at init


@pytest.mark.parametrize("method", ["box", "attend-excite"])
def test_each_energy_falls_along_its_gradient(method):
    net, (x, t, cond) = tiny_unet(), inputs()
    boxes = torch.zeros(2, 2, 4, 4)
    boxes[:, 0, :, :2], boxes[:, 1, :, 2:] = 1, 1
    tokens = torch.zeros(2, 2, 5)
    tokens[:, 0, 1], tokens[:, 1, 2] = 1.0, 1.0
    targets = Targets(tokens, boxes, torch.ones(2, 2), cond["context_mask"].float())
    energy = ENERGIES.get(method)

    def e(z):
        with apply_attention_probe(net) as probe:
            net(z, t, **cond)
            return energy(token_maps(probe), targets)

    z = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(e(z), z)
    with torch.no_grad():
        assert e(x - 1e-2 * grad / grad.norm()) < e(x)


def test_guidance_config_refuses_bad_values():
    with pytest.raises(ConfigError, match="valid"):
        GuidanceConfig(method="nope")
    with pytest.raises(ConfigError):
        GuidanceConfig(scale=-1)
    assert Layout("a", ("a",), ((0, 0, 1, 1),)).objects() == [(None, None)]
