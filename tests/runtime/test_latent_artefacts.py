"""Artefacts derived from a latent model (quantized folder, adapter, student) load back through
`load()` with the base's autoencoder, hash-checked, and decode to pixels; the server samples
other image sizes of a latent model in latents of the matching side."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from test_latent_runs import tiny_autoencoder

from difflab.cli import run as cli
from difflab.config import ConfigError
from difflab.runtime import SampleConfig, load, read_manifest
from difflab.runtime import artefacts as art
from difflab.runtime.artefacts import sha256_file, write_manifest
from difflab.runtime.latent import AE_WEIGHTS

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
FAST = SampleConfig(steps=2, precision="fp32")
PROMPTS, SEEDS = ["a red circle", "a blue square"], [3, 4]


@pytest.fixture(scope="module")
def text_latent(tmp_path_factory, tiny_trainer):
    """configs/tiny.toml (MiniLM text) on the 8x8x4 latents of 16x16 shapes, 2 steps."""
    from difflab.train.config import load_train_config

    root = tmp_path_factory.mktemp("latent-text")
    ae = tiny_autoencoder(root / "ae")
    run = tiny_trainer(root / "run", {
        "model.overrides": {"input_size": 8, "patch_size": 2, "hidden_size": 32, "depth": 1,
                            "num_heads": 2, "in_channels": 4},
        "latent.autoencoder": str(ae), "schedule.steps": 2, "schedule.batch_size": 4,
        "run.ckpt_every": 2, "data.options.length": 16}, load_train_config(CONFIGS / "tiny.toml"))
    return art.resolve(run.path), ae


def decodes_to_pixels(folder: Path, ae: Path) -> Any:
    """Load `folder`; check it decodes 16x16 pixels and records the base's autoencoder."""
    manifest = read_manifest(folder)
    assert manifest.base["autoencoder"] == sha256_file(ae / AE_WEIGHTS)
    pipe = load(folder)
    assert pipe.image_shape == (4, 8, 8) and pipe.pixel_shape == (3, 16, 16)
    assert pipe.generate(PROMPTS, SEEDS, FAST).shape == (2, 16, 16, 3)
    return pipe


@pytest.fixture(scope="module")
def other_ae(tmp_path_factory) -> Path:
    """An autoencoder folder from another (seed 1) training run."""
    return tiny_autoencoder(tmp_path_factory.mktemp("other") / "ae", seed=1)


def swap_base_autoencoder(base: Path, other: Path, tmp_path: Path) -> Path:
    """A copy of `base` whose (re-hashed) autoencoder is `other`'s."""
    copy = shutil.copytree(base, tmp_path / "other-base")
    shutil.copyfile(other / AE_WEIGHTS, copy / AE_WEIGHTS)
    manifest = read_manifest(copy)
    write_manifest(copy, manifest.kind, manifest.config, files=manifest.files)
    return copy


def test_a_quantized_latent_model_carries_and_checks_its_autoencoder(text_latent, other_ae,
                                                                     tmp_path):
    base, ae = text_latent
    out = tmp_path / "q"
    assert cli(["quantize", str(base), "--recipe", "w8a8", "--calib-steps", "2",
                "--out", str(out)]) == 0
    assert read_manifest(out).files[AE_WEIGHTS] == sha256_file(ae / AE_WEIGHTS)
    assert "quantization" in decodes_to_pixels(out, ae).labels
    # another run's autoencoder, even with the folder's manifest re-hashed, is refused
    shutil.copyfile(other_ae / AE_WEIGHTS, out / AE_WEIGHTS)
    manifest = read_manifest(out)
    write_manifest(out, manifest.kind, manifest.config, base=manifest.base,
                   files=manifest.files)
    with pytest.raises(ConfigError, match="not the autoencoder .* was made with"):
        load(out)
    (out / AE_WEIGHTS).unlink()
    with pytest.raises(ConfigError, match=f"latent-space model but no {AE_WEIGHTS}"):
        load(out)


def test_an_adapter_of_a_latent_model_decodes_through_its_bases_autoencoder(text_latent,
                                                                           other_ae, tmp_path):
    base, ae = text_latent
    out = tmp_path / "lora"
    assert cli(["tune", str(base), "--method", "lora", "--concept", "star", "--generate", "2",
                "--steps", "1", "--batch-size", "2", "--prior-images", "2",
                "--out", str(out)]) == 0
    assert decodes_to_pixels(out, ae).labels["adapters"].startswith("lora")
    # the same base weights with another autoencoder: the adapter names the one it was made on
    data = json.loads((out / "difflab.json").read_text())
    data["base"]["path"] = str(swap_base_autoencoder(base, other_ae, tmp_path))
    (out / "difflab.json").write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="not the autoencoder .* was made with"):
        load(out)


def test_a_student_of_a_latent_teacher_carries_its_autoencoder(text_latent, tmp_path):
    from difflab.distill.commands import distill
    from difflab.distill.fit import DistillConfig

    base, ae = text_latent
    out = tmp_path / "student"
    config = DistillConfig(method="progressive", steps=2, teacher_steps=4, batch_size=2,
                           iterations=1, budget_minutes=10.0, ckpt_every=1)
    manifest = distill(str(base), config, out, progress=False)
    assert manifest.files[AE_WEIGHTS] == sha256_file(ae / AE_WEIGHTS)
    decodes_to_pixels(out, ae)
    assert load(out).kind == "student"


def test_the_server_samples_other_sizes_of_a_latent_model_in_latents(text_latent):
    from difflab.serve.service import load_catalog

    base, _ = text_latent
    catalog = load_catalog(str(base), sizes=[32])
    assert catalog.sizes == (16, 32)  # image sides in pixels, the model's own first
    big = catalog.pipeline("", 32)
    assert big.image_shape == (4, 16, 16) and big.pixel_shape == (3, 32, 32)
    assert big.autoencoder is catalog.base.autoencoder and big.net is catalog.base.net
    assert big.generate(PROMPTS[:1], SEEDS[:1], FAST).shape == (1, 32, 32, 3)
    assert catalog.pipeline("", 16) is catalog.base
    with pytest.raises(ConfigError, match="multiples of 2"):
        load_catalog(str(base), sizes=[15])
