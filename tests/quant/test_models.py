"""Quantizing difflab's own models, calibrated over a sampler trajectory."""

from __future__ import annotations

import torch

from difflab.core.samplers import sample_euler
from difflab.models import DiTConfig, UNetConfig, build_model
from difflab.quant import QuantConfig, model_bytes, quantize, unet_skip_splits

DIT = DiTConfig(input_size=8, patch_size=2, hidden_size=32, depth=2, num_heads=2, num_classes=3)
UNET = UNetConfig(input_size=8, base_channels=8, channel_mult=(1, 2), attention_levels=(1,),
                  num_heads=2, norm_groups=4, context_dim=0, num_classes=3)


def _perturbed(cfg):
    """A built model with random (not zero-initialised) output layers."""
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.abs().max() == 0:
                p.normal_(0, 0.05)
    return model


def _sampler_run(cfg, steps: int = 4):
    x = torch.randn(2, cfg.in_channels, 8, 8, generator=torch.Generator().manual_seed(3))
    y = torch.tensor([0, 2])
    sigmas = torch.linspace(1.0, 0.0, steps + 1)

    def run(model):
        def denoiser(x, sigma, **kw):
            return x - sigma[:, None, None, None] * model(x, sigma * 1000, y=y)
        return sample_euler(denoiser, x, sigmas)
    return run


@torch.no_grad()
def test_dit_static_timestep_groups_then_remove():
    model = _perturbed(DIT)
    run = _sampler_run(DIT)
    ref = run(model)
    fp32 = model_bytes(model)
    cfg = QuantConfig(act_granularity="tensor", act_dynamic=False, timestep_groups=2,
                      exclude=("*embed*",))
    handle = quantize(model, cfg, calibrate=run)
    out = run(model)
    assert float((out - ref).square().mean() / ref.square().mean()) < 1e-2
    assert model_bytes(model) < fp32
    # a scale per timestep group, each from its own steps of the trajectory
    assert any(not torch.equal(m.act.scale[0], m.act.scale[1]) for m in handle.layers.values())
    handle.remove()
    assert torch.equal(run(model), ref)


@torch.no_grad()
def test_unet_shortcut_splits_select_the_concat_inputs():
    model = _perturbed(UNET)
    splits = unet_skip_splits(model)
    up_convs = {id(c) for st in model.up_stages for layer in st.layers
                for c in (layer.res.conv1, layer.res.skip)}
    named = dict(model.named_modules())
    picked = {id(named[s[3:].rsplit("=", 1)[0].replace("\\", "")]) for s in splits}
    assert picked == up_convs
    run = _sampler_run(UNET, steps=2)
    ref = run(model)
    cfg = QuantConfig(act_granularity="tensor", act_dynamic=False, act_split=splits)
    handle = quantize(model, cfg, calibrate=run)
    split_layers = [m for m in handle.layers.values() if m.act.split is not None]
    assert len(split_layers) == len(splits)
    assert float((run(model) - ref).square().mean() / ref.square().mean()) < 1e-2
    handle.remove()
    assert torch.equal(run(model), ref)
