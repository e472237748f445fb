"""T2I-Adapter, ControlNet-XS and GLIGEN grounding attach through hooks: bit-identical at init,
gone after removal, trainable on the tiny pipeline, and a control folder is checked before use.
GLIGEN's visual-token positions reach its gated self-attention, and older folders load without
them."""

from __future__ import annotations

import json

import pytest
import torch
from control_nets import CTX, all_hooks, inputs, tiny_unet

from difflab.config import ConfigError
from difflab.control import controlnet_xs, gligen, t2i_adapter
from difflab.control.controlnet import parameter_count
from difflab.control.controlnet_xs import ControlNetXS, ControlNetXSConfig, apply_controlnet_xs
from difflab.control.gligen import GatedSelfAttention, Gligen, GligenConfig, apply_gligen
from difflab.control.layout import MAP_CHANNELS, Layout
from difflab.control.t2i_adapter import T2IAdapter, apply_t2i_adapter
from difflab.control.train import (
    ControlTrainConfig,
    apply_control,
    control_method,
    load_control,
    save_control,
    train_control,
)

LAYOUTS = [Layout("a red circle left of a blue square", ("red circle", "blue square"),
                  ((0.0, 0.2, 0.5, 0.7), (0.5, 0.2, 1.0, 0.7))),
           Layout("a green ring", ("green ring",), ((0.25, 0.25, 0.75, 0.75),))]


def fake_encode(phrases: list[str]) -> torch.Tensor:
    """Fixed pseudo-random (N, CTX) phrase embeddings."""
    return torch.stack([torch.randn(CTX, generator=torch.Generator().manual_seed(len(p) * 7
                                                                                  + ord(p[0])))
                        for p in phrases])


def test_a_fresh_t2i_adapter_leaves_the_base_bit_identical_and_removal_restores_it():
    net, (x, t, cond) = tiny_unet(), inputs()
    before = net(x, t, **cond)
    adapter = T2IAdapter(net)
    assert t2i_adapter.is_zero_initialised(adapter)
    with apply_t2i_adapter(net, adapter) as handle:
        with pytest.raises(ConfigError, match="no control map"):
            net(x, t, **cond)
        handle.set_map(torch.randn(2, MAP_CHANNELS, 8, 8))
        assert torch.equal(net(x, t, **cond), before)
        with torch.no_grad():  # a trained (non-zero) adapter changes the output
            for out in [*adapter.outs, adapter.zero_mid]:
                out.weight.normal_(0, 0.1)
        changed = net(x, t, **cond)
        assert not torch.allclose(changed, before)
        handle.set_layouts(LAYOUTS)  # maps rendered at the model's resolution
        assert not torch.equal(net(x, t, **cond), changed)
    assert all_hooks(net) == [] and torch.equal(net(x, t, **cond), before)


def test_a_fresh_controlnet_xs_leaves_the_base_bit_identical_and_reads_the_base_features():
    net, (x, t, cond) = tiny_unet(), inputs()
    before = net(x, t, **cond)
    branch = ControlNetXS(net)
    assert controlnet_xs.is_zero_initialised(branch)
    assert parameter_count(branch) > 0 and branch.down[0].layers[0].res.conv1.out_channels == 12
    with apply_controlnet_xs(net, branch) as handle:
        with pytest.raises(ConfigError, match="no control map"):
            net(x, t, **cond)
        handle.set_map(torch.randn(2, MAP_CHANNELS, 8, 8))
        assert torch.equal(net(x, t, **cond), before)
        with torch.no_grad():  # a trained (non-zero) branch changes the output
            for z in [*branch.zero_out, branch.zero_mid, *branch.zero_skips[0]]:
                z.weight.normal_(0, 0.1)
        changed = net(x, t, **cond)
        assert not torch.allclose(changed, before)
        with torch.no_grad():  # and what it writes depends on the base's features it reads
            branch.feed[1].weight.mul_(2.0)
        assert not torch.allclose(net(x, t, **cond), changed)
    assert all_hooks(net) == [] and torch.equal(net(x, t, **cond), before)


def test_a_controlnet_xs_width_the_base_cannot_take_is_one_error():
    with pytest.raises(ConfigError, match="width 5: level channels=5 must be a positive multiple"):
        ControlNetXS(tiny_unet(), ControlNetXSConfig(width=5))


