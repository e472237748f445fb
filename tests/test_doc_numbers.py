"""Every number quoted in the prose of README.md and docs/*.md traces to a result file, or is on
the allowlist with a reason (benchmarks/doc_numbers_allowlist.txt)."""

import json

import pytest

from difflab.config import ConfigError
from difflab.eval import doc_numbers as dn

# Pages whose numbers are not checked (none: every page's prose is traced).
EXCLUDED_PAGES: tuple[str, ...] = ()
PAGES = [page for page in dn.doc_pages() if page not in EXCLUDED_PAGES]


@pytest.fixture(scope="module")
def report() -> dn.Report:
    return dn.check(PAGES)


def test_every_prose_number_traces_to_a_result_file(report):
    untraced = [f"{v.quote.page}:{v.quote.line}: {v.quote.text} | {v.quote.context}"
                for v in report.with_status("untraced")]
    assert untraced == [], ("numbers no result file holds (python scripts/doc_numbers.py "
                            "--suggest):\n" + "\n".join(untraced))


def test_every_allowlist_entry_is_still_needed(report):
    stale = [f"{dn.ALLOWLIST}:{a.line}: {a.page} | {a.number}" for a in report.unused]
    assert stale == [], "allowlist entries no untraced number needs:\n" + "\n".join(stale)
    pages = set(dn.doc_pages())
    assert [a.page for a in dn.read_allowlist() if a.page not in pages] == []


def _repo(tmp_path, page: str, results: dict[str, object]):
    for name, data in results.items():
        path = tmp_path / "benchmarks/results" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data))
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs/page.md").write_text(page)
    return tmp_path


PAGE = """# 2.1 Results

From `benchmarks/results/run/a.json`: accuracy 91.7% [83.8, 95.9], a 1.55x speed-up, and
DeepCache at 1.94x; PSNR +12.2 dB over the baseline and -2.4 points of accuracy. FD 35.19.

Elsewhere, 47.3 dB; and 123.4 nowhere (Wilson 1927, torch 2.3.1, on 2026-12-06, `--steps 77`,
runs/x-555.json, [link 8888](https://example.org/9999), 2 cores, seeds from 6000).
DPM++ 2M gets 429 (LDM, Sec. 4.1); the run took 34 min 33 s.

```
binding 12.3%
```

<!-- table:some_table -->
| a | 77.7% |
<!-- /table:some_table -->
"""
RESULTS = {
    "run/a.json": {"accuracy": 0.9166667, "speedup": 1.5512, "time_ratio": 0.5155, "fd": 35.19,
                   "total_seconds": 2073.2, "index": 123.4,  # positions and per-image arrays
                   "psnr_per_image": [0.0] * 20 + [123.4],  # are not results: 123.4 untraced
                   "method": {"psnr": 30.1, "acc": 0.512}, "base": {"psnr": 17.9, "acc": 0.536}},
    "other/b.json": {"psnr": 47.31, "provenance": {k: "" for k in dn.PROVENANCE_KEYS}},
}


def test_quotes_skip_code_tables_links_dates_versions_paths_and_settings(tmp_path):
    root = _repo(tmp_path, PAGE, RESULTS)
    found = [(q.line, q.text) for q in dn.quotes("docs/page.md", root)]
    assert found == [(3, "91.7%"), (3, "83.8"), (3, "95.9"), (3, "1.55x"), (4, "1.94x"),
                     (4, "+12.2 dB"), (4, "-2.4 points"), (4, "35.19"), (6, "47.3 dB"),
                     (6, "123.4"), (8, "34 min 33 s")]


def test_rounding_percent_ratios_and_differences_trace_to_the_cited_file(tmp_path):
    root = _repo(tmp_path, PAGE, RESULTS)
    report = dn.check(["docs/page.md"], allowlist=[], root=root)
    status = {v.quote.text: (v.status, v.file) for v in report.verdicts}
    cited = ("traced", "benchmarks/results/run/a.json")
    for text in ("91.7%", "1.55x", "1.94x", "+12.2 dB", "-2.4 points", "35.19", "34 min 33 s"):
        assert status[text] == cited, text
    # No file stores the interval: it is the 95% Wilson interval of 91.7% (77 of 84 images).
    assert status["83.8"] == status["95.9"] == cited
    assert status["123.4"] == ("untraced", "")
    assert status["47.3 dB"] == ("weak", "benchmarks/results/other/b.json")
    # The same quotes off by one in their last digit are untraced.
    wrong = {"91.7% [83.8, 95.9]": "91.7% [83.8, 96.9]", "1.55x": "1.57x", "12.2": "12.4",
             "35.19": "35.18"}
    page = PAGE
    for old, new in wrong.items():
        page = page.replace(old, new)
    report2 = dn.check(["docs/page.md"], allowlist=[], root=_repo(tmp_path / "2", page, RESULTS))
    assert [v.quote.text for v in report2.with_status("untraced")] == [
        "96.9", "1.57x", "+12.4 dB", "35.18", "123.4"]


