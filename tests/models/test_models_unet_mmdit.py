"""UNet stage structure (for DeepCache-style hooks) and MMDiT's joint blocks."""

from __future__ import annotations

import dataclasses

import torch
from model_helpers import TINY, make_inputs, perturb

from difflab.models import build_model


def test_unet_stages_run_by_hand_equal_the_forward():
    torch.manual_seed(0)
    model = perturb(build_model(dataclasses.replace(TINY["unet"], num_res_blocks=2))).eval()
    x, t, kw = make_inputs(model.config)
    assert len(model.blocks) == 2 * model.num_levels + 1
    with torch.no_grad():
        inputs = model.embed(x, t, **kw)
        h, skips = model.conv_in(x), []
        for stage in model.down_stages:
            h, s = stage(h, inputs)
            skips.append(s)
            assert len(s) == model.config.num_res_blocks
        h = model.mid_block(h, inputs)
        for stage, s in zip(model.up_stages, reversed(skips), strict=True):
            h = stage(h, s, inputs)
        by_hand = model.conv_out(torch.nn.functional.silu(model.norm_out(h)))
        assert torch.equal(by_hand, model(x, t, **kw))


def test_unet_shallow_path_with_cached_deep_features_is_exact_at_the_same_step():
    """DeepCache's premise: up_0 needs only down_0's skips and the deeper stages' output."""
    torch.manual_seed(0)
    model = perturb(build_model(TINY["unet"])).eval()
    x, t, kw = make_inputs(model.config)
    cache = {}
    hook = model.up_stages[-1].register_forward_pre_hook(
        lambda m, args: cache.__setitem__("deep", args[0]))
    with torch.no_grad():
        full = model(x, t, **kw)
        hook.remove()
        inputs = model.embed(x, t, **kw)
        h, skips0 = model.down_stages[0](model.conv_in(x), inputs)
        h = model.up_stages[-1](cache["deep"], skips0, inputs)
        shallow = model.conv_out(torch.nn.functional.silu(model.norm_out(h)))
    assert torch.equal(shallow, full)


def test_unet_without_text_or_labels():
    cfg = dataclasses.replace(TINY["unet"], context_dim=0, pooled_dim=0, num_classes=0,
                              attention_levels=(0, 1))
    torch.manual_seed(0)
    model = perturb(build_model(cfg))
    x = torch.randn(2, 3, 8, 8)
    out = model(x, torch.tensor([10.0, 900.0]))
    assert out.shape == x.shape and out.abs().sum() > 0


def test_mmdit_blocks_pass_both_streams_and_the_last_drops_text():
    torch.manual_seed(0)
    model = perturb(build_model(TINY["mmdit"])).eval()
    x, t, kw = make_inputs(model.config)
    outputs = []
    for block in model.blocks:
        block.register_forward_hook(lambda m, args, out: outputs.append(out))
    with torch.no_grad():
        model(x, t, **kw)
    (h0, c0), (h1, c1) = outputs
    assert h0.shape == (2, model.config.num_tokens, model.config.hidden_size)
    assert c0.shape == (2, kw["context"].shape[1], model.config.hidden_size)
    assert h1.shape == h0.shape and c1 is None


def test_mmdit_keeping_the_last_text_output_gives_the_same_image_stream():
    base = TINY["mmdit"]
    torch.manual_seed(0)
    keep = perturb(build_model(dataclasses.replace(base, drop_last_context=False))).eval()
    drop = build_model(base).eval()
    own = drop.state_dict()  # copy the shared weights; the dropped stream's q rows go unused
    state = {k: v[: own[k].shape[0]] if v.shape != own[k].shape else v
             for k, v in keep.state_dict().items() if k in own}
    last = f"blocks.{base.depth - 1}.context_stream"
    D = base.hidden_size
    for name in ("qkv.weight", "qkv.bias"):  # keys/values are rows D..3D of the fused qkv
        state[f"{last}.{name}"] = keep.state_dict()[f"{last}.{name}"][D:]
    state[f"{last}.adaLN_modulation.1.weight"] = keep.state_dict()[
        f"{last}.adaLN_modulation.1.weight"][: 2 * D]
    state[f"{last}.adaLN_modulation.1.bias"] = keep.state_dict()[
        f"{last}.adaLN_modulation.1.bias"][: 2 * D]
    drop.load_state_dict(state)
    x, t, kw = make_inputs(base)
    with torch.no_grad():
        torch.testing.assert_close(drop(x, t, **kw), keep(x, t, **kw))