@pytest.mark.parametrize("positions", [True, False])
def test_a_fresh_gligen_leaves_the_base_bit_identical_and_removal_restores_it(positions):
    net, (x, t, cond) = tiny_unet(), inputs()
    before = net(x, t, **cond)
    ground = Gligen(net, GligenConfig(positions=positions))
    assert gligen.is_zero_initialised(ground) and len(ground.gated) == 3
    assert all((g.proj_pos is not None) == positions for g in ground.gated)
    with apply_gligen(net, ground, fake_encode) as handle:
        with pytest.raises(ConfigError, match="no grounding"):
            net(x, t, **cond)
        handle.set_layouts(LAYOUTS)
        assert torch.equal(net(x, t, **cond), before)
        with torch.no_grad():  # an open gate changes the output
            for g in ground.gated:
                g.gamma.fill_(0.5)
        changed = net(x, t, **cond)
        assert not torch.allclose(changed, before)
        moved = [Layout(lay.prompt, lay.phrases, tuple((0.0, 0.0, 0.4, 0.4) for _ in lay.boxes))
                 for lay in LAYOUTS]
        handle.set_layouts(moved)  # the boxes matter
        assert not torch.allclose(net(x, t, **cond), changed)
        handle.set_layouts(LAYOUTS[:1])  # one layout per image: a CFG batch of 2 repeats it
        assert net(x[:1].repeat(2, 1, 1, 1), t[:1].repeat(2), **cond).shape == before.shape
    assert all_hooks(net) == [] and torch.equal(net(x, t, **cond), before)


@pytest.mark.parametrize("positions", [True, False])
def test_gligen_positions_tell_identical_visual_tokens_apart(positions):
    torch.manual_seed(0)
    gated = GatedSelfAttention(dim=8, token_dim=6, num_heads=2, pos_freqs=4 if positions else 0)
    with torch.no_grad():
        gated.gamma.fill_(0.5)
    x = torch.randn(1, 1, 8).expand(2, 16, 8)  # the same visual token at all 4x4 positions
    tokens, valid = torch.randn(2, 3, 6), torch.ones(2, 3, dtype=torch.bool)
    out = gated(x, tokens, valid)  # (2, 16, 8)
    spread = (out - out[:, :1]).abs().amax().item()
    if positions:
        assert spread > 1e-3  # each position attends differently
    else:
        assert spread < 1e-6  # nothing distinguishes the positions


def test_gligen_attention_probe_is_the_attention_its_forward_uses():
    torch.manual_seed(0)
    gated = GatedSelfAttention(dim=8, token_dim=6, num_heads=2, pos_freqs=4)
    with torch.no_grad():
        gated.gamma.fill_(0.5)
    x, tokens = torch.randn(2, 16, 8), torch.randn(2, 3, 6)
    valid = torch.tensor([[True, True, False], [True, False, False]])
    attn = gated.attention(x, tokens, valid)  # (2, heads, 16, 16 + 3)
    assert attn.shape == (2, 2, 16, 19)
    assert torch.allclose(attn.sum(-1), torch.ones(2, 2, 16))
    assert attn[0, :, :, 18].abs().max() == 0 and attn[1, :, :, 17:].abs().max() == 0
    _, _, v, _ = gated._attention_inputs(x, tokens, valid)
    out = gated.out((attn @ v).transpose(1, 2).flatten(-2)) * torch.tanh(gated.gamma)
    assert torch.allclose(out, gated(x, tokens, valid), atol=1e-5)


def test_gligen_token_centres_follow_the_layout_convention():
    centres = gligen.token_centres(4)  # a 2x2 grid, row-major: x to the right, y down
    assert torch.equal(centres, torch.tensor([[0.25, 0.25], [0.75, 0.25],
                                              [0.25, 0.75], [0.75, 0.75]]))


def test_gligen_positions_refuse_a_non_square_token_grid():
    gated = GatedSelfAttention(dim=8, token_dim=6, num_heads=2, pos_freqs=4)
    with pytest.raises(ConfigError, match="square token grid; got 12 visual tokens"):
        gated(torch.randn(1, 12, 8), torch.randn(1, 3, 6), torch.ones(1, 3, dtype=torch.bool))


def test_gligen_ignores_padding_tokens():
    net, (x, t, cond) = tiny_unet(), inputs()
    ground = Gligen(net)
    with torch.no_grad():
        for g in ground.gated:
            g.gamma.fill_(0.5)
    with apply_gligen(net, ground, fake_encode) as handle:
        handle.set_layouts(LAYOUTS)
        out = net(x, t, **cond)
        handle.grounding.phrases[1, 1:] = 100.0  # padding of the one-object layout
        handle.grounding.boxes[1, 1:] = 0.9
        assert torch.allclose(net(x, t, **cond), out, atol=1e-6)


