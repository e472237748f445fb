"""Edits: SDEdit at strength 0 is the identity and at strength 1 is sampling; masked and DiffEdit
edits keep every pixel outside their mask; P2P with identical prompts is plain sampling from the
inverted noise; the attention hook point leaves the network's numerics alone."""

import numpy as np
import pytest
import torch

from difflab.config import ConfigError
from difflab.data.shapes import render
from difflab.edit.editing import EditConfig, diffedit_mask, run_edit
from difflab.edit.inversion import denoise, invert
from difflab.edit.p2p import AttentionControlConfig, apply_attention_control, word_swap
from difflab.edit.suite import edit_suite
from difflab.models.layers import CrossAttention
from difflab.runtime import SampleConfig


def _images(n=2):
    cases = edit_suite("dev", n)
    x = torch.from_numpy(np.stack([render(c.source) for c in cases])).permute(0, 3, 1, 2)
    return x.float() / 127.5 - 1, cases


def test_sdedit_strength_0_returns_the_input_and_1_samples_from_the_seed(base):
    x, cases = _images()
    src, tgt = [c.source_prompt for c in cases], [c.target_prompt for c in cases]
    config = EditConfig(steps=4, cfg=2.0, seed=7)
    assert torch.equal(run_edit("sdedit", base, x, src, tgt, config, strength=0.0), x)
    full = run_edit("sdedit", base, x, src, tgt, config, strength=1.0)
    sampled = base.sample(tgt, [7, 8], SampleConfig(sampler="ddim", steps=4, cfg=2.0,
                                                    precision="fp32"))
    torch.testing.assert_close(full, sampled, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("method", ["masked", "diffedit"])
def test_mask_edits_keep_everything_outside_their_mask(base, method):
    x, cases = _images()
    src, tgt = [c.source_prompt for c in cases], [c.target_prompt for c in cases]
    config = EditConfig(steps=3, cfg=3.0)
    if method == "masked":
        masks = torch.from_numpy(np.stack([c.box() for c in cases]))
        out = run_edit("masked", base, x, src, tgt, config, masks=masks, strength=0.7)
    else:
        masks = diffedit_mask(base, x, src, tgt, samples=2)[:, 0]
        out = run_edit("diffedit", base, x, src, tgt, config, samples=2)
    outside = (~masks)[:, None].expand_as(x)
    assert torch.equal(out[outside], x[outside])
    assert not torch.equal(out, x)
    same = run_edit("diffedit", base, x, src, src, config, samples=2)  # nothing to change
    assert torch.equal(same, x)


def test_p2p_with_identical_prompts_is_sampling_from_the_inverted_noise(base):
    x, cases = _images()
    prompts = [c.source_prompt for c in cases]
    config = EditConfig(steps=3, cfg=3.0, inversion="negative-prompt")
    out = run_edit("p2p", base, x, prompts, prompts, config)
    model = base.process.denoiser(base.net)
    sigmas = base.process.default_schedule(3).float()
    cond = base.condition(prompts)
    inversion = invert("negative-prompt", model, x, sigmas, cond, 3.0,
                       base.conditioner.null("", 2, base.device), fixed_point_iters=1)
    with torch.no_grad():
        plain = denoise(model, inversion.noise, sigmas, cond, 3.0, inversion.uncond)
    torch.testing.assert_close(out, plain, atol=1e-5, rtol=1e-5)


def test_p2p_word_swap_changes_the_image_and_names_bad_prompt_pairs(base):
    x, cases = _images(4)
    i = next(j for j, c in enumerate(cases) if c.kind == "recolor")
    config = EditConfig(steps=3, cfg=3.0)
    c = cases[i]
    out = run_edit("p2p", base, x[i:i + 1], [c.source_prompt], [c.target_prompt], config)
    assert not torch.allclose(out, x[i:i + 1], atol=0.05)
    tok = base.conditioner.cache.encoder.tokenizer
    with pytest.raises(ConfigError, match="p2p swaps one word, but .* changes 'red' -> "
                                          "'big blue'"):
        word_swap(tok, "a red circle", "a big blue circle", 16)
    swap = word_swap(tok, "a red circle and a blue square", "a cyan circle and a blue square",
                     16)
    # "cyan" is two word pieces: both take the one piece of "red" at half weight each
    assert swap.source_tokens == (2,) and swap.target_tokens == (2, 3)
    assert swap.mapping[:, 2].sum() == 1 and swap.mapping[4, 3] == 1  # "circle" stays aligned
    swap = word_swap(tok, "a red circle", "an orange circle", 16)  # the article follows
    assert swap.source_word == "red" and swap.target_word == "orange"


def test_attention_hook_point_keeps_numerics_and_removal_is_exact(base):
    net = base.process.denoiser(base.net)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    cond = base.condition(["a red circle", "a blue square"])
    sigma = torch.full((2,), 0.6)
    with torch.no_grad():
        before = net(x, sigma, **cond)
        tok = base.conditioner.cache.encoder.tokenizer
        swaps = [word_swap(tok, "a red circle", "a red circle", 16)]
        handle = apply_attention_control(base.net, AttentionControlConfig(tau=0), swaps)
        assert all(len(m.probs._forward_hooks) == 1 for m in base.net.modules()
                   if isinstance(m, CrossAttention))
        from difflab.core.context import StepContext, step_context

        with step_context(StepContext(5, 10, 0.6)):  # tau 0: the maps pass through unchanged
            probed = net(x, sigma, **cond)
        handle.remove()
        after = net(x, sigma, **cond)
    torch.testing.assert_close(probed, before, atol=1e-5, rtol=1e-5)
    assert torch.equal(after, before)
    assert not any(m.probs._forward_hooks for m in base.net.modules()
                   if isinstance(m, CrossAttention))


def test_masked_edit_checks_its_masks(base):
    x, cases = _images()
    config = EditConfig(steps=2)
    prompts = [c.source_prompt for c in cases]
    with pytest.raises(ConfigError, match="does not match the 32x32 image"):
        run_edit("masked", base, x, prompts, prompts, config,
                 masks=torch.ones(2, 16, 16, dtype=torch.bool))
    with pytest.raises(ConfigError, match="edit 'masked' has no option 'tau'"):
        run_edit("masked", base, x, prompts, prompts, config, tau=0.5)
    with pytest.raises(ConfigError, match="unknown edit method 'warp'"):
        run_edit("warp", base, x, prompts, prompts, config)


def test_p2p_controller_injects_the_source_maps_and_reweights_the_swapped_word():
    from difflab.core.context import StepContext, step_context
    from difflab.edit.p2p import WordSwap, _Controller

    swap = WordSwap(torch.eye(4), (1,), (1,))
    probs = torch.rand(2, 2, 3, 4, generator=torch.Generator().manual_seed(0))  # [src; tgt]
    reweight = _Controller({}, AttentionControlConfig(tau=0.5, reweight=2.0), [swap])
    with step_context(StepContext(7, 10, 0.3)):  # past tau: the target keeps its own maps
        out = reweight.post_forward(None, (), {}, probs)
    assert torch.equal(out[0], probs[0])
    torch.testing.assert_close(out[1, ..., 1], 2 * probs[1, ..., 1])
    assert torch.equal(out[1, ..., [0, 2, 3]], probs[1, ..., [0, 2, 3]])
    with step_context(StepContext(2, 10, 0.8)):  # before tau: the source's maps
        out = reweight.post_forward(None, (), {}, probs)
    torch.testing.assert_close(out[1, ..., 1], 2 * probs[0, ..., 1])
    assert torch.equal(out[1, ..., 0], probs[0, ..., 0])


def test_object_edits_change_only_their_boxes(base):
    from difflab.edit.suite import edit_objects, source_images

    cases = edit_suite("dev", 4)  # one of each kind
    out = edit_objects(base, cases, EditConfig(steps=2, inversion="negative-prompt"))
    src = torch.from_numpy(source_images(cases)).permute(0, 3, 1, 2).float() / 127.5 - 1
    boxes = torch.from_numpy(np.stack([c.box() for c in cases]))[:, None].expand_as(src)
    assert torch.equal(out[~boxes], src[~boxes])
    assert not torch.equal(out[boxes], src[boxes])
