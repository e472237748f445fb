"""Wrapped diffusers models: the same numbers as diffusers' own forward, diffusers' state dict,
declared blocks, and clear errors."""

import pytest
import torch
from interop_helpers import NAMES, SKIP_REASON, conditioning, noise_like, tiny_net

pytest.importorskip("diffusers", reason=SKIP_REASON)

from difflab.config import ConfigError  # noqa: E402
from difflab.interop.networks import wrap  # noqa: E402
from difflab.interop.tiny import build_tiny  # noqa: E402


def diffusers_forward(name, model, x, t, cond):
    """The diffusers call a pipeline makes, with learned-variance channels dropped."""
    C = x.shape[1]
    if name == "pixart":
        out = model(x, encoder_hidden_states=cond["context"], timestep=t,
                    added_cond_kwargs={"resolution": None, "aspect_ratio": None},
                    encoder_attention_mask=cond["context_mask"]).sample
    elif name == "dit":
        out = model(x, timestep=t, class_labels=cond["y"]).sample
    elif name == "sd3":
        out = model(x, encoder_hidden_states=cond["context"],
                    pooled_projections=cond["pooled"], timestep=t).sample
    elif name == "flux":  # FLUX.1's pipeline: 2x2-patch tokens, ids, t in [0, 1], guidance
        B, _, H, W = x.shape
        tokens = x.view(B, C, H // 2, 2, W // 2, 2).permute(0, 2, 4, 1, 3, 5)
        ids = torch.zeros(H // 2, W // 2, 3)
        ids[..., 1] += torch.arange(H // 2)[:, None]
        ids[..., 2] += torch.arange(W // 2)[None, :]
        out = model(tokens.reshape(B, H * W // 4, C * 4), encoder_hidden_states=cond["context"],
                    pooled_projections=cond["pooled"], timestep=t / 1000,
                    img_ids=ids.reshape(-1, 3), txt_ids=torch.zeros(cond["context"].shape[1], 3),
                    guidance=torch.full((B,), 3.5)).sample
        out = out.view(B, H // 2, W // 2, C, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(x.shape)
    else:
        out = model(x, t, cond["context"], encoder_attention_mask=cond["context_mask"]).sample
    return out[:, :C]


@pytest.mark.parametrize("name", NAMES)
def test_wrapper_is_diffusers_forward_bit_for_bit(name):
    model, net = tiny_net(name)
    x, t = noise_like(net), torch.tensor([10.0, 700.0])
    cond, _ = conditioning(name)
    with torch.no_grad():
        ref = diffusers_forward(name, model, x, t, cond)
        out = net(x, t, **cond)
    assert out.shape == x.shape and ref.abs().max() > 0
    assert torch.equal(out, ref)


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_keeps_diffusers_keys_once(name):
    model, net = tiny_net(name)
    own = model.state_dict()
    assert list(net.state_dict()) == [f"model.{k}" for k in own]
    assert sum(p.numel() for p in net.parameters()) == sum(p.numel() for p in model.parameters())


def test_blocks_are_declared_like_native_models():
    for name in ("pixart", "dit"):  # diffusers' own list: its forward runs the hooked blocks
        model, net = tiny_net(name)
        assert net.blocks is model.transformer_blocks
    model, net = tiny_net("sd3")
    assert [b.block for b in net.blocks] == list(model.transformer_blocks)
    model, net = tiny_net("flux")  # double-stream, then single-stream blocks
    assert [b.block for b in net.blocks] == [*model.transformer_blocks,
                                             *model.single_transformer_blocks]
    model, net = tiny_net("unet")
    L = net.num_levels
    assert L == len(model.down_blocks) and len(net.blocks) == 2 * L + 1
    assert [b.block for b in net.blocks[:L]] == list(model.down_blocks)
    assert net.blocks[L].block is model.mid_block
    assert [b.block for b in net.blocks[L + 1:]] == list(model.up_blocks)  # deepest first


def test_sdxl_added_conditions():
    model = build_tiny("unet", addition_embed_type="text_time", addition_time_embed_dim=8,
                       projection_class_embeddings_input_dim=12 + 6 * 8)
    with pytest.raises(ConfigError, match="needs time_ids"):
        wrap(model)
    time_ids = (16.0, 16.0, 0.0, 0.0, 16.0, 16.0)
    net = wrap(model, time_ids=time_ids)
    cond, _ = conditioning("unet")
    pooled = torch.randn(2, 12, generator=torch.Generator().manual_seed(3))
    x, t = noise_like(net), torch.tensor([5.0, 900.0])
    with torch.no_grad():
        ref = model(x, t, cond["context"], encoder_attention_mask=cond["context_mask"],
                    added_cond_kwargs={"text_embeds": pooled,
                                       "time_ids": torch.tensor([time_ids] * 2)}).sample
        assert torch.equal(net(x, t, **cond, pooled=pooled), ref)
        with pytest.raises(ValueError, match="needs pooled"):
            net(x, t, **cond)


def test_errors_name_what_is_wrong():
    with pytest.raises(ConfigError, match="unknown diffusers model class 'Linear'.*"
                                          "PixArtTransformer2DModel"):
        wrap(torch.nn.Linear(2, 2))
    _, net = tiny_net("pixart")
    with pytest.raises(ValueError, match="text-conditioned"):
        net(noise_like(net), torch.tensor([1.0]))
    _, net = tiny_net("sd3")
    with pytest.raises(ValueError, match="needs context .* and pooled"):
        net(noise_like(net), torch.tensor([1.0]), context=torch.zeros(2, 5, 24))
    _, net = tiny_net("unet")
    with pytest.raises(ValueError, match="multiples of 2"):
        net(torch.zeros(1, 3, 15, 15), torch.tensor([1.0]), context=torch.zeros(1, 5, 24))
    with pytest.raises(ConfigError, match="out_channels=5"):
        wrap(build_tiny("dit", out_channels=5))
