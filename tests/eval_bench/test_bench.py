import json
import sys

import numpy as np
import pytest
from PIL import Image
from tiny_target import GRID_TOML, TinyTarget

from difflab.config import ConfigError
from difflab.eval.bench import load_grid, parse_grid, run_bench
from difflab.registry import UnknownNameError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def grid_dict(**overrides):
    data = tomllib.loads(GRID_TOML.format(max_prompts=4, repeats=2))
    data.update(overrides)
    return data


def grid_with_untimed_heun():
    data = grid_dict(frontier_cost="time_ratio")
    next(p for p in data["points"] if p["name"] == "heun-6")["timed"] = False
    return data


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same grid benched twice on one target, sharing a reference cache."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("bench")
    target = TinyTarget()
    first = run_bench(target, grid_with_untimed_heun(), root / "one", cache_dir=root / "cache")
    seen_first = list(target.points_seen)
    target.points_seen.clear()
    second = run_bench(target, grid_dict(), root / "two", cache_dir=root / "cache")
    torch.set_num_threads(before)
    return first, second, seen_first, list(target.points_seen)


def test_bench_writes_json_table_plot_and_html(runs):
    first = runs[0]
    data = json.loads(open(first.files["json"]).read())
    names = ["euler-12", "euler-4", "heun-6", "euler-12-cfg3", "euler-12-reuse2"]
    assert [p["name"] for p in data["points"]] == names
    assert {"torch", "threads", "cpu", "capability", "native_bf16", "date"} <= set(data["machine"])
    assert data["points"][4]["config"]["accel"] == {"reuse_every": 2}
    for p in data["points"]:
        assert {"accuracy", "fd", "kid", "precision", "recall", "psnr", "ssim"} <= set(p["quality"])
        assert {"flops_per_image", "nfe", "peak_memory_bytes"} <= set(p["cost"])
        # heun-6 is `timed = false`: no time columns, and no place on the time-ratio frontier
        assert ("time_ratio" in p["cost"]) == (p["name"] != "heun-6")
    assert any(p["on_frontier"] for p in data["points"])
    assert not first.point("heun-6")["on_frontier"]
    table = open(first.files["table"]).read()
    assert all(f"| {n}" in table for n in names)
    assert "| heun-6 | heun | 6 | - | 11 |" in table
    assert Image.open(first.files["plot"]).format == "PNG"
    page = open(first.files["html"]).read()
    # One strip per configuration plus the real renders and the reference.
    assert page.count("<tr>") == len(names) + 2 and "data:image/png;base64," in page


def test_bench_counts_network_evaluations_and_flops(runs):
    first = runs[0]
    cost = {p["name"]: p["cost"] for p in first.points}
    # Euler: one call per step; Heun: two per step but the last; reuse_every=2: half;
    # guidance batches cond and uncond in one call.
    assert {k: c["nfe"] for k, c in cost.items()} == {
        "euler-12": 12, "euler-4": 4, "heun-6": 11, "euler-12-cfg3": 12, "euler-12-reuse2": 6}
    # Every call costs the same FLOPs per image, and guidance doubles the batch.
    assert cost["euler-4"]["flops_per_image"] * 3 == cost["euler-12"]["flops_per_image"]
    assert cost["euler-12-cfg3"]["flops_per_image"] == 2 * cost["euler-12"]["flops_per_image"]
    assert cost["euler-12"]["time_ratio"] == 1.0
    for name, c in cost.items():
        if name != "heun-6":  # untimed
            assert c["speedup"] == pytest.approx(1 / c["time_ratio"])
            assert len(c["timing"]["times"]) == 2


def test_bench_json_carries_provenance_intervals_and_verdicts(runs):
    from difflab.eval.stats import mcnemar_exact, wilson_interval

    data = json.loads(open(runs[0].files["json"]).read())
    prov = data["provenance"]
    assert prov["split"] == data["grid"]["split"] == "dev"
    assert prov["checkpoint_sha256"].startswith("tiny-target") and prov["code_version"]
    assert {"command", "config", "machine", "date"} <= set(prov)
    n = len(data["prompts"])
    assert len(data["categories"]) == n and data["fd_floor"] >= 0
    base = data["points"][0]
    for p in data["points"]:
        assert len(p["passed"]) == n and "passed" not in p["quality"]
        k = sum(p["passed"])
        assert p["quality"]["accuracy"] == pytest.approx(k / n)
        assert p["accuracy_interval"] == pytest.approx(list(wilson_interval(k, n)))
        if p["name"] != "heun-6":
            lo, hi = p["cost"]["speedup_interval"]
            assert lo <= p["cost"]["speedup_paired_median"] <= hi
            verdict = "faster" if lo > 1 else "slower" if hi < 1 else "no difference"
            assert p["cost"]["speedup_verdict"] == verdict
    assert base["cost"]["speedup_verdict"] == "no difference"  # the baseline against itself
    table = open(runs[0].files["table"]).read()
    assert "McNemar p vs baseline" in table and "no difference" in table
    cfg3 = runs[0].point("euler-12-cfg3")
    p = mcnemar_exact(cfg3["passed"], base["passed"]).p_value
    assert 0 <= p <= 1


