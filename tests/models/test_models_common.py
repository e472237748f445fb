"""Properties every denoiser shares: shapes, zero init, determinism, gradients, save/load,
attention paths, FLOP counts, configs and presets."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from model_helpers import TEXT_LEN, TINY, make_inputs, perturb
from torch.utils.flop_counter import FlopCounterMode

from difflab.config import ConfigError, dumps_toml, from_dict, to_dict
from difflab.io import load_tensors, save_tensors
from difflab.models import (
    PRESETS,
    build_model,
    config_from_dict,
    count_parameters,
    flops_per_image,
    set_attention_backend,
)
from difflab.registry import UnknownNameError

ARCHS = sorted(TINY)


def build(name: str, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    return build_model(TINY[name], **overrides).eval()


@pytest.mark.parametrize("name", ARCHS)
def test_fresh_model_predicts_exactly_zero(name):
    model = build(name)
    x, t, kw = make_inputs(model.config)
    out = model(x, t, **kw)
    assert out.shape == x.shape
    assert torch.equal(out, torch.zeros_like(x))


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("channels,size", [(3, 32), (4, 16)])
def test_every_preset_runs_in_pixel_and_latent_space(preset, channels, size):
    # on the meta device: shapes propagate without allocating or initialising (dit-b is 130M)
    with torch.device("meta"):
        model = build_model(preset, in_channels=channels, input_size=size)
        cfg = model.config
        x, t = torch.zeros(2, channels, size, size), torch.full((2,), 500.0)
        kw = {}
        if getattr(cfg, "context_dim", 0):
            kw["context"] = torch.zeros(2, 32, cfg.context_dim)
            kw["context_mask"] = torch.ones(2, 32, dtype=torch.bool)
        if getattr(cfg, "pooled_dim", 0):
            kw["pooled"] = torch.zeros(2, cfg.pooled_dim)
        out = model(x, t, **kw)
    assert out.shape == (2, channels, size, size)
    assert count_parameters(model) > 0


@pytest.mark.parametrize("name", ARCHS)
def test_forward_is_deterministic_and_batch_independent(name):
    a = perturb(build(name, seed=1))
    b = perturb(build(name, seed=1))
    x, t, kw = make_inputs(a.config, batch=3)
    with torch.no_grad():
        out_a, out_b = a(x, t, **kw), b(x, t, **kw)
        single = a(x[:1], t[:1], **{k: v[:1] for k, v in kw.items()})
    assert torch.equal(out_a, out_b)
    assert out_a.abs().sum() > 0
    torch.testing.assert_close(single, out_a[:1], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ARCHS)
def test_gradients_reach_every_parameter(name):
    model = perturb(build(name)).train()
    x, t, kw = make_inputs(model.config)
    model(x, t, **kw).square().mean().backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert dead == []


@pytest.mark.parametrize("name", ARCHS)
def test_save_load_round_trip(name, tmp_path):
    model = perturb(build(name, seed=2))
    path = save_tensors(tmp_path / "m.safetensors", model.state_dict(),
                        meta={"config": to_dict(model.config)})
    cfg = config_from_dict(model.config.arch, to_dict(model.config))
    fresh = build_model(cfg).eval()
    fresh.load_state_dict(load_tensors(path))
    x, t, kw = make_inputs(model.config)
    with torch.no_grad():
        assert torch.equal(fresh(x, t, **kw), model(x, t, **kw))


@pytest.mark.parametrize("name", ARCHS)
def test_sdpa_and_math_attention_agree(name):
    model = perturb(build(name))
    x, t, kw = make_inputs(model.config)
    kw = {**kw, "context_mask": kw["context_mask"].clone()} if "context_mask" in kw else kw
    if "context_mask" in kw:
        kw["context_mask"][0] = False  # an all-padding caption must not give NaN
    with torch.no_grad():
        math = set_attention_backend(model, "math")(x, t, **kw)
        sdpa = set_attention_backend(model, "sdpa")(x, t, **kw)
    assert torch.isfinite(math).all()
    torch.testing.assert_close(math, sdpa, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["mmdit", "pixart", "unet"])
def test_padding_tokens_do_not_change_the_output(name):
    model = perturb(build(name))
    x, t, kw = make_inputs(model.config, padded=False)
    kw["context_mask"][:, 3:] = False
    padded = {**kw, "context": kw["context"].clone()}
    padded["context"][:, 3:] = 100.0  # garbage in masked positions
    with torch.no_grad():
        torch.testing.assert_close(model(x, t, **kw), model(x, t, **padded))


def counted_flops(model, x, t, kw) -> int:
    from difflab.eval.cost import register_flop_formulas

    register_flop_formulas()  # what difflab.eval.cost.count_flops does first
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x, t, **kw)
    return counter.get_total_flops()


@pytest.mark.parametrize("name", ARCHS)
@pytest.mark.parametrize("backend", ["sdpa", "math"])
def test_analytic_flops_match_flop_counter(name, backend):
    model = set_attention_backend(build(name), backend)
    x, t, kw = make_inputs(model.config, batch=2)
    analytic = 2 * flops_per_image(model.config, context_len=TEXT_LEN)
    assert abs(counted_flops(model, x, t, kw) - analytic) <= 0.10 * analytic


@pytest.mark.parametrize("preset", ["pixart-s", "mmdit-s", "unet-tiny", "dit-tiny"])
def test_preset_flops_match_flop_counter(preset):
    model = build_model(preset).eval()
    cfg = model.config
    x = torch.randn(1, cfg.in_channels, cfg.input_size, cfg.input_size)
    kw = {}
    if getattr(cfg, "context_dim", 0):
        kw["context"] = torch.randn(1, 32, cfg.context_dim)
    if getattr(cfg, "pooled_dim", 0):
        kw["pooled"] = torch.randn(1, cfg.pooled_dim)
    analytic = flops_per_image(cfg, context_len=32)
    assert abs(counted_flops(model, x, torch.tensor([500.0]), kw) - analytic) <= 0.10 * analytic


@pytest.mark.parametrize("name", ARCHS)
def test_configs_round_trip_through_dict_and_toml(name):
    import tomllib

    cfg = TINY[name]
    assert from_dict(type(cfg), to_dict(cfg)) == cfg
    assert from_dict(type(cfg), tomllib.loads(dumps_toml(to_dict(cfg)))) == cfg


def test_build_model_names_bad_presets_and_keys():
    with pytest.raises(UnknownNameError, match="pixart-s"):
        build_model("pixart-xl")
    with pytest.raises(ConfigError, match="hidden_sise"):
        build_model("dit-tiny", hidden_sise=64)
    with pytest.raises(ConfigError, match="num_heads"):
        build_model("dit-tiny", num_heads=3)
    with pytest.raises(ConfigError, match="modulation"):
        dataclasses.replace(TINY["dit"], modulation="adaln")


@pytest.mark.parametrize("name", ARCHS)
def test_wrong_input_shapes_raise_clear_errors(name):
    model = build(name)
    x, t, kw = make_inputs(model.config)
    with pytest.raises(ValueError, match="expected x"):
        model(x[:, :1], t, **kw)
    if "context" in kw:
        with pytest.raises(ValueError, match="context"):
            model(x, t, **{k: v for k, v in kw.items() if k not in ("context", "context_mask")})
