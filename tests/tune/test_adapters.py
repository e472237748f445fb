"""Adapters on the shipped base: every method trains, saves, loads back (peft's own loader
too), composes and merges exactly; a bad adapter is a one-line error."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from difflab.config import ConfigError
from difflab.data.shapes import render_spec
from difflab.data.world import ObjectSpec, PromptSpec
from difflab.runtime import load
from difflab.tune.adapters import (
    apply_adapters,
    base_reference,
    combine,
    lora_factors,
    parse_adapter,
    save_adapter,
    ties,
)
from difflab.tune.fit import TuneConfig, tune
from difflab.tune.methods import METHODS, gradient_start, prepare_peft

BASE = "shapes-base"
SPECS = [PromptSpec(f"a {c} circle", "single", (ObjectSpec("circle", c),))
         for c in ("red", "blue", "green", "white")]
IMAGES = np.stack([render_spec(s, 32, seed=i)[0] for i, s in enumerate(SPECS)])
CAPTIONS = [s.text for s in SPECS]


def quick(method: str, **kw) -> TuneConfig:
    return TuneConfig(method=method, steps=2, batch_size=2, prior_images=2, **kw)


def state(net) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in net.state_dict().items()}


def outputs(pipe, prompts=("a red <star>", "a blue square")) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(len(prompts), *pipe.image_shape, generator=g)
    with torch.no_grad():
        return pipe.net(x, torch.full((len(prompts),), 0.5), **pipe.condition(list(prompts)))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One adapter folder per method, each from 2 steps on four circles."""
    root = tmp_path_factory.mktemp("adapters")
    out = {}
    for method in METHODS:
        pipe = load(BASE)
        result = tune(pipe, quick(method), IMAGES, CAPTIONS, progress=False)
        save_adapter(result, root / method, base_reference(BASE))
        out[method] = (root / method, result, outputs(pipe))
    return out


@pytest.mark.parametrize("method", METHODS)
def test_every_method_trains_saves_and_loads_back(trained, method):
    folder, result, tuned = trained[method]
    assert result.trainable > 0 and all(np.isfinite(result.losses))
    assert result.delta.numel() > 0
    pipe = load(folder)  # the base by name, the adapter merged in
    assert "adapters" in pipe.labels
    assert torch.allclose(outputs(pipe), tuned, atol=1e-4)
    assert not torch.allclose(outputs(load(BASE)), tuned, atol=1e-6)


def test_attention_lora_stays_under_one_percent_of_the_weights():
    pipe = load(BASE)
    base = sum(p.numel() for p in pipe.net.parameters())
    cfg = quick("lora", rank=2, alpha=2.0, targets=r"(attn\.(qkv|proj)|cross\.(q|kv|proj))$",
                prior_weight=0.0)
    result = tune(pipe, cfg, IMAGES, CAPTIONS, progress=False)
    assert 0 < result.trainable <= 0.01 * base


def test_peft_adapter_loads_through_peft_itself(trained):
    import peft

    folder, _, tuned = trained["lora"]
    pipe = load(BASE)
    model = peft.PeftModel.from_pretrained(pipe.net, str(folder))
    pipe.net = model
    assert torch.allclose(outputs(pipe), tuned, atol=1e-5)


def test_peft_attach_detach_leaves_the_base_bit_identical():
    import peft

    pipe = load(BASE)
    before = state(pipe.net)
    model = peft.get_peft_model(pipe.net, peft.LoraConfig(r=4, target_modules=r".*cross\.kv$"))
    restored = model.unload()
    after = restored.state_dict()
    assert set(after) == set(before)
    assert all(torch.equal(after[k], v) for k, v in before.items())


def test_merge_then_unmerge_is_exact_to_fp32_rounding(trained):
    pipe = load(BASE)
    before = state(pipe.net)
    merged = apply_adapters(pipe, [(trained["lora"][0], 0.7), (trained["difffit"][0], 0.5)])
    assert any(not torch.equal(pipe.net.state_dict()[k], v) for k, v in before.items())
    merged.unmerge()
    for k, v in before.items():
        assert torch.allclose(pipe.net.state_dict()[k], v, rtol=0, atol=1e-6), k


def test_an_adapter_at_weight_w_is_w_times_its_change(trained):
    params = state(load(BASE).net)
    delta = trained["sara"][1].delta
    half, full = combine([delta], [0.5], params), combine([delta], [1.0], params)
    assert all(torch.allclose(2 * half[k], full[k]) for k in full)


