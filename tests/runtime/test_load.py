"""load(): every artefact difflab writes becomes a Pipeline that samples what was trained."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from difflab.config import ConfigError
from difflab.core.samplers import SAMPLERS
from difflab.runtime import MANIFEST, SampleConfig, load, read_manifest
from difflab.runtime import artefacts as art
from difflab.runtime.artefacts import ARTEFACTS, sha256_file

FAST = SampleConfig(steps=3, precision="fp32")


def checkpoint_copy(run, tmp_path, name="ckpt"):
    """A copy of the run's latest checkpoint folder (tests may damage it)."""
    folder = art.resolve(run.path)
    return shutil.copytree(folder, tmp_path / name)


@pytest.mark.parametrize("run_name, prompts, cfg", [
    ("digits_run", ["3", "7", "0"], 2.0),
    ("uncond_run", ["", "", ""], 1.0),
    ("text_run", ["a red circle", "a blue square", ""], 3.0),
])
def test_loaded_run_samples_what_the_trained_network_samples(run_name, prompts, cfg, request):
    run = request.getfixturevalue(run_name)
    config = SampleConfig(steps=4, cfg=cfg, precision="fp32")
    pipe = load(run.path)  # the run folder: its latest checkpoint
    assert pipe.source == str(run.path / f"step_{run.config.schedule.steps:06d}")
    assert pipe.kind == "checkpoint" and pipe.image_shape == run.memory.image_shape
    seeds = [11, 12, 13]
    np.testing.assert_array_equal(pipe.generate(prompts, seeds, config),
                                  run.memory.generate(prompts, seeds, config))


def test_checkpoint_manifest_lists_every_file_with_its_hash(digits_run):
    folder = art.resolve(digits_run.path)
    manifest = read_manifest(folder)
    assert manifest.kind == "checkpoint" and manifest.format == art.FORMAT_VERSION
    assert manifest.base is None and manifest.metrics["step"] == 40
    assert manifest.config == json.loads((folder / "config.json").read_text())
    on_disk = sorted(p.name for p in folder.iterdir() if p.name != MANIFEST)
    assert sorted(manifest.files) == on_disk
    assert all(manifest.files[n] == sha256_file(folder / n) for n in on_disk)


def test_load_never_reads_training_state(digits_run, tmp_path):
    folder = checkpoint_copy(digits_run, tmp_path)
    for name in ("train_state.safetensors", "state.json"):  # optimiser state, RNG, counters
        (folder / name).unlink()
    got = load(folder).generate(["5"], [0], FAST)
    np.testing.assert_array_equal(got, digits_run.memory.generate(["5"], [0], FAST))


def test_older_checkpoint_without_manifest_still_loads(digits_run, tmp_path):
    folder = checkpoint_copy(digits_run, tmp_path)
    (folder / MANIFEST).unlink()
    got = load(folder).generate(["2"], [4], FAST)
    np.testing.assert_array_equal(got, digits_run.memory.generate(["2"], [4], FAST))