def test_grid_split_is_checked():
    assert parse_grid(grid_dict(split="test")).settings.split == "test"
    with pytest.raises(ConfigError, match="unknown split 'val'"):
        parse_grid(grid_dict(split="val"))
    with pytest.raises(ConfigError, match="test split only"):
        parse_grid(grid_dict(suite="reworded"))
    assert parse_grid(grid_dict(suite="reworded", split="test")).settings.suite == "reworded"


def test_more_euler_steps_are_closer_to_the_reference(runs):
    q = {p["name"]: p["quality"] for p in runs[0].points}
    assert q["euler-12"]["psnr"] > q["euler-4"]["psnr"]
    assert q["euler-12"]["ssim"] >= q["euler-4"]["ssim"]


def test_second_run_reuses_the_cached_reference_and_repeats_quality(runs):
    first, second, seen_first, seen_second = runs
    assert first.reference["cached"] is False and second.reference["cached"] is True
    assert any(p["name"] == "heun-100" for p in seen_first)
    assert not any(p["name"] == "heun-100" for p in seen_second)
    for a, b in zip(first.points, second.points, strict=True):
        assert a["quality"] == b["quality"]


def test_grid_errors_name_the_bad_value(tmp_path):
    with pytest.raises(ConfigError, match="unknown point 'nope'; valid: euler-12"):
        parse_grid(grid_dict(baseline="nope"))
    bad = grid_dict()
    bad["points"][0]["stepz"] = 3
    with pytest.raises(ConfigError, match="unknown key 'stepz'"):
        parse_grid(bad)
    with pytest.raises(UnknownNameError, match="unknown metric 'fid'"):
        parse_grid(grid_dict(metrics=["fid"]))
    no_ref = grid_dict()
    del no_ref["reference"]
    with pytest.raises(ConfigError, match="reference"):
        parse_grid(no_ref)
    with pytest.raises(ConfigError, match="frontier_quality 'lpips'"):
        parse_grid(grid_dict(frontier_quality="lpips"))
    untimed_baseline = grid_dict()
    untimed_baseline["points"][0]["timed"] = False
    with pytest.raises(ConfigError, match="baseline 'euler-12'.*timed = false"):
        parse_grid(untimed_baseline)
    not_bool = grid_dict()
    not_bool["points"][1]["timed"] = 0
    with pytest.raises(ConfigError, match="timed: expected bool"):
        parse_grid(not_bool)
    with pytest.raises(FileNotFoundError):
        load_grid(tmp_path / "missing.toml")


def test_grid_passes_open_sections_through():
    data = grid_dict()
    data["points"][1]["quant"] = {"format": "int8", "modules": ["blocks.*"]}
    grid = parse_grid(data)
    assert grid.points[1]["quant"] == {"format": "int8", "modules": ["blocks.*"]}
    assert grid.point("euler-12-reuse2")["accel"] == {"reuse_every": 2}
    assert isinstance(grid.points[3]["cfg_scale"], float)


def test_target_output_is_checked(tmp_path):
    class BadTarget(TinyTarget):
        def generate(self, point, prompts, seeds):
            return np.zeros((len(prompts), 8, 8, 3), dtype=np.float32)

    with pytest.raises(ValueError, match="uint8"):
        run_bench(BadTarget(), grid_dict(), tmp_path / "out", cache_dir=tmp_path / "cache")


def test_frontier_axis_of_a_missing_category_fails_before_timing(tmp_path):
    data = grid_dict(metrics=["accuracy"], max_prompts=1, frontier_quality="accuracy/spatial")
    data["points"] = data["points"][:1]
    del data["reference"]
    target = TinyTarget()
    with pytest.raises(ConfigError, match="'accuracy/spatial' was not measured; valid: accuracy"):
        run_bench(target, data, tmp_path / "out", cache_dir=tmp_path / "cache")
    assert len(target.points_seen) == 1  # generated once, never timed