def test_ties_keeps_the_agreeing_large_entries():
    a = {"w": torch.tensor([4.0, -1.0, 2.0, 0.1])}
    b = {"w": torch.tensor([2.0, 3.0, -6.0, 0.2])}
    out = ties([a, b], [1.0, 1.0], density=0.5)["w"]
    # trimmed: a -> [4, 0, 2, 0], b -> [0, 3, -6, 0]; signs: +, +, -, 0
    assert torch.allclose(out, torch.tensor([4.0, 3.0, -6.0, 0.0]))


def test_textual_inversion_adds_its_token_to_the_encoder(trained):
    folder, result, _ = trained["textual"]
    assert list(result.delta.tokens) == ["<star>"]
    pipe = load(folder)
    tok = pipe.conditioner.cache.encoder.tokenizer
    assert "<star>" in tok.get_vocab()
    a, b = pipe.condition(["a red <star>"]), pipe.condition(["a red circle"])
    assert not torch.equal(a["context"], b["context"])


def test_an_adapter_for_another_base_is_refused(trained, tmp_path):
    folder, _, _ = trained["custom"]
    manifest = json.loads((folder / "difflab.json").read_text())
    manifest["base"]["sha256"] = "0" * 64
    bad = tmp_path / "other"
    bad.mkdir()
    for f in folder.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    (bad / "difflab.json").write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match="was tuned on base"):
        load(bad)


def test_a_damaged_or_incomplete_adapter_is_refused(trained, tmp_path):
    folder, _, _ = trained["lora"]
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in folder.iterdir():
        if f.name != "adapter_model.safetensors":
            (bad / f.name).write_bytes(f.read_bytes())
    with pytest.raises(ConfigError, match="missing"):
        load(bad)


def test_an_adapter_of_other_shapes_is_refused(trained, tmp_path):
    from difflab.io import load_tensors, save_tensors
    from difflab.runtime import read_manifest, write_manifest

    folder, _, _ = trained["custom"]
    bad = tmp_path / "shapes"
    bad.mkdir()
    tensors = load_tensors(folder / "delta.safetensors")
    name = next(iter(tensors))
    tensors[name] = torch.zeros(3, 3)
    save_tensors(bad / "delta.safetensors", tensors)
    m = read_manifest(folder)
    write_manifest(bad, m.kind, m.config, base=m.base)
    with pytest.raises(ConfigError, match="in the adapter but"):
        load(bad)


def test_adapter_weights_parse():
    assert parse_adapter("runs/a") == ("runs/a", 1.0)
    assert parse_adapter("runs/a:0.5") == ("runs/a", 0.5)
    with pytest.raises(ConfigError, match="must be a number"):
        parse_adapter("runs/a:half")


def test_a_bad_method_or_pattern_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown tuning method"):
        TuneConfig(method="lorax")
    pipe = load(BASE)
    with pytest.raises(ConfigError, match="matches no"):
        tune(pipe, quick("lora", targets=r"nothing$"), IMAGES, CAPTIONS, progress=False)


@pytest.mark.parametrize("preset", ["unet-tiny", "dit-tiny", "pixart-tiny", "mmdit-tiny"])
def test_default_targets_find_layers_in_every_native_model(preset):
    from difflab.runtime.build import build_network
    from difflab.train.config import ModelSection
    from difflab.tune.methods import DEFAULT_TARGETS, DIFFFIT_SCALED, matching

    net = build_network(ModelSection(preset=preset))
    names = matching(net, DEFAULT_TARGETS)
    assert any(n.endswith("qkv") for n in names) and any(n.endswith("proj") for n in names)
    assert matching(net, DIFFFIT_SCALED)


