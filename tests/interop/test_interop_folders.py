"""diffusers folders through difflab's loading path: a native checkpoint exported and imported,
a folder written by diffusers itself sampled and benched, and clear refusals."""

import json
import os

import numpy as np
import pytest
import torch
from interop_helpers import SKIP_REASON

pytest.importorskip("diffusers", reason=SKIP_REASON)

from difflab import cli  # noqa: E402
from difflab.config import ConfigError  # noqa: E402
from difflab.eval.bench import run_bench  # noqa: E402
from difflab.eval.commands import pipeline_target  # noqa: E402
from difflab.interop.folders import export_diffusers, import_diffusers  # noqa: E402
from difflab.interop.schedulers import build_scheduler  # noqa: E402
from difflab.interop.tiny import build_tiny  # noqa: E402
from difflab.io import save_tensors  # noqa: E402
from difflab.models import build_model  # noqa: E402
from difflab.runtime import SampleConfig, load, write_manifest  # noqa: E402
from difflab.text.hf import minilm_path  # noqa: E402

EXPORTABLE = {"input_size": 16, "hidden_size": 32, "depth": 2, "num_heads": 2,
              "mlp_act": "gelu_tanh", "cross_norm": False, "sincos_order": "wh"}
TEXT = {"encoder": "minilm", "max_length": 8}
PROMPTS, SEEDS = ["a red circle", "two blue squares"], [0, 1]
FP32 = {"precision": "fp32", "steps": 5}


