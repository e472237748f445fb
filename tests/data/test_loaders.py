"""Datasets under DataLoader workers and DistributedSampler; digits, folders, grids, preview."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, DistributedSampler

from difflab.config import ConfigError, dumps_toml, from_dict, to_dict
from difflab.data.commands import preview_grid
from difflab.data.digits import DigitsDataset
from difflab.data.folder import ImageFolderDataset
from difflab.data.grid import make_grid, to_uint8
from difflab.data.shapes_dataset import NUM_CLASSES, ShapesConfig, ShapesDataset, class_index
from difflab.registry import UnknownNameError


def _direct(ds, indices):
    return [ds[i] for i in indices]


def _same(items_a, items_b):
    assert len(items_a) == len(items_b)
    for a, b in zip(items_a, items_b, strict=True):
        assert a["caption"] == b["caption"]
        assert torch.equal(a["image"], b["image"])


def test_dataloader_with_two_workers_matches_direct_indexing():
    ds = ShapesDataset(ShapesConfig(size=16, length=24))
    loader = DataLoader(ds, batch_size=4, num_workers=2, shuffle=False)
    got = [
        {"image": img, "caption": cap}
        for batch in loader
        for img, cap in zip(batch["image"], batch["caption"], strict=True)
    ]
    _same(got, _direct(ds, range(len(ds))))


def test_distributed_sampler_ranks_cover_direct_indexing():
    ds = ShapesDataset(ShapesConfig(size=16, length=20, seed=5))
    seen = {}
    for rank in range(2):
        sampler = DistributedSampler(ds, num_replicas=2, rank=rank, shuffle=True, seed=1)
        order = list(sampler)
        items = list(DataLoader(ds, batch_size=1, sampler=sampler))
        for i, batch in zip(order, items, strict=True):
            seen[i] = {"image": batch["image"][0], "caption": batch["caption"][0]}
    assert sorted(seen) == list(range(len(ds)))
    _same([seen[i] for i in range(len(ds))], _direct(ds, range(len(ds))))


def test_item_format_and_variants():
    item = ShapesDataset(ShapesConfig(size=32, length=3))[0]
    assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.float32
    assert -1 <= item["image"].min() and item["image"].max() <= 1 and item["caption"]
    cls = ShapesDataset(ShapesConfig(kinds=("single",), conditioning="class", length=50))
    for i in range(50):
        s, it = cls.sample(i), cls[i]
        o = s.scene.objects[0]
        assert len(s.scene.objects) == 1 and it["label"] == class_index(o.shape, o.color)
        assert 0 <= it["label"] < NUM_CLASSES
    uncond = ShapesDataset(ShapesConfig(conditioning="none", length=2))
    assert uncond[0]["caption"] == "" and "label" not in uncond[0]


def test_shapes_config_round_trips_and_rejects_bad_values():
    cfg = ShapesConfig(size=64, kinds=("single", "count"), exclude_heldout=False)
    assert from_dict(ShapesConfig, to_dict(cfg)) == cfg
    assert "size = 64" in dumps_toml(to_dict(cfg))
    with pytest.raises(ConfigError, match="valid"):
        ShapesConfig(size=48)
    with pytest.raises(ConfigError, match="relation"):
        ShapesConfig(kinds=("blobs",))
    with pytest.raises(ConfigError, match="single"):
        ShapesConfig(conditioning="class")


@pytest.mark.parametrize("size", [8, 16, 32])
def test_digits(size):
    ds = DigitsDataset(size=size)
    item = ds[5]
    assert item["image"].shape == (3, size, size)
    assert item["image"].min() >= -1 and item["image"].max() <= 1
    assert item["label"] == int(ds.labels[5]) and str(item["caption"]).startswith("a handwritten")
    assert set(ds.labels.tolist()) == set(range(10))
    with pytest.raises(ConfigError, match="valid"):
        DigitsDataset(size=12)


def _save(path, size=(8, 8), colour=(200, 10, 10)):
    Image.new("RGB", size, colour).save(path)


def test_folder_with_sidecar_captions(tmp_path):
    _save(tmp_path / "a.png")
    (tmp_path / "a.txt").write_text("a red thing\n")
    _save(tmp_path / "b.png", colour=(0, 0, 255))
    (tmp_path / "b.txt").write_text("a blue thing")
    ds = ImageFolderDataset(tmp_path)
    assert [ds[i]["caption"] for i in range(2)] == ["a red thing", "a blue thing"]
    assert ds[0]["image"].shape == (3, 8, 8)
    assert torch.allclose(ds[1]["image"][2], torch.ones(8, 8))  # blue channel 255 -> 1


def test_folder_with_metadata_and_resize(tmp_path):
    _save(tmp_path / "x.png", size=(20, 10))
    _save(tmp_path / "y.png", size=(8, 8))
    rows = [{"file_name": "x.png", "text": "wide"}, {"file_name": "y.png", "text": "square"}]
    (tmp_path / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    with pytest.raises(ConfigError, match="y.png"):
        ImageFolderDataset(tmp_path)  # mixed sizes
    ds = ImageFolderDataset(tmp_path, size=16)
    assert ds[0]["image"].shape == (3, 16, 16) and ds[0]["caption"] == "wide"


def test_folder_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no images"):
        ImageFolderDataset(tmp_path)
    _save(tmp_path / "a.png")
    with pytest.raises(FileNotFoundError, match="a.txt"):
        ImageFolderDataset(tmp_path)
    (tmp_path / "a.txt").write_text("ok")
    (tmp_path / "broken.png").write_bytes(b"not an image at all")
    (tmp_path / "broken.txt").write_text("broken")
    with pytest.raises(ConfigError, match="broken.png"):
        ImageFolderDataset(tmp_path)
    (tmp_path / "broken.png").unlink()
    (tmp_path / "metadata.jsonl").write_text('{"file_name": "gone.png", "text": "x"}\n')
    with pytest.raises(FileNotFoundError, match="gone.png"):
        ImageFolderDataset(tmp_path)
    (tmp_path / "metadata.jsonl").write_text('{"file_name": "a.png"}\n')
    with pytest.raises(ConfigError, match="text"):
        ImageFolderDataset(tmp_path)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        ImageFolderDataset(tmp_path / "nowhere")


def test_grid_layout_and_pixels():
    images = np.zeros((5, 8, 8, 3), np.uint8)
    images[2] = 255
    grid = np.asarray(make_grid(images, ["x"] * 5, ncol=3, scale=2))
    plain = np.asarray(make_grid(images, None, ncol=3, scale=2))
    assert plain.shape[1] == grid.shape[1] == 3 * 16 + 4 * 4 and grid.shape[0] > plain.shape[0]
    assert (plain[4 : 4 + 16, 4 + 2 * 20 : 4 + 2 * 20 + 16] == 255).all()  # image 2, row 0 col 2
    with pytest.raises(ValueError, match="labels"):
        make_grid(images, ["x"], ncol=3)
    x = torch.tensor([-1.0, 0.0, 1.0]).view(1, 3, 1, 1)
    assert to_uint8(x)[0, 0, 0].tolist() == [0, 128, 255]


def test_preview_worlds():
    assert preview_grid("shapes", 3, 16, 0).size[0] > 0
    assert preview_grid("digits", 2, 8, 0).size[0] > 0
    with pytest.raises(UnknownNameError, match="digits"):
        preview_grid("faces", 2, 8, 0)