@pytest.mark.parametrize("conv", [False, True])
def test_a_joined_lowrank_change_adds_exactly_its_product(conv):
    """SVDQuant's LoRA path: joining (down, up) to a smoothed quantized layer with a low-rank
    branch adds up @ down applied to the unsmoothed input; restoring the branch is exact."""
    from difflab.quant.formats import get_format
    from difflab.quant.modules import ActQuantizer, QuantConv2d, QuantLinear, WeightSpec

    torch.manual_seed(0)
    spec = WeightSpec(get_format("int4"), "channel", 0, True)
    act = ActQuantizer(get_format("int8"))
    if conv:
        float_layer = torch.nn.Conv2d(6, 5, 3, padding=1)
        layer = QuantConv2d(float_layer, spec, act, smooth=torch.rand(6) + 0.5)
        down, up = torch.randn(2, 6, 3, 3), torch.randn(5, 2, 1, 1)
        x = torch.randn(2, 6, 4, 4)
        want = torch.nn.functional.conv2d(torch.nn.functional.conv2d(x, down, padding=1), up)
    else:
        layer = QuantLinear(torch.nn.Linear(6, 5), spec, act, smooth=torch.rand(6) + 0.5,
                            rank=2, lowrank_dtype="float32")
        down, up = torch.randn(3, 6), torch.randn(5, 3)
        x = torch.randn(4, 6)
        want = x @ (up @ down).T
    plain = layer(x)
    before = layer.join_lowrank(down, up)
    torch.testing.assert_close(layer(x) - plain, want, rtol=1e-4, atol=1e-4)
    layer.set_lowrank(*before)
    assert torch.equal(layer(x), plain)


def test_a_lora_joins_a_quantized_base_and_leaves_exactly(trained):
    """A LoRA on a W4A4 (SVDQuant) base joins its low-rank branches, changes the output, and
    unjoining gives the quantized base's outputs bit for bit; a DoRA adapter is refused."""
    from difflab.runtime import quantize_pipeline
    from difflab.tune.adapters import join_adapters

    pipe = load(BASE)
    quantize_pipeline(pipe, "w4a4_svd", calib_steps=2)
    plain = outputs(pipe)
    joined = join_adapters(pipe, [(trained["lora"][0], 1.0)])
    assert not torch.equal(outputs(pipe), plain)
    joined.unjoin()
    assert torch.equal(outputs(pipe), plain)
    with pytest.raises(ConfigError, match="only plain LoRA"):
        join_adapters(pipe, [(trained["dora"][0], 1.0)])


def test_the_moving_average_replaces_the_last_iterate():
    """With ema > 0 the trained tensors end as their average, not the last step's values."""
    changes = []
    for ema in (0.0, 0.5):
        pipe = load(BASE)
        result = tune(pipe, TuneConfig(method="difffit", steps=3, batch_size=2, prior_images=2,
                                       ema=ema), IMAGES, CAPTIONS, progress=False)
        changes.append(result.delta.dense)
    assert set(changes[0]) == set(changes[1])
    assert any(not torch.equal(changes[0][k], changes[1][k]) for k in changes[0])


def test_a_base_prior_target_starts_at_zero():
    """With the frozen base's prediction as the prior target, the prior loss of an adapter that
    starts as the identity (LoRA) is zero at the first step: the first loss is the concept's."""
    first = []
    for kw in ({"prior_target": "base"}, {"prior_weight": 0.0}, {}):
        result = tune(load(BASE), quick("lora", **kw), IMAGES, CAPTIONS, progress=False)
        first.append(result.losses[0])
    assert first[0] == pytest.approx(first[1], rel=1e-6)
    assert first[2] > first[1]


def test_res_conv_targets_add_the_mid_block_the_defaults_leave_out():
    from difflab.tune.methods import DEFAULT_TARGETS, RES_CONV_TARGETS, matching

    net = load(BASE).net
    mid = {n for n, _ in net.named_modules() if ".res1.conv" in n or ".res2.conv" in n}
    convs = set(matching(net, RES_CONV_TARGETS))
    assert mid and mid <= convs
    assert not mid & set(matching(net, DEFAULT_TARGETS))
    assert convs - mid == {n for n in matching(net, DEFAULT_TARGETS) if ".conv" in n}


