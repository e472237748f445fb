"""Docs tables are generated from result files: a committed table that drifts fails here."""

import json
import shutil

import pytest

from difflab.config import ConfigError
from difflab.eval import tables

# Every folder a table reads: the drift checks below run on copies of them.
RESULT_FOLDERS = (
    "demo", "demo-long", "demo-avx2", "demo-avx512", "accel_unet", "accel_unet_test", "accel_dit",
    "tune", "serve", "edit", "interop", "align", "autotune", "distill", "control", "quant",
    "quant_euler", "quant-test", "samplers", "samplers-test", "precision", "evaluator_audit",
    "latent", "reworded", "shapes-long", "evaluator", "core")


def _copy_results(tmp_path, monkeypatch):
    """Copies of the result folders, read by the tables from now on; the committed pages."""
    results = tmp_path / "results"
    for folder in RESULT_FOLDERS:
        shutil.copytree(tables.ROOT / "benchmarks/results" / folder,
                        results / "benchmarks/results" / folder,
                        ignore=shutil.ignore_patterns("*.html", "*.png"))
    pages = tables.ROOT
    monkeypatch.setattr(tables, "ROOT", results)
    return results / "benchmarks/results", pages


def _edit(path, change):
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_committed_tables_match_their_result_files():
    assert tables.stale_pages() == [], "run python scripts/tables.py"
    for page in tables.PAGES:
        assert "<!-- table:" in (tables.ROOT / page).read_text(), page


def test_a_drifted_table_or_file_is_caught(tmp_path, monkeypatch):
    root = tmp_path / "repo"
    for page in tables.PAGES:
        (root / page).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(tables.ROOT / page, root / page)
    page = root / "docs/training.md"
    page.write_text(page.read_text().replace("91.7% [83.8, 95.9]", "93.1% [83.8, 95.9]", 1))
    assert tables.stale_pages(root) == ["docs/training.md"]
    # The other way round: the result file changes and the committed table no longer matches.
    results, pages = _copy_results(tmp_path, monkeypatch)
    metrics = results / "demo/metrics.json"
    data = json.loads(metrics.read_text())
    data["fd"] += 1.0
    metrics.write_text(json.dumps(data))
    assert tables.stale_pages(pages) == ["docs/training.md"]
    assert f"{data['fd']:.1f}" in tables.demo_table()
    _edit(results / "demo-avx512/metrics.json", lambda d: d.update(fd=d["fd"] + 1.0))
    assert tables.stale_pages(pages) == ["docs/training.md", "docs/machine.md"]


def test_unknown_table_and_different_machines_are_refused():
    with pytest.raises(ConfigError, match="unknown table 'nope'"):
        tables.regenerate("<!-- table:nope -->\n<!-- /table:nope -->")
    a = {"device": "cpu", "cpu": "A", "name": "A", "capability": "AVX2", "threads": 2,
         "torch": "2"}
    tables.check_machines({"x": a, "y": dict(a)})
    with pytest.raises(ConfigError, match="threads: 2 vs 1"):
        tables.check_machines({"x": a, "y": {**a, "threads": 1}})


def test_every_table_reads_only_folders_the_drift_checks_copy(tmp_path, monkeypatch):
    _copy_results(tmp_path, monkeypatch)
    for name, table in tables.TABLES.items():
        assert "|---" in table(), name  # a missing file would raise FileNotFoundError here


def test_quant_dit_sampler_and_train_loop_tables_follow_their_files(tmp_path, monkeypatch):
    results, pages = _copy_results(tmp_path, monkeypatch)
    assert tables.stale_pages(pages) == []

    def euler_only(d):  # a point only the Euler run has: its accuracy and FD in parentheses
        p = next(p for p in d["points"] if p["name"] == "w4a8_static_last")
        p["quality"]["ssim"], p["quality"]["fd"] = 0.5, 150.04

    _edit(results / "quant_euler/bench.json", euler_only)
    row = next(r for r in tables.TABLES["quant"]().splitlines() if "last step only" in r)
    assert row.endswith("| (150.0) | - / 21.8 | 0.500 |") and "| (89.3% [" in row

    def w4a4_passes_all(d):  # the test-split table recounts accuracy and McNemar p per image
        p = next(p for p in d["points"] if p["name"] == "w4a4")
        p["passed"] = [True] * len(p["passed"])

    _edit(results / "quant-test/bench.json", w4a4_passes_all)
    row = next(r for r in tables.TABLES["quant_test"]().splitlines() if r.startswith("| w4a4 |"))
    assert "| 100.0% [95.6, 100.0] | 0.0039 |" in row  # bf16 fails 9 of 84: p = 2 / 2^9
    _edit(results / "samplers/bench.json",
          lambda d: d["points"][0]["cost"].update(time_ratio=0.5))
    _edit(results / "precision/train_loop.json",
          lambda d: d["step_variants"]["compiled"].update(speedup_vs_eager=1.5))
    assert "| forward + loss under `torch.compile` | 1.271 [1.261, 1.329] | 1.5 |" in \
        tables.TABLES["train_loop"]()
    _edit(results / "accel_dit/bench.json",
          lambda d: d["points"][1]["quality"].update(ssim=0.5))
    assert "| block_cache all blocks, interval 2 (FORA) | 1.90x [1.79, 2.02] | 27.0 | 0.500 |" in \
        tables.TABLES["accel_dit"]()
    assert tables.stale_pages(pages) == ["docs/acceleration.md", "docs/machine.md",
                                         "docs/quantization.md", "docs/measuring.md"]
    _edit(results / "quant/bench.json", lambda d: d["points"].pop())  # the last: mixed
    with pytest.raises(ConfigError, match="quant/bench.json has no point mixed; it has: bf16, "):
        tables.TABLES["quant"]()


