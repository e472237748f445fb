"""Docs tables are generated from result files: a committed table that drifts fails here."""

import json
import shutil

import pytest

from difflab.config import ConfigError
from difflab.eval import tables


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
    results = tmp_path / "results"
    for folder in ("demo", "demo-long", "demo-avx2", "accel_unet", "tune", "serve", "edit",
                   "interop", "align", "autotune", "reworded"):
        shutil.copytree(tables.ROOT / "benchmarks/results" / folder,
                        results / "benchmarks/results" / folder)
    metrics = results / "benchmarks/results/demo/metrics.json"
    data = json.loads(metrics.read_text())
    data["fd"] += 1.0
    metrics.write_text(json.dumps(data))
    pages = tables.ROOT
    monkeypatch.setattr(tables, "ROOT", results)
    assert tables.stale_pages(pages) == ["docs/training.md", "docs/machine.md"]  # both read it
    assert f"{data['fd']:.1f}" in tables.demo_table()


def test_unknown_table_and_different_machines_are_refused():
    with pytest.raises(ConfigError, match="unknown table 'nope'"):
        tables.regenerate("<!-- table:nope -->\n<!-- /table:nope -->")
    a = {"device": "cpu", "cpu": "A", "name": "A", "capability": "AVX2", "threads": 2,
         "torch": "2"}
    tables.check_machines({"x": a, "y": dict(a)})
    with pytest.raises(ConfigError, match="threads: 2 vs 1"):
        tables.check_machines({"x": a, "y": {**a, "threads": 1}})