def _tune_concepts():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[2] / "benchmarks/tune_concepts.py"
    spec = importlib.util.spec_from_file_location("tune_concepts", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_overrides_take_patterns_as_written_and_refuse_bad_ones():
    override = _tune_concepts()._override
    pattern = r"blocks\.2\.res\d\.conv[12]$|blocks\.[23]\..*cross\.kv$"
    assert override(f"lora.targets={pattern}") == ("lora", "targets", pattern)
    assert override('lora.targets="res\\\\d"') == ("lora", "targets", r"res\d")  # JSON
    assert override(r"lora.rank_pattern=blocks\.2\.res=2") == (
        "lora", "rank_pattern", r"blocks\.2\.res=2")
    assert override("lora.rank=2") == ("lora", "rank", 2)
    for bad, message in (("lora.nope=1", "no field 'nope'"), ("lora.rank=x", "not a JSON"),
                         ("rank=2", "method.field=value")):
        with pytest.raises(ValueError, match=message):
            override(bad)


def test_benchmark_adapter_folders_differ_by_base():
    module = _tune_concepts()
    folders = {module.adapter_folder("runs/tune", base, "star", "lora", "test")
               for base in ("shapes-base", "shapes-long", "/x/runs/shapes-long-2")}
    assert len(folders) == 3
    assert module.adapter_folder("runs", "shapes-long", "star", "lora", "dev") != \
        module.adapter_folder("runs", "shapes-long", "star", "lora", "test")


def test_bf16_tuning_runs_its_forward_passes_in_bf16():
    """precision bf16 autocasts the forward passes (the loss moves by bf16 rounding, not more)
    and trains the same tensors; fp32 is the default; an unknown name is one error."""
    assert TuneConfig().precision == "fp32"
    runs = {p: tune(load(BASE), quick("lora", precision=p), IMAGES, CAPTIONS, progress=False)
            for p in ("fp32", "bf16")}
    a, b = runs["fp32"], runs["bf16"]
    assert a.trainable == b.trainable and set(a.delta.dense) == set(b.delta.dense)
    assert a.losses[0] != b.losses[0]
    assert b.losses[0] == pytest.approx(a.losses[0], rel=0.05)
    with pytest.raises(ConfigError, match="unknown tuning precision 'fp8'"):
        TuneConfig(precision="fp8")


def test_the_unconditional_loss_holds_the_unconditional_branch():
    """uncond_weight adds a loss that is zero for an adapter starting as the identity (the first
    loss is unchanged) and, trained, keeps the empty caption's prediction nearer the base's."""
    def uncond(pipe):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(8, *pipe.image_shape, generator=g)
        with torch.no_grad():
            return pipe.net(x, torch.linspace(0.1, 0.9, 8), **pipe.condition([""] * 8))

    base_out = uncond(load(BASE))
    first, drift = [], []
    for w in (0.0, 10.0):
        pipe = load(BASE)
        result = tune(pipe, TuneConfig(method="lora", steps=30, batch_size=2, prior_images=2,
                                       lr=0.01, uncond_weight=w), IMAGES, CAPTIONS,
                      progress=False)
        first.append(result.losses[0])
        drift.append((uncond(pipe) - base_out).abs().mean().item())
    assert first[1] == pytest.approx(first[0], rel=1e-6)
    assert drift[1] < 0.7 * drift[0]


def test_a_principal_start_is_the_weights_top_directions_and_the_same_for_every_seed():
    """lora_init principal: each down-projection row is a top right singular vector of its base
    weight (norm 3^-1/2), the up-projection is zero (the model unchanged), whatever the seed."""
    from peft.tuners.lora import LoraLayer

    starts = []
    for seed in (0, 1):
        pipe = load(BASE)
        before = outputs(pipe)
        cfg = TuneConfig(method="lora", rank=1, targets=r"res\d?\.conv[12]$",
                         lora_init="principal", seed=seed)
        torch.manual_seed(seed)
        model = prepare_peft(pipe.net, cfg).net
        assert torch.equal(outputs(pipe), before)
        layers = [m for m in model.modules() if isinstance(m, LoraLayer)]
        starts.append([m.lora_A["default"].weight.detach().clone() for m in layers])
        m = layers[0]
        w = m.get_base_layer().weight.detach().reshape(m.get_base_layer().weight.shape[0], -1)
        top = torch.linalg.svd(w, full_matrices=False)[2][0]
        a = m.lora_A["default"].weight.detach().reshape(-1)
        assert torch.allclose(a.norm(), torch.tensor(3 ** -0.5), atol=1e-5)
        assert abs(torch.dot(a / a.norm(), top)) > 0.9999
    assert all(torch.equal(x, y) for x, y in zip(*starts, strict=True))
    with pytest.raises(ConfigError, match="lora_init 'principal' is for lora and dora"):
        tune(load(BASE), quick("loha", lora_init="principal"), IMAGES, CAPTIONS, progress=False)
    with pytest.raises(ConfigError, match="unknown lora_init"):
        TuneConfig(lora_init="pissa")


def test_a_gradient_start_is_the_gradients_top_directions_and_leaves_the_model_unchanged():
    """lora_init gradient (LoRA-GA's down-projection): each row is a top right singular vector
    of the base weight's gradient of the given loss; the model, its frozen weights and its
    gradients are as before; a tuning run so started is the same for the same seed."""
    from peft.tuners.lora import LoraLayer

    pipe = load(BASE)
    before = outputs(pipe)
    cfg = TuneConfig(method="lora", rank=2, targets=r"res\d?\.conv[12]$", lora_init="gradient")
    model = prepare_peft(pipe.net, cfg).net
    x = torch.randn(2, *pipe.image_shape, generator=torch.Generator().manual_seed(1))

    def loss(k: int) -> torch.Tensor:
        return model(x * (k + 1), torch.full((2,), 0.5), **pipe.condition(["a red circle"] * 2)
                     ).pow(2).mean()

    layer = next(m for m in model.modules() if isinstance(m, LoraLayer))
    w = layer.get_base_layer().weight
    w.requires_grad_(True)
    (loss(0) + loss(1)).backward()
    grad = w.grad.detach().reshape(w.shape[0], -1).clone()
    w.requires_grad_(False)
    w.grad = None
    assert gradient_start(model, loss, 2) == len(
        [m for m in model.modules() if isinstance(m, LoraLayer)])
    top = torch.linalg.svd(grad, full_matrices=False)[2][:2]
    a = layer.lora_A["default"].weight.detach().reshape(2, -1)
    assert torch.allclose(a.norm(dim=1), torch.full((2,), 3 ** -0.5), atol=1e-5)
    assert torch.allclose((a * 3 ** 0.5 @ top.T).abs(), torch.eye(2), atol=1e-3)
    assert torch.equal(outputs(pipe), before)
    assert all(p.grad is None for p in model.parameters())
    assert not any(p.requires_grad for n, p in model.named_parameters() if "lora_" not in n)
    runs = [tune(load(BASE), quick("lora", lora_init="gradient"), IMAGES, CAPTIONS,
                 progress=False).delta.dense for _ in range(2)]
    assert runs[0].keys() == runs[1].keys() and runs[0]
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])



