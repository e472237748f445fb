"""T2I-Adapter and GLIGEN grounding attach through hooks: bit-identical at init, gone after
removal, trainable on the tiny pipeline, and a control folder is checked before use."""

from __future__ import annotations

import pytest
import torch
from control_nets import CTX, all_hooks, inputs, tiny_unet

from difflab.config import ConfigError
from difflab.control import gligen, t2i_adapter
from difflab.control.controlnet import parameter_count
from difflab.control.gligen import Gligen, apply_gligen
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


def test_a_fresh_gligen_leaves_the_base_bit_identical_and_removal_restores_it():
    net, (x, t, cond) = tiny_unet(), inputs()
    before = net(x, t, **cond)
    ground = Gligen(net)
    assert gligen.is_zero_initialised(ground) and len(ground.gated) == 3
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


@pytest.mark.parametrize("method", ["t2i-adapter", "gligen"])
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
