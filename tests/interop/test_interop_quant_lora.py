"""difflab's quantizers on wrapped diffusers models (calibrated over sampling trajectories) and
diffusers-format LoRA adapters loaded through peft: each changes the output, its strength is
ordered as its format says, and removing it restores the model bit for bit."""

import json

import pytest
import torch
from interop_helpers import SKIP_REASON, conditioning, noise_like, tiny_net, tiny_process

pytest.importorskip("diffusers", reason=SKIP_REASON)

from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from difflab.config import ConfigError  # noqa: E402
from difflab.core.guidance import cfg  # noqa: E402
from difflab.core.samplers import sample_euler  # noqa: E402
from difflab.interop.lora import load_lora  # noqa: E402
from difflab.interop.networks import wrap  # noqa: E402
from difflab.interop.tiny import build_tiny  # noqa: E402
from difflab.quant import quantize  # noqa: E402

TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]


def sampler_run(name):
    """(net, run(model) -> samples): Euler, CFG 2, 4 steps, with `model` as the network."""
    _, net = tiny_net(name)
    cond, uncond = conditioning(name)
    process = tiny_process(name)
    sigmas = process.default_schedule(4)
    x = noise_like(net) * sigmas[0]

    @torch.no_grad()
    def run(model):
        return sample_euler(cfg(process.denoiser(model), 2.0, uncond), x, sigmas,
                            extra_args=cond)

    return net, run


def rel_error(a, b):
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("name", ["pixart", "sd3", "flux", "unet"])
def test_quantizers_apply_and_remove(name):
    net, run = sampler_run(name)
    ref = run(net)
    errors = {}
    for recipe in ("w8a8", "w4a4"):
        handle = quantize(net, recipe)
        assert any(".transformer_blocks.0." in n or ".attentions.0." in n for n in handle.layers)
        errors[recipe] = rel_error(run(net), ref)
        handle.remove()
    assert 0 < errors["w8a8"] < errors["w4a4"]
    assert torch.equal(run(net), ref)


def test_calibrated_recipes_on_a_trajectory(monkeypatch):
    net, run = sampler_run("pixart")
    ref = run(net)
    monkeypatch.setenv("DIFFLAB_ALLOW_SLOW_INT8", "1")  # the numerics, on any CPU
    for recipe in ("w8a8_static", "w4a4_svd", "mixed", "w8a8_real"):
        handle = quantize(net, recipe, calibrate=run)  # activations from every step
        out = run(net)
        assert torch.isfinite(out).all() and not torch.equal(out, ref), recipe
        handle.remove()
        assert torch.equal(run(net), ref), recipe


def lora_file(name, folder, *, alpha=8, metadata=True):
    """A diffusers-format LoRA file for tiny model `name`, written the way diffusers writes
    it (`save_lora_adapter` where the class has it; PixArt and DiT have not: peft's tensors
    and diffusers' metadata key); returns the model that had the adapter injected."""
    source = build_tiny(name)
    config = LoraConfig(r=4, lora_alpha=alpha, target_modules=TARGETS, init_lora_weights=False)
    with torch.random.fork_rng():
        torch.manual_seed(7)
        if hasattr(source, "save_lora_adapter") and metadata:
            source.add_adapter(config)
            source.save_lora_adapter(folder)
            return source
        inject_adapter_in_model(config, source, adapter_name="default")
    tensors = {f"transformer.{k}": v.contiguous()
               for k, v in get_peft_model_state_dict(source, adapter_name="default").items()}
    meta = {"lora_adapter_metadata": json.dumps({"r": 4, "lora_alpha": alpha,
                                                 "target_modules": TARGETS})}
    folder.mkdir(exist_ok=True)
    save_file(tensors, folder / "pytorch_lora_weights.safetensors",
              metadata=meta if metadata else None)
    return source


@pytest.mark.parametrize("name", ["pixart", "dit", "sd3", "flux", "unet"])
def test_lora_loads_scales_and_removes(name, tmp_path):
    source = lora_file(name, tmp_path)
    model, net = tiny_net(name)
    cond, _ = conditioning(name)
    x, t = noise_like(net), torch.tensor([10.0, 600.0])
    with torch.no_grad():
        ref, with_adapter = net(x, t, **cond), wrap(source)(x, t, **cond)
        handle = load_lora(net, tmp_path)
        assert torch.equal(net(x, t, **cond), with_adapter)  # the adapter diffusers had
        handle.set_scale(0.0)
        assert torch.equal(net(x, t, **cond), ref)  # scale 0 is the identity
        handle.remove()
        assert torch.equal(net(x, t, **cond), ref)
    assert list(net.state_dict()) == [f"model.{k}" for k in model.state_dict()]


def test_lora_rank_inferred_and_mismatches_refused(tmp_path):
    lora_file("pixart", tmp_path / "plain", alpha=4, metadata=False)  # alpha = r: no metadata
    _, net = tiny_net("pixart")
    handle = load_lora(net, tmp_path / "plain" / "pytorch_lora_weights.safetensors")
    assert handle.name == "lora" and len(handle._layers()) == 4 * 2 * 2  # 4 projections, 2 attn
    handle.remove()
    _, unet = tiny_net("unet")
    with pytest.raises(ConfigError, match="does not fit UNet2DConditionModel"):
        load_lora(unet, tmp_path / "plain")
    save_file({"lora_unet_x.lora_down.weight": torch.zeros(2, 2)}, tmp_path / "kohya.safetensors")
    with pytest.raises(ConfigError, match="kohya's format"):
        load_lora(net, tmp_path / "kohya.safetensors")
    with pytest.raises(ConfigError, match="no LoRA weights"):
        load_lora(net, tmp_path)


def test_pipeline_of_a_network_quantized_throughout():
    """SD3 has no float parameter left after W8A8 (its norms have no affine weights): the
    pipeline finds its device from the quantized buffers."""
    from difflab.core.processes import FlowProcess
    from difflab.runtime import Pipeline

    _, net = tiny_net("sd3")
    quantize(net, "w8a8")
    assert not list(net.parameters())
    assert Pipeline(net, FlowProcess(), None, net.input_shape).device == torch.device("cpu")