def test_stratified_batches_see_every_image_once_and_one_noise_level_per_stratum():
    """stratified: a batch of 2N from N images holds each twice; its noise levels are the
    process's stratified ones; a tuning run so drawn is reproducible."""
    from types import SimpleNamespace

    from difflab.tune.fit import _loss

    pipe = load(BASE)
    seen: list[list[str]] = []

    def condition(texts):
        seen.append(texts)
        return pipe.condition(texts)

    times: list[torch.Tensor] = []

    def record(x, t, **kw):
        times.append(t)
        return torch.zeros_like(x)

    x = torch.zeros(4, *pipe.image_shape)
    cfg = TuneConfig(batch_size=8, stratified=True)
    _loss(pipe, SimpleNamespace(net=record), condition, x, CAPTIONS, cfg,
          torch.Generator().manual_seed(3))
    assert sorted(seen[0]) == sorted(CAPTIONS * 2)
    sigma = pipe.process.sigma_from_t(times[0]).double().sort().values
    edges = pipe.process.sigma_at(torch.arange(9, dtype=torch.float64) / 8).double()
    lo, hi = torch.minimum(edges[:-1], edges[1:]), torch.maximum(edges[:-1], edges[1:])
    assert ((sigma >= lo - 1e-4) & (sigma <= hi + 1e-4)).all()
    runs = [tune(load(BASE), quick("lora", stratified=True), IMAGES, CAPTIONS,
                 progress=False).losses for _ in range(2)]
    assert runs[0] == runs[1]
    with pytest.raises(ConfigError, match="stratified must be true or false"):
        TuneConfig(stratified="yes")


def test_a_shift_draws_the_noise_levels_of_the_shifted_flow_density():
    """shift: the tuning draws noise levels from the base's flow density with that shift (the
    same draws, each moved by SD3's shift map); a non-flow base refuses it in one line."""
    from types import SimpleNamespace

    from difflab.core.processes import VPProcess
    from difflab.core.schedules import flow_shift
    from difflab.tune.fit import _loss

    pipe = load(BASE)
    times: list[torch.Tensor] = []

    def record(x, t, **kw):
        times.append(t)
        return torch.zeros_like(x)

    x = torch.zeros(4, *pipe.image_shape)
    for shift in (0.0, 3.0):
        _loss(pipe, SimpleNamespace(net=record), pipe.condition, x, CAPTIONS,
              TuneConfig(batch_size=8, shift=shift), torch.Generator().manual_seed(3))
    plain, shifted = (pipe.process.sigma_from_t(t).double() for t in times)
    assert pipe.process.shift == 1.0 and (shifted > plain).all()
    assert torch.allclose(shifted, flow_shift(plain, 3.0), atol=1e-5)
    pipe.process = VPProcess()
    with pytest.raises(ConfigError, match="shift is for flow bases"):
        tune(pipe, quick("lora", shift=3.0), IMAGES, CAPTIONS, progress=False)
    with pytest.raises(ConfigError, match="shift"):
        TuneConfig(shift=-1.0)


