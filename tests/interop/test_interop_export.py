"""Native PixArt-form DiT and MMDiT to diffusers and back: bit-identical weights, the same
function to float32 rounding; architectures that do not match are refused by name."""

import pytest
import torch
from interop_helpers import SKIP_REASON

pytest.importorskip("diffusers", reason=SKIP_REASON)

from difflab.config import ConfigError  # noqa: E402
from difflab.interop.convert import from_diffusers, to_diffusers  # noqa: E402
from difflab.interop.networks import wrap  # noqa: E402
from difflab.interop.tiny import build_tiny  # noqa: E402
from difflab.models import build_model  # noqa: E402
from difflab.registry import UnknownNameError  # noqa: E402

SMALL = {"input_size": 16, "hidden_size": 32, "depth": 3, "num_heads": 2, "context_dim": 24}
PIXART = {**SMALL, "mlp_act": "gelu_tanh", "cross_norm": False, "sincos_order": "wh"}
NATIVE = {
    "pixart": ("pixart-tiny", PIXART),
    "mmdit-qknorm": ("mmdit-tiny", {**SMALL, "pooled_dim": 12, "mlp_act": "gelu_tanh"}),
    "mmdit-learned": ("mmdit-tiny", {**SMALL, "pooled_dim": 12, "mlp_act": "gelu_tanh",
                                     "qk_norm": False, "pos_embed": "learned"}),
}


def native(preset, overrides, seed=0):
    """A native net with every weight perturbed (a fresh one outputs exactly zero)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = build_model(preset, **overrides).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return net


def inputs(net, mask=True):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, net.config.in_channels, 16, 16, generator=g)
    kw = {"context": torch.randn(2, 5, 24, generator=g)}
    if mask:  # SD3 takes no text mask: its inputs are compared unpadded
        kw["context_mask"] = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    if net.config.arch == "mmdit":
        kw["pooled"] = torch.randn(2, 12, generator=g)
    return x, torch.tensor([20.0, 800.0]), kw


def assert_same_function(a, b, x, t, kw):
    with torch.no_grad():
        out_a, out_b = a(x, t, **kw), b(x, t, **kw)
    assert out_a.abs().max() > 0.1
    assert (out_a - out_b).abs().max() <= 1e-5 * out_a.abs().max()


@pytest.mark.parametrize("case", NATIVE)
def test_native_to_diffusers_and_back(case, tmp_path):
    net = native(*NATIVE[case])
    model = to_diffusers(net)
    model.save_pretrained(tmp_path)  # SD3's position table travels in its stored buffer
    loaded = type(model).from_pretrained(tmp_path).eval()
    x, t, kw = inputs(net, mask=net.config.arch == "dit")
    assert_same_function(net, wrap(loaded), x, t, kw)
    back = from_diffusers(loaded)
    assert back.config == net.config
    own, new = net.state_dict(), back.state_dict()
    assert own.keys() == new.keys() and all(torch.equal(own[k], new[k]) for k in own)


@pytest.mark.parametrize("name", ["pixart", "sd3"])
def test_diffusers_checkpoint_imports(name):
    # the tiny PixArt has learned-variance channels (dropped) and diffusers' sin-cos table;
    # this SD3 crops a 6x6 table to its 4x4 grid (imported as a learned table)
    model = build_tiny(name, **({"pos_embed_max_size": 6} if name == "sd3" else {}))
    net = from_diffusers(model)
    assert net.config.pos_embed == ("sincos" if name == "pixart" else "learned")
    g = torch.Generator().manual_seed(4)
    x, t = torch.randn(2, 4, 8, 8, generator=g), torch.tensor([3.0, 600.0])
    kw = {"context": torch.randn(2, 5, 24, generator=g)}
    if name == "sd3":
        kw["pooled"] = torch.randn(2, 12, generator=g)
    assert_same_function(wrap(model), net, x, t, kw)


def test_architectures_that_do_not_match_are_refused():
    with pytest.raises(ConfigError, match="sincos_order='hw' .*mlp_act='gelu' .*cross_norm=True"):
        to_diffusers(native("pixart-tiny", SMALL))
    with pytest.raises(ConfigError, match="modulation='adaln_zero'"):
        to_diffusers(native("dit-tiny", {**PIXART, "context_dim": 0, "modulation": "adaln_zero"}))
    with pytest.raises(ConfigError, match="pooled_dim=0"):
        to_diffusers(native("mmdit-tiny", {**SMALL, "pooled_dim": 0, "mlp_act": "gelu_tanh"}))
    with pytest.raises(UnknownNameError, match="'unet'; valid: dit, mmdit"):
        to_diffusers(build_model("unet-tiny"))
    for name in ("unet", "dit"):
        with pytest.raises(ConfigError, match="no native counterpart; importable: "
                                              "PixArtTransformer2DModel, SD3"):
            from_diffusers(build_tiny(name))
    with pytest.raises(ConfigError, match="use_additional_conditions=True"):
        from_diffusers(build_tiny("pixart", use_additional_conditions=True))