@pytest.mark.parametrize("method", ["t2i-adapter", "controlnet-xs", "gligen"])
def test_each_adapter_trains_only_its_own_weights_on_the_tiny_pipeline(tiny_pipeline, method):
    base = {k: v.clone() for k, v in tiny_pipeline.net.state_dict().items()}
    net, metrics = train_control(tiny_pipeline, ControlTrainConfig(method=method, steps=2,
                                                                   batch_size=2), progress=False)
    assert metrics["steps_done"] == 2 and metrics["final_loss"] > 0
    assert net.method == method and parameter_count(net) > 0
    after = tiny_pipeline.net.state_dict()
    assert all(torch.equal(base[k], after[k]) for k in base)
    assert all_hooks(tiny_pipeline.net) == []
    if method == "gligen":
        assert not gligen.is_zero_initialised(net)  # the gates opened
        gates = metrics["gates"]  # the diagnostic a run keeps: |tanh(gamma)| per gated layer
        assert list(gates) == net.names and all(0 < v < 1 for v in gates.values())
    elif method == "controlnet-xs":
        assert not controlnet_xs.is_zero_initialised(net)
    else:
        assert not t2i_adapter.is_zero_initialised(net)


def test_a_control_folder_names_its_method_and_is_checked(tiny_pipeline, tmp_path):
    net = T2IAdapter(tiny_pipeline.net)
    cfg = ControlTrainConfig(method="t2i-adapter", steps=1)
    folder = tmp_path / "t2i"
    save_control(net, folder, {"path": "tiny", "sha256": ""}, cfg, {})
    assert control_method(folder) == "t2i-adapter"
    loaded = load_control(folder, tiny_pipeline)
    assert isinstance(loaded, T2IAdapter)
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(),
                                                 loaded.state_dict().values(), strict=True))
    with pytest.raises(ConfigError, match="holds a t2i-adapter adapter, not gligen"):
        load_control(folder, tiny_pipeline, "gligen")
    with pytest.raises(ConfigError, match="does not exist"):
        load_control(tmp_path / "nope", tiny_pipeline)
    with apply_control(tiny_pipeline, loaded) as handle:
        handle.set_layouts(LAYOUTS)
    with pytest.raises(ConfigError, match="valid"):
        ControlTrainConfig(method="lora")


def test_a_gligen_folder_saved_before_positions_existed_loads_without_them(tiny_pipeline,
                                                                            tmp_path):
    old = Gligen(tiny_pipeline.net, GligenConfig(positions=False))
    with torch.no_grad():
        for p in old.parameters():
            p.normal_(0, 0.1)
    folder = tmp_path / "gligen"
    save_control(old, folder, {"path": "tiny", "sha256": ""},
                 ControlTrainConfig(method="gligen", steps=1), {})
    manifest = folder / "difflab.json"
    data = json.loads(manifest.read_text())
    del data["config"]["gligen"]["positions"]  # what a folder written before the field holds
    manifest.write_text(json.dumps(data))
    loaded = load_control(folder, tiny_pipeline, "gligen")
    assert loaded.cfg == GligenConfig(positions=False)
    assert all(g.proj_pos is None for g in loaded.gated)
    assert all(torch.equal(a, b) for a, b in zip(old.state_dict().values(),
                                                 loaded.state_dict().values(), strict=True))
    fresh = Gligen(tiny_pipeline.net)  # a new adapter has positions, and saves the field
    save_control(fresh, tmp_path / "new", {"path": "tiny", "sha256": ""},
                 ControlTrainConfig(method="gligen", steps=1), {})
    assert load_control(tmp_path / "new", tiny_pipeline).cfg.positions


@pytest.mark.parametrize("dropout", [0.0, 1.0])
def test_layout_dropout_gives_the_adapter_empty_layouts(tiny_pipeline, monkeypatch, dropout):
    import difflab.control.train as train_module

    seen, real = [], train_module.apply_control

    def spy(pipe, net, *args):
        handle = real(pipe, net, *args)
        set_layouts = handle.set_layouts
        handle.set_layouts = lambda lays, device="cpu": (
            seen.extend(len(lay.boxes) for lay in lays), set_layouts(lays, device))
        return handle

    monkeypatch.setattr(train_module, "apply_control", spy)
    train_control(tiny_pipeline, ControlTrainConfig(method="t2i-adapter", steps=2, batch_size=4,
                                                    layout_dropout=dropout), progress=False)
    assert len(seen) == 8
    assert all(n == 0 for n in seen) if dropout else all(n > 0 for n in seen)
    with pytest.raises(ConfigError, match="layout_dropout"):
        ControlTrainConfig(layout_dropout=1.5)
