"""DiT / PixArt options, micro-budget masking and the block hook contract."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from model_helpers import TEXT_LEN, TINY, make_inputs, perturb
from torch.utils.flop_counter import FlopCounterMode

from difflab.models import DiT, DiTConfig, build_model, flops_per_image

OPTIONS = {
    "adaln_single": {"modulation": "adaln_single"},
    "learned_pos": {"pos_embed": "learned"},
    "rope": {"pos_embed": "rope"},
    "qk_norm": {"qk_norm": True},
    "kv_compress": {"kv_compress": 2},
    "patch_mixer": {"patch_mixer_depth": 1},
    # PixArt-alpha's own choices (what diffusers' PixArtTransformer2DModel computes)
    "pixart_alpha": {"mlp_act": "gelu_tanh", "cross_norm": False, "sincos_order": "wh"},
    "all": {"pos_embed": "rope", "qk_norm": True, "kv_compress": 2, "patch_mixer_depth": 1,
            "modulation": "adaln_single"},
}


def model_with(base: str, **overrides) -> DiT:
    torch.manual_seed(0)
    return build_model(dataclasses.replace(TINY[base], **overrides)).eval()


@pytest.mark.parametrize("option", sorted(OPTIONS))
@pytest.mark.parametrize("base", ["dit", "pixart"])
def test_each_option_builds_trains_and_changes_the_function(base, option):
    off = {k: getattr(DiTConfig(), k) for k in OPTIONS[option]}  # the option switched off
    plain = perturb(model_with(base, **off))
    varied = perturb(model_with(base, **OPTIONS[option]))
    x, t, kw = make_inputs(plain.config)
    out = varied(x, t, **kw)
    assert out.shape == x.shape and torch.isfinite(out).all()
    out.square().mean().backward()
    dead = [n for n, p in varied.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert dead == []
    with torch.no_grad():
        assert not torch.allclose(out, plain(x, t, **kw))
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        varied(x, t, **kw)
    analytic = 2 * flops_per_image(varied.config, context_len=TEXT_LEN)
    assert abs(counter.get_total_flops() - analytic) <= 0.10 * analytic


def test_rope_model_runs_at_other_resolutions():
    model = perturb(model_with("pixart", pos_embed="rope"))
    x, t, kw = make_inputs(model.config, size=12)
    assert model(x, t, **kw).shape == x.shape


def test_kv_compression_starts_as_average_pooling():
    model = model_with("pixart", kv_compress=2)
    attn = model.blocks[0].attn
    tokens = torch.randn(1, 16, 32)  # a 4 x 4 grid
    pooled = attn._compress(tokens, (4, 4))
    expected = torch.nn.functional.avg_pool2d(tokens.transpose(1, 2).reshape(1, 32, 4, 4), 2)
    torch.testing.assert_close(pooled, expected.flatten(2).transpose(1, 2))


@pytest.mark.parametrize("options", [{}, {"pos_embed": "rope", "patch_mixer_depth": 1},
                                     {"kv_compress": 2, "qk_norm": True}])
def test_masking_with_ratio_zero_equals_the_unmasked_forward(options):
    model = perturb(model_with("pixart", **options))
    x, t, kw = make_inputs(model.config)
    with torch.no_grad():
        masked = model.forward_masked(x, t, **kw, mask_ratio=0.0)
        assert torch.equal(masked.out, model(x, t, **kw))
    assert masked.keep.all() and masked.keep_pixels.all()


def test_masking_keeps_a_seeded_subset_and_zeroes_the_rest():
    model = perturb(model_with("pixart", pos_embed="rope", patch_mixer_depth=1))
    x, t, kw = make_inputs(model.config)
    run = lambda seed: model.forward_masked(  # noqa: E731
        x, t, **kw, mask_ratio=0.75, generator=torch.Generator().manual_seed(seed))
    a, b, c = run(0), run(0), run(1)
    n = model.config.num_tokens
    assert a.keep.sum(dim=1).tolist() == [n // 4] * x.shape[0]
    assert torch.equal(a.out, b.out) and torch.equal(a.keep, b.keep)
    assert not torch.equal(a.keep, c.keep)
    assert torch.equal(a.out * ~a.keep_pixels, torch.zeros_like(a.out))
    assert (a.out * a.keep_pixels).abs().sum() > 0
    assert a.keep_pixels.float().mean().item() == a.keep.float().mean().item()


def test_masking_cuts_backbone_flops_by_the_ratio():
    cfg = dataclasses.replace(TINY["pixart"], depth=4, patch_mixer_depth=1, input_size=16)
    model = build_model(cfg).eval()
    x, t, kw = make_inputs(cfg, batch=1)
    for ratio in (0.5, 0.75):
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model.forward_masked(x, t, **kw, mask_ratio=ratio)
        analytic = flops_per_image(cfg, mask_ratio=ratio, context_len=TEXT_LEN)
        assert abs(counter.get_total_flops() - analytic) <= 0.10 * analytic
        mixer_free = dataclasses.replace(cfg, patch_mixer_depth=0)
        full = flops_per_image(mixer_free, context_len=TEXT_LEN)
        kept = flops_per_image(mixer_free, mask_ratio=ratio, context_len=TEXT_LEN)
        assert kept <= (1 - ratio) * full * 1.05  # attention shrinks quadratically


def test_masking_refuses_kv_compression_and_bad_ratios():
    model = model_with("pixart", kv_compress=2)
    x, t, kw = make_inputs(model.config)
    with pytest.raises(ValueError, match="kv_compress"):
        model.forward_masked(x, t, **kw, mask_ratio=0.5)
    with pytest.raises(ValueError, match="mask_ratio"):
        model.forward_masked(x, t, **kw, mask_ratio=1.0)


def test_null_label_is_the_default_and_labels_need_a_class_model():
    model = perturb(model_with("dit"))
    x, t, _ = make_inputs(model.config)
    null = torch.full((x.shape[0],), model.config.num_classes)
    with torch.no_grad():
        assert torch.equal(model(x, t), model(x, t, y=null))
    with pytest.raises(ValueError, match="num_classes=0"):
        model_with("pixart")(x, t, y=null, **make_inputs(TINY["pixart"])[2])


def test_block_hooks_see_tokens_and_removing_them_restores_outputs():
    model = perturb(model_with("pixart", patch_mixer_depth=1))
    x, t, kw = make_inputs(model.config)
    with torch.no_grad():
        reference = model(x, t, **kw)
    seen = []
    pre = model.blocks[1].register_forward_pre_hook(lambda m, args: seen.append(args[0].shape))
    post = model.blocks[1].register_forward_hook(lambda m, args, out: out * 0)
    with torch.no_grad():
        hooked = model(x, t, **kw)
    assert seen == [(x.shape[0], model.config.num_tokens, model.config.hidden_size)]
    assert not torch.equal(hooked, reference)
    pre.remove()
    post.remove()
    with torch.no_grad():
        assert torch.equal(model(x, t, **kw), reference)


def test_autocast_runs_the_token_stream_in_bf16_close_to_fp32():
    torch.manual_seed(0)
    model = DiT(TINY["pixart"])
    for p in model.parameters():  # leave the zero init so the output is not trivially zero
        p.data.add_(torch.randn(p.shape) * 0.05)
    x, t, kw = make_inputs(model.config)
    seen = []
    model.blocks[0].register_forward_pre_hook(lambda m, args: seen.append(args[0].dtype))
    with torch.no_grad():
        full = model(x, t, **kw)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half = model(x, t, **kw)
    assert seen == [torch.float32, torch.bfloat16]
    assert ((half.float() - full).norm() / full.norm()).item() < 0.03
