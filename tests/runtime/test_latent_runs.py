"""Latent diffusion end to end: an autoencoder folder, a run trained on its latents, load() ->
a Pipeline that decodes to pixels, and the one-line errors for what does not fit."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from difflab.cli import run as cli
from difflab.config import ConfigError, to_dict
from difflab.data.shapes_dataset import ShapesConfig
from difflab.models.autoencoder import AutoencoderConfig, AutoencoderTrainConfig, fit_autoencoder
from difflab.runtime import SampleConfig, load, read_manifest
from difflab.runtime import artefacts as art
from difflab.runtime.artefacts import sha256_file
from difflab.runtime.latent import AE_WEIGHTS, read_autoencoder, write_autoencoder
from difflab.train.trainer import Trainer

FAST = SampleConfig(steps=3, precision="fp32")
AE = dict(base_channels=8, norm_groups=4, downsample_factor=2, latent_channels=4)
SHAPES16 = {"size": 16, "kinds": ["single"], "max_objects": 1, "conditioning": "class",
            "length": 64}


def tiny_autoencoder(out: Path, seed: int = 0) -> Path:
    """A 2-step autoencoder on 16x16 shapes (f = 2: 8x8x4 latents) written as a folder."""
    cfg = AutoencoderTrainConfig(model=AutoencoderConfig(**AE), data=ShapesConfig(size=16),
                                 steps=2, batch_size=4, eval_images=4, seed=seed)
    model, metrics = fit_autoencoder(cfg, log=lambda _: None)
    return write_autoencoder(model, out, to_dict(cfg), metrics, {"command": "test"})


def latent_settings(autoencoder: Path, **model) -> dict:
    """A class-conditional DiT on the 8x8x4 latents of 16x16 single-object shapes, 3 steps."""
    net = {"input_size": 8, "patch_size": 2, "hidden_size": 32, "depth": 1, "num_heads": 2,
           "num_classes": 48, "in_channels": 4, **model}
    return {"model.preset": "dit-tiny", "model.overrides": net,
            "latent.autoencoder": str(autoencoder), "data.name": "shapes",
            "data.options": SHAPES16, "text.encoder": "none", "schedule.steps": 3,
            "run.ckpt_every": 3}


@pytest.fixture(scope="module")
def latent_run(tmp_path_factory, tiny_trainer):
    root = tmp_path_factory.mktemp("latent")
    ae = tiny_autoencoder(root / "ae")
    return tiny_trainer(root / "run", latent_settings(ae)), ae


def test_autoencoder_folder_round_trips_with_its_hash_and_metrics(tmp_path):
    folder = tiny_autoencoder(tmp_path / "ae")
    manifest = read_manifest(folder)
    assert manifest.kind == "autoencoder" and set(manifest.files) == {AE_WEIGHTS}
    assert manifest.files[AE_WEIGHTS] == sha256_file(folder / AE_WEIGHTS)
    assert manifest.config["model"]["downsample_factor"] == 2
    assert {"psnr", "scale_factor"} <= set(manifest.metrics)
    model = read_autoencoder(folder)
    assert float(model.scale_factor) == pytest.approx(manifest.metrics["scale_factor"])
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    z = model.encode(x).mean * model.scale_factor
    again = read_autoencoder(folder)
    torch.testing.assert_close(again.decode_latents(z), model.decode_latents(z), rtol=0, atol=0)


def test_latent_run_loads_as_a_pipeline_that_decodes_to_pixels(latent_run):
    run, ae = latent_run
    pipe = load(run.path)
    assert pipe.image_shape == (4, 8, 8) and pipe.pixel_shape == (3, 16, 16)
    folder = art.resolve(run.path)
    assert read_manifest(folder).files[AE_WEIGHTS] == sha256_file(ae / AE_WEIGHTS)
    images = pipe.generate(["a red circle", "a blue square"], [3, 4], FAST)
    assert images.shape == (2, 16, 16, 3) and images.dtype == np.uint8
    np.testing.assert_array_equal(images, pipe.generate(["a red circle", "a blue square"],
                                                        [3, 4], FAST))
    other = pipe.generate(["a red circle"], [5], FAST)
    assert not np.array_equal(other[0], images[0])
    assert "latents" in pipe.describe()


def test_loaded_latent_run_samples_what_the_trained_network_decodes(latent_run):
    run, ae = latent_run
    memory = run.memory  # the conftest pipeline denoises latents without decoding them
    memory.image_shape = (4, 8, 8)
    memory.autoencoder = read_autoencoder(ae)
    prompts, seeds = ["a green triangle", "a red circle"], [1, 2]
    np.testing.assert_array_equal(load(run.path).generate(prompts, seeds, FAST),
                                  memory.generate(prompts, seeds, FAST))


def test_sample_and_eval_commands_take_a_latent_run(latent_run, tmp_path, capsys):
    run, _ = latent_run
    out = tmp_path / "grid.png"
    assert cli(["sample", str(run.path), "-p", "a red circle", "--n", "2", "--steps", "2",
                "--out", str(out)]) == 0
    assert out.is_file()
    assert cli(["eval", str(run.path), "--suite", "single", "--steps", "2"]) == 0
    assert "single" in capsys.readouterr().out


def test_trainer_latents_are_seeded_per_step_and_split_like_the_batch(latent_run):
    run, _ = latent_run
    from difflab.train import distributed as ddp
    from difflab.train.parts import build_parts

    parts = build_parts(run.config)
    trainer = Trainer(run.config, parts, ddp.init_distributed("cpu"), run.path)
    x = torch.stack([parts.dataset[i]["image"] for i in range(16)])
    z = trainer._encode(x, 7, 0, 16)
    assert z.shape == (16, 4, 8, 8)
    torch.testing.assert_close(z, trainer._encode(x, 7, 0, 16), rtol=0, atol=0)
    halves = torch.cat([trainer._encode(x[:8], 7, 0, 8), trainer._encode(x[8:], 7, 8, 16)])
    torch.testing.assert_close(halves, z)  # micro-batches/ranks draw from the global batch
    assert not torch.equal(z, trainer._encode(x, 8, 0, 16))
    mean = parts.autoencoder.encode(x).mean * parts.autoencoder.scale_factor
    assert not torch.equal(z, mean)
    from dataclasses import replace

    trainer.cfg = replace(run.config, latent=replace(run.config.latent, posterior="mean"))
    torch.testing.assert_close(trainer._encode(x, 7, 0, 16), mean)


def test_a_network_that_does_not_denoise_the_latents_is_refused(latent_run, tmp_path,
                                                                 tiny_trainer):
    _, ae = latent_run
    with pytest.raises(ConfigError, match=r"denoises 3x8x8 .* latents are 4x8x8"):
        tiny_trainer(tmp_path / "bad", latent_settings(ae, in_channels=3))
    with pytest.raises(ConfigError, match=r"latents are 4x8x8; .*input_size = 8"):
        tiny_trainer(tmp_path / "bad2", latent_settings(ae, input_size=16, patch_size=4))


def test_unknown_or_mismatched_autoencoders_are_one_line_errors(latent_run, tmp_path,
                                                                 tiny_trainer):
    run, ae = latent_run
    with pytest.raises(ConfigError, match="not a folder"):
        tiny_trainer(tmp_path / "a", latent_settings(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="'checkpoint' artefact, not an autoencoder"):
        tiny_trainer(tmp_path / "b", latent_settings(art.resolve(run.path)))
    folder = shutil.copytree(art.resolve(run.path), tmp_path / "ckpt")
    other = tiny_autoencoder(tmp_path / "other", seed=1)
    shutil.copyfile(other / AE_WEIGHTS, folder / AE_WEIGHTS)  # another run's autoencoder
    with pytest.raises(ConfigError, match="sha256 differs"):
        load(folder)
    (folder / AE_WEIGHTS).unlink()
    with pytest.raises(ConfigError, match=f"latent-space model but no {AE_WEIGHTS}"):
        load(folder)


def test_train_ae_command_writes_a_folder_and_refuses_a_used_one(tmp_path, capsys):
    config = tmp_path / "ae.toml"
    config.write_text("steps = 1\nbatch_size = 2\neval_images = 2\n[model]\n"
                      "base_channels = 8\nnorm_groups = 4\n[data]\nsize = 16\n")
    out = tmp_path / "ae"
    assert cli(["train-ae", str(config), "--out", str(out), "-o", "seed=3"]) == 0
    manifest = read_manifest(out)
    assert manifest.kind == "autoencoder" and manifest.config["seed"] == 3
    assert manifest.provenance["date"]
    assert cli(["train-ae", str(config), "--out", str(out)]) == 2
    assert "not an empty folder" in capsys.readouterr().err
    assert cli(["train-ae", str(config), "--out", str(tmp_path / "x"), "-o", "steps=0"]) == 2


def test_an_exported_latent_model_keeps_its_autoencoder(latent_run, tmp_path):
    from difflab.runtime import export_model

    run, ae = latent_run
    manifest = export_model(run.path, tmp_path / "exported")
    assert manifest.files[AE_WEIGHTS] == sha256_file(ae / AE_WEIGHTS)
    prompts, seeds = ["a red circle"], [9]
    np.testing.assert_array_equal(load(tmp_path / "exported").generate(prompts, seeds, FAST),
                                  load(run.path).generate(prompts, seeds, FAST))