def write_checkpoint(folder, preset, overrides, process):
    """A native checkpoint artefact (weights perturbed: a fresh DiT outputs exactly zero)."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = build_model(preset, **overrides)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    folder.mkdir(parents=True)
    save_tensors(folder / "model.safetensors", net.state_dict())
    config = {"model": {"preset": preset, "overrides": overrides}, "process": process,
              "data": {"name": "shapes", "options": {}}, "text": TEXT}
    write_manifest(folder, "checkpoint", config)
    return folder


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    ckpt = write_checkpoint(root / "ckpt", "pixart-tiny", EXPORTABLE,
                            {"name": "vp", "options": {"prediction": "v"}})
    export_diffusers(ckpt, root / "diffusers")
    return ckpt, root / "diffusers"


@pytest.fixture(scope="module")
def foreign(tmp_path_factory):
    """A folder as diffusers writes it: a 3-channel UNet taking MiniLM's 384-d states, an SD
    scheduler, and MiniLM as text_encoder/ and tokenizer/."""
    root = tmp_path_factory.mktemp("foreign")
    build_tiny("unet", cross_attention_dim=384).save_pretrained(root / "unet")
    build_scheduler({"_class_name": "EulerDiscreteScheduler", "beta_schedule": "scaled_linear",
                     "timestep_spacing": "trailing"}).save_pretrained(root / "scheduler")
    for name in ("text_encoder", "tokenizer"):
        os.symlink(minilm_path(), root / name)
    return root


def test_exported_folder_samples_like_the_checkpoint(exported):
    ckpt, folder = exported
    native, wrapped = load(ckpt), load(folder)
    assert wrapped.kind == "diffusers" and type(wrapped.net.model).__name__ == \
        "PixArtTransformer2DModel"
    assert wrapped.process == native.process
    config = SampleConfig(sampler="dpmpp_2m", cfg=3.0, **FP32)
    a, b = native.sample(PROMPTS, SEEDS, config), wrapped.sample(PROMPTS, SEEDS, config)
    assert (a - b).abs().max() <= 1e-5 * a.abs().max()


def test_import_gives_back_the_checkpoint(exported, tmp_path):
    ckpt, folder = exported
    import_diffusers(folder, tmp_path / "back")
    a, b = load(ckpt), load(tmp_path / "back")
    assert b.kind == "checkpoint" and a.net.config == b.net.config and a.process == b.process
    own, new = a.net.state_dict(), b.net.state_dict()
    assert own.keys() == new.keys() and all(torch.equal(own[k], new[k]) for k in own)


def test_cli_export_and_import(exported, tmp_path, capsys):
    ckpt, _ = exported
    assert cli.run(["diffusers", "export", str(ckpt), "--out", str(tmp_path / "d")]) == 0
    assert "transformer/diffusion_pytorch_model.safetensors" in capsys.readouterr().out
    assert cli.run(["diffusers", "import", str(tmp_path / "d"), "--out",
                    str(tmp_path / "n")]) == 0
    assert "model.safetensors" in capsys.readouterr().out
    assert cli.run(["diffusers", "export", str(tmp_path / "n"), "--out",
                    str(tmp_path / "d")]) == 2  # the folder exists
    assert "exists" in capsys.readouterr().err


def test_damaged_export_is_refused(exported, tmp_path):
    import shutil

    _, folder = exported
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    config = copy / "scheduler" / "scheduler_config.json"
    config.write_text(config.read_text().replace('"v_prediction"', '"epsilon"'))
    with pytest.raises(ConfigError, match="sha256 differs"):
        load(copy)


def test_folder_written_by_diffusers_samples(foreign):
    pipe = load(foreign)
    assert pipe.kind == "diffusers" and pipe.net.num_levels == 2
    images = pipe.generate(PROMPTS, SEEDS, SampleConfig(cfg=2.0, **FP32))
    assert images.shape == (2, 16, 16, 3) and images.dtype == np.uint8 and images.std() > 0


def test_folders_difflab_cannot_sample_are_refused(foreign, tmp_path):
    bare = tmp_path / "bare"
    (bare / "unet").mkdir(parents=True)
    for name in ("unet/config.json", "unet/diffusion_pytorch_model.safetensors",
                 "scheduler/scheduler_config.json"):
        (bare / name).parent.mkdir(exist_ok=True)
        (bare / name).write_bytes((foreign / name).read_bytes())
    with pytest.raises(ConfigError, match="names no text encoder"):
        load(bare)
    latent = tmp_path / "latent"
    build_tiny("pixart").save_pretrained(latent / "transformer")
    (latent / "scheduler").mkdir()
    (latent / "scheduler" / "scheduler_config.json").write_text(json.dumps(
        {"_class_name": "DDIMScheduler"}))
    with pytest.raises(ConfigError, match="4-channel latents"):
        load(latent)


def test_bench_takes_a_diffusers_folder(foreign, tmp_path):
    grid = {"baseline": "euler-4", "suite": "single", "max_prompts": 2, "seeds_per_prompt": 1,
            "batch_size": 2, "timing_repeats": 1, "timing_warmup": 0, "metrics": ["psnr"],
            "frontier_quality": "psnr", "strip_images": 2,
            "reference": {"name": "euler-8", "steps": 8, "sample": {"precision": "fp32"}},
            "points": [{"name": "euler-4", "steps": 4, "sample": {"precision": "fp32"}},
                       {"name": "deepcache", "steps": 4, "sample": {"precision": "fp32"},
                        "accel": {"method": "deepcache", "interval": 2}},
                       {"name": "w8a8", "steps": 4, "sample": {"precision": "fp32"},
                        "quant": {"recipe": "w8a8", "calib_steps": 2}, "timed": False}]}
    result = run_bench(pipeline_target(str(foreign)), grid, tmp_path / "out",
                       cache_dir=tmp_path / "cache")
    psnr = {p["name"]: p["quality"]["psnr"] for p in result.points}
    assert all(np.isfinite(v) for v in psnr.values())
    assert result.point("w8a8")["cost"]["weight_bytes"] < \
        result.point("euler-4")["cost"]["weight_bytes"]
    assert result.provenance["checkpoint"] == str(foreign)


def test_the_autotuner_takes_a_diffusers_folder(foreign, tmp_path, capsys):
    from difflab.autotune import Candidate, EvaluationStore, Space, parse_budget
    from difflab.autotune.accelerate import AccelerateSettings, run_accelerate
    from difflab.eval.commands import checkpoint_identity
    from difflab.runtime.plan import read_plans

    space = Space(samplers=("euler",), steps=(2, 4), cfg=(2.0,), shift=(0.0,), intervals=((),),
                  accel=("",), quant=("",))
    settings = AccelerateSettings(parse_budget("psnr>=10"), Candidate(steps=8, cfg=2.0), space,
                                  minutes=5, suite="single", calib_images=4, test_images=2,
                                  rungs=2, batch_size=4, timing_images=2, timing_repeats=1)
    run_accelerate(pipeline_target(str(foreign)), settings, tmp_path / "out",
                   store=EvaluationStore(None), cache_dir=tmp_path / "ref")
    plan = read_plans(tmp_path / "out" / "plan.json")["autotuned"]
    assert plan.checkpoint_sha256 == checkpoint_identity(foreign)
    assert cli.run(["sample", str(foreign), "-p", "a red circle", "--n", "1", "--plan",
                    str(tmp_path / "out" / "plan.json"), "--out", str(tmp_path / "g.png")]) == 0
    assert f"euler x{plan.sample['steps']}" in capsys.readouterr().out