def test_sampler_pivot_puts_each_point_under_its_nfe_budget():
    def point(sampler, steps, nfe, cfg, acc):
        return {"config": {"sampler": sampler, "steps": steps, "cfg_scale": cfg},
                "quality": {"accuracy": acc, "fd": 10.0, "psnr": "inf"},
                "cost": {"nfe": nfe, "time_ratio": nfe / 10}}

    data = {"points": [point("euler", 5, 5, 1.0, 0.5), point("euler", 10, 10, 1.0, 0.25),
                       point("heun", 5, 9, 1.0, 1.0), point("euler", 5, 5, 3.0, 0.0)]}
    assert tables.format_sampler_pivot(data).splitlines() == [
        "CFG 1 — accuracy / FD / PSNR (dB) / time ratio, by NFE",
        "| sampler | NFE 5 | NFE 10 |", "|---|---|---|",
        "| euler | 50.0% / 10 / inf / 0.50 | 25.0% / 10 / inf / 1.00 |",
        "| heun |  | 100.0% (9) / 10 / inf / 0.90 |", "",
        "CFG 3 — accuracy / FD / PSNR (dB) / time ratio, by NFE",
        "| sampler | NFE 5 | NFE 10 |", "|---|---|---|",
        "| euler | 0.0% / 10 / inf / 0.50 |  |"]


def test_tune_tables_name_the_base_they_measured(tmp_path, monkeypatch):
    results, _ = _copy_results(tmp_path, monkeypatch)
    path = results / "tune/star-test.json"
    _edit(path, lambda d: d["base"].update(path="/x/runs/shapes-long"))
    table = tables.tune_table("benchmarks/results/tune/star-test.json")
    assert "| base (shapes-long) |" in table and "Base shapes-long;" in table
    path = results / "tune/compose.json"
    _edit(path, lambda d: d.update(base={"path": "shapes-long", "sha256": "0"}))
    assert "Base shapes-long; split: " in tables.compose_table(
        "benchmarks/results/tune/compose.json")


def test_an_empty_marker_pair_is_stale_until_filled():
    """A new table starts as its two markers on one line; it must not pass the check unfilled."""
    text = "intro\n<!-- table:demo --><!-- /table:demo -->\nafter\n"
    filled = tables.regenerate(text)
    assert filled != text and tables.demo_table() in filled
    assert tables.regenerate(filled) == filled
    prose = "`<!-- table:NAME -->` and `<!-- /table:NAME -->` mark a table"
    assert tables.regenerate(prose) == prose


def test_a_dev_table_pairs_runs_only_with_a_base_line_on_their_own_checkpoint(tmp_path,
                                                                             monkeypatch):
    results, _ = _copy_results(tmp_path, monkeypatch)
    table = tables.TABLES["tune_star_long_dev_kv23"]()
    assert "vs base (lost / gained, p)" in table and "The base itself:" in table
    runs = results / "tune/star-long-dev-kv23.jsonl"
    lines = [json.loads(line) for line in runs.read_text().splitlines()]
    lines[0]["base_model"]["sha256"] = "0" * 64
    runs.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    with pytest.raises(ConfigError, match="star-long-dev-priorset.jsonl's base line is not on"):
        tables.TABLES["tune_star_long_dev_kv23"]()


def test_pooled_cache_table_pools_images_of_every_seed_and_refuses_other_splits(tmp_path,
                                                                                monkeypatch):
    monkeypatch.setattr(tables, "ROOT", tmp_path)

    def run(name, split, plain, cached, kept):
        def setting(passed, kept_share, speedup):
            return {"base": {"passed": [0] * len(passed)}, "adapter": {"passed": passed},
                    "kept": kept_share, "speedup": speedup}

        data = {"base": {"path": "shapes-long", "sha256": "a" * 64}, "concept": "star",
                "split": split, "prompts": "the star prompts", "n_images": len(plain),
                "machine": {"cpu": "cpu", "threads": 2, "precision": "fp32"},
                "settings": {"plain": setting(plain, 1.0, 1.0),
                             "deepcache:interval=2": setting(cached, kept, 1.4)}}
        (tmp_path / name).write_text(json.dumps(data))
        return name

    a = run("a.json", "test", [1, 1, 1, 1], [1, 1, 0, 1], 0.75)
    b = run("b.json", "test", [1, 1, 0, 0], [1, 0, 0, 0], 0.5)
    table = tables.tune_accel_pooled_table(a, b)
    row = next(line for line in table.splitlines() if line.startswith("| deepcache"))
    # 4 of 8 stars against plain's 6 of 8: two thirds of the pooled gain; each seed's own share
    assert "| +50.0 | 67% | 75% / 50% | 2 / 0, p 0.5 | 1.40x / 1.40x |" in row
    assert "2 adapters (one per training seed) x 4 images" in table
    dev = run("c.json", "dev", [1, 1, 1, 1], [1, 1, 1, 1], 1.0)
    with pytest.raises(ConfigError, match="c.json: split 'dev' differs from a.json's 'test'"):
        tables.tune_accel_pooled_table(a, dev)