def test_a_rank_pattern_gives_its_layers_their_own_rank_at_the_same_scale(tmp_path):
    """rank_pattern: the layers it names get its rank (the first match deciding), the rest
    cfg.rank; every layer's alpha / rank is cfg.alpha / cfg.rank; peft loads the saved
    adapter back with its ranks; a bad entry is a one-line error."""
    import peft
    from peft.tuners.lora import LoraLayer

    def ranks(model) -> dict[str, tuple[int, float]]:
        return {n.removeprefix("base_model.model."): (m.r["default"], m.scaling["default"])
                for n, m in model.named_modules() if isinstance(m, LoraLayer)}

    cfg = TuneConfig(method="lora", rank=1, alpha=2.0, targets=r"res\d?\.conv[12]$",
                     rank_pattern=r"blocks\.2\.res1\.=3;blocks\.2\.=2")
    got = ranks(prepare_peft(load(BASE).net, cfg).net)
    assert got["blocks.2.res1.conv1"] == (3, 2.0) and got["blocks.2.res2.conv2"] == (2, 2.0)
    assert got["blocks.0.layers.0.res.conv1"] == (1, 2.0)
    assert {s for _, s in got.values()} == {2.0}
    pipe = load(BASE)
    result = tune(pipe, quick("lora", rank=1, alpha=2.0, targets=r"res\d?\.conv[12]$",
                              rank_pattern=r"blocks\.2\.=2"), IMAGES, CAPTIONS,
                  progress=False)
    tuned = outputs(pipe)
    save_adapter(result, tmp_path / "a", base_reference(BASE))
    back = load(BASE)
    back.net = peft.PeftModel.from_pretrained(back.net, str(tmp_path / "a"))
    assert ranks(back.net)["blocks.2.res1.conv2"] == (2, 2.0)
    assert ranks(back.net)["blocks.1.layers.0.res.conv2"] == (1, 2.0)
    assert torch.allclose(outputs(back), tuned, atol=1e-5)
    factors = lora_factors(tmp_path / "a")  # what a quantized base's low-rank branch joins
    assert factors["blocks.2.res1.conv1"][0].shape[0] == 2
    for name, (down, up) in factors.items():
        change = result.delta.dense[f"{name}.weight"]
        assert torch.allclose((up.flatten(1) @ down.flatten(1)).reshape(change.shape), change,
                              atol=1e-6)
    for bad, message in (("blocks", "is not REGEX=RANK"), ("x=0", "is not REGEX=RANK"),
                         ("[=2", "is not a regular expression")):
        with pytest.raises(ConfigError, match=message):
            TuneConfig(rank_pattern=bad)
    with pytest.raises(ConfigError, match="matches none of the"):
        prepare_peft(load(BASE).net, TuneConfig(targets=r"res\.conv1$", rank_pattern="attn=2"))
    with pytest.raises(ConfigError, match="rank_pattern is for the peft methods"):
        TuneConfig(method="sara", rank_pattern="res=2")


def test_a_cosine_schedule_takes_the_learning_rate_down_to_zero():
    """schedule cosine: step 0 at the full rate, half-way at half, the last step near 0; the
    first step's loss is the constant schedule's, the later steps differ."""
    from difflab.tune.fit import lr_factor

    assert [lr_factor("cosine", s, 10) for s in (0, 5)] == [1.0, pytest.approx(0.5)]
    assert lr_factor("cosine", 9, 10) < 0.03 and lr_factor("constant", 9, 10) == 1.0
    runs = [tune(load(BASE), TuneConfig(steps=4, batch_size=2, prior_images=2, lr=0.05,
                                        schedule=s), IMAGES, CAPTIONS, progress=False).losses
            for s in ("constant", "cosine")]
    assert runs[0][0] == runs[1][0] and runs[0][1:] != runs[1][1:]
    with pytest.raises(ConfigError, match="unknown learning-rate schedule"):
        TuneConfig(schedule="linear")