def test_allowlist_covers_untraced_numbers_and_reports_unused_entries(tmp_path):
    root = _repo(tmp_path, PAGE, RESULTS)
    (root / dn.ALLOWLIST).write_text(
        "# page | number | reason\n"
        "docs/page.md | 123.4 | a constant of the method\n"
        "docs/page.md | 91.7 | traces, so not needed\n"
        "docs/page.md | 47.3 | a setting; only an uncited file holds it, by coincidence\n")
    allow = dn.read_allowlist(root / dn.ALLOWLIST)
    report = dn.check(["docs/page.md"], allowlist=allow, root=root)
    assert [v.quote.text for v in report.with_status("allowed")] == ["47.3 dB", "123.4"]
    assert [(a.number, a.line) for a in report.unused] == [("91.7", 3)]
    (root / dn.ALLOWLIST).write_text("docs/page.md | 123.4\n")
    with pytest.raises(ConfigError, match="expected 'page | number | reason'"):
        dn.read_allowlist(root / dn.ALLOWLIST)


def test_cited_files_without_provenance_are_listed(tmp_path):
    flat = {**RESULTS, "other/c.json": {"psnr": 1.0, **{k: "" for k in dn.PROVENANCE_KEYS}},
            "other/d.json": {"psnr": 2.0, "command": "x"}}  # keys at the top level count
    root = _repo(tmp_path, PAGE + "\nSee `benchmarks/results/other/`.\n", flat)
    assert dn.cited_without_provenance(["docs/page.md"], root) == {
        "benchmarks/results/other/d.json": ["docs/page.md"],
        "benchmarks/results/run/a.json": ["docs/page.md"]}


def test_provenance_exceptions_must_cover_every_lacking_file_and_stay_needed(tmp_path):
    root = _repo(tmp_path, PAGE + "\nSee `benchmarks/results/other/b.json`.\n", RESULTS)
    assert dn.provenance_problems(["docs/page.md"], root) == (
        {"benchmarks/results/run/a.json": ["docs/page.md"]}, [])
    (root / dn.PROVENANCE_EXCEPTIONS).write_text(
        "# file | why\n"
        "benchmarks/results/run/a.json | measured on a machine we no longer have\n"
        "benchmarks/results/other/b.json | carries provenance: the entry is stale\n")
    assert dn.provenance_problems(["docs/page.md"], root) == (
        {}, ["benchmarks/results/other/b.json"])
    (root / dn.PROVENANCE_EXCEPTIONS).write_text("benchmarks/results/run/a.json\n")
    with pytest.raises(ConfigError, match="expected 'file | reason'"):
        dn.provenance_problems(["docs/page.md"], root)


def test_every_cited_result_file_has_provenance_or_a_reason():
    missing, stale = dn.provenance_problems(PAGES)
    assert missing == {}, ("cited result files without provenance (record it, or say why in "
                           f"{dn.PROVENANCE_EXCEPTIONS}): {sorted(missing)}")
    assert stale == [], f"{dn.PROVENANCE_EXCEPTIONS} entries no longer needed: {stale}"


def test_generated_tables_count_as_citations_of_their_files():
    from difflab.eval import tables

    entries, _, pages = dn._table_sources()  # read from the source of difflab.eval.tables
    assert list(entries) == list(tables.TABLES) and pages == tables.PAGES
    assert dn.TABLE_MARKER.pattern == tables.MARKER.pattern
    assert dn.table_files("samplers") == ("benchmarks/results/samplers/bench.json",)
    assert "benchmarks/results/demo-avx2/metrics.json" in dn.table_files("shipped")


def test_a_citation_of_no_existing_path_names_no_files(tmp_path):
    """An f-string's head in tables.py ('.../star-seed') or a missing file cites nothing; a
    folder, or an existing non-result file of one, cites the folder's result files."""
    root = _repo(tmp_path, PAGE, RESULTS)
    (root / "benchmarks/results/run/README.md").write_text("notes")
    assert dn._files_of("benchmarks/results/run/a-seed", root) == set()
    assert dn._files_of("benchmarks/results/run/missing.json", root) == set()
    assert dn._files_of("benchmarks/results/run", root) == {"benchmarks/results/run/a.json"}
    assert dn._files_of("benchmarks/results/run/README.md", root) == {
        "benchmarks/results/run/a.json"}