def test_truncated_or_replaced_weights_are_a_config_error(digits_run, tmp_path):
    folder = checkpoint_copy(digits_run, tmp_path)
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ConfigError, match=r"model.safetensors does not match difflab.json"):
        load(folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(ConfigError, match="model.safetensors is missing"):
        load(folder)


def _rewrite_manifest(folder, **changes):
    data = json.loads((folder / MANIFEST).read_text())
    (folder / MANIFEST).write_text(json.dumps({**data, **changes}))


def test_unknown_kind_or_newer_format_is_one_line(digits_run, tmp_path):
    folder = checkpoint_copy(digits_run, tmp_path)
    _rewrite_manifest(folder, kind="hologram")
    with pytest.raises(ConfigError, match=r"unknown artefact kind 'hologram'.*checkpoint") as e:
        load(folder)
    assert "\n" not in str(e.value)
    _rewrite_manifest(folder, kind="checkpoint", format=art.FORMAT_VERSION + 1)
    with pytest.raises(ConfigError, match="newer than this difflab reads") as e:
        load(folder)
    assert "\n" not in str(e.value)
    (folder / MANIFEST).write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load(folder)


def test_a_new_kind_plugs_in_by_registering_a_loader(digits_run, tmp_path, monkeypatch):
    # what an adapter or a student does: write its folder with a manifest, register its kind
    folder = checkpoint_copy(digits_run, tmp_path)
    art.write_manifest(folder, "student", read_manifest(folder).config,
                       base=art.base_of(art.resolve(digits_run.path)), files=["model.safetensors"])

    def load_student(path, manifest, device):
        pipe = ARTEFACTS.get("checkpoint")(path, manifest, device)
        pipe.labels["student of"] = manifest.base["path"]
        return pipe

    monkeypatch.setitem(ARTEFACTS._items, "student", load_student)
    pipe = load(folder)
    assert pipe.kind == "student" and "student of" in pipe.describe()


def test_names_resolve_to_shipped_models(digits_run, tmp_path, monkeypatch):
    assets = tmp_path / "assets"
    shutil.copytree(art.resolve(digits_run.path), assets / "digits-base")
    monkeypatch.setattr(art, "ASSETS", assets)
    assert load("digits-base").generate(["1"], [0], FAST).shape == (1, 8, 8, 3)
    with pytest.raises(ConfigError, match=r"'shapes-base'.*known names: digits-base"):
        load("shapes-base")
    monkeypatch.setattr(art, "ASSETS", tmp_path / "none")
    with pytest.raises(ConfigError, match="none are shipped"):
        load("shapes-base")


def test_class_prompts_are_names_or_indices(digits_run, shapes_run):
    pipe = load(digits_run.path)
    assert "class labels (10 classes" in pipe.describe()
    with pytest.raises(ConfigError, match=r"'seven' is not a class.*'0', '1'"):
        pipe.generate(["seven"], [0], FAST)
    with pytest.raises(ConfigError, match="not a class"):
        pipe.generate(["10"], [0], FAST)  # the null label is not a prompt
    with pytest.raises(ConfigError, match="null class"):
        pipe.generate(["1"], [0], SampleConfig(steps=2, cfg=2.0, negative_prompt="blurry",
                                              precision="fp32"))
    shapes = load(shapes_run.path)
    by_name = shapes.generate(["a red circle", "an orange ring"], [0, 1], FAST)
    index = shapes.conditioner.names.index("an orange ring")
    by_index = shapes.generate(["a red circle", str(index)], [0, 1], FAST)
    np.testing.assert_array_equal(by_name, by_index)


def test_unconditional_models_take_only_the_empty_prompt(uncond_run):
    pipe = load(uncond_run.path)
    assert "unconditional" in pipe.describe()
    with pytest.raises(ConfigError, match="unconditional; the prompt must be ''"):
        pipe.generate(["a red circle"], [0], FAST)
    with pytest.raises(ConfigError, match="cfg = 1"):
        pipe.generate([""], [0], SampleConfig(steps=2, cfg=3.0, precision="fp32"))


@pytest.mark.parametrize("sampler", SAMPLERS.names())
def test_an_image_does_not_depend_on_its_batch(sampler, digits_run):
    # contract 2: one seed per sample, for every registered sampler, with guidance on
    pipe = load(digits_run.path)
    config = SampleConfig(sampler=sampler, steps=4, cfg=2.0, precision="fp32")
    batch = pipe.generate(["1", "4", "9"], [3, 5, 8], config)
    alone = pipe.generate(["4"], [5], config)
    np.testing.assert_array_equal(batch[1:2], alone)


def test_training_lowers_the_loss(digits_run):
    losses = digits_run.losses
    assert len(losses) == 40
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    assert last < 0.8 * first, (first, last)
