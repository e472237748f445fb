"""Docs tables generated from result files: each table lives between `<!-- table:NAME -->` and
`<!-- /table:NAME -->` in a Markdown page and is rebuilt from benchmarks/results/**.json."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from difflab.config import ConfigError
from difflab.eval import reference_tables as ref
from difflab.eval.stats import (
    format_accuracy,
    format_p,
    format_speedup,
    mcnemar_exact,
    speedup_interval,
)

ROOT = Path(__file__).resolve().parents[3]  # the repository (src/difflab/eval -> root)
# a filled table, or an empty pair of markers on one line (what a new table starts as)
MARKER = re.compile(r"<!-- table:(?P<name>[\w-]+) -->(?:\n(?P<body>.*?))?<!-- /table:(?P=name) -->",
                    re.DOTALL)
CATEGORIES = ("single", "binding", "counting", "spatial", "heldout")


def _load(path: str) -> dict[str, Any]:
    return json.loads((ROOT / path).read_text())


def _category_n(metrics: dict[str, Any], cat: str) -> int:
    """Images behind one category's accuracy (older files: suite size x seeds per prompt)."""
    if "per_category_n" in metrics:
        return int(metrics["per_category_n"][cat])
    from difflab.data.suites import SUITE_SIZES

    seeds = metrics["n_images"] // SUITE_SIZES[metrics["suite"]]
    return SUITE_SIZES[cat] * seeds


def _acc(metrics: dict[str, Any], cat: str) -> str:
    n = _category_n(metrics, cat)
    return format_accuracy(round(metrics["per_category"][cat] * n), n)


def _split(record: dict[str, Any]) -> str:
    return record.get("split") or "dev (recorded before splits)"


def _machine(metrics: dict[str, Any]) -> dict[str, Any]:
    return metrics.get("provenance", {}).get("machine") or metrics["run"].get("machine") or {}


def check_machines(files: dict[str, dict[str, Any]]) -> None:
    """Refuse a table that compares times across result files measured on other machines."""
    from difflab.runtime.machine import same_machine

    items = list(files.items())
    for name, record in items[1:]:
        diff = same_machine(items[0][1], record)
        if diff:
            raise ConfigError(f"{items[0][0]} and {name} were measured on different machines "
                              f"({diff}); their times cannot share a table")


def demo_table() -> str:
    """The demo and demo-long runs: accuracy per category with 95% Wilson intervals, FD."""
    runs = {"`make demo`": "benchmarks/results/demo/metrics.json",
            "`make demo-long`": "benchmarks/results/demo-long/metrics.json"}
    data = {name: _load(path) for name, path in runs.items()}
    check_machines({runs[k]: _machine(v) for k, v in data.items()})  # training minutes compared
    head = ["run", "steps", "training", *CATEGORIES, "overall", "FD (floor)", "split"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, m in data.items():
        n = m["n_images"]
        floor = f" ({m['fd_floor']:.1f})" if m.get("fd_floor") is not None else " (-)"
        cells = [name, str(m["run"]["steps"]), f"{m['run']['train_seconds'] / 60:.0f} min",
                 *(_acc(m, c) for c in CATEGORIES),
                 format_accuracy(round(m["accuracy"] * n), n), f"{m['fd']:.1f}{floor}",
                 _split(m)]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


# (name, file): the runs the shipped models were exported from
SHIPPED = (("shapes-base", "benchmarks/results/demo-avx2/metrics.json"),
           ("shapes-long", "benchmarks/results/shapes-long/metrics.json"))


def shipped_table() -> str:
    """The shipped models: the runs they were exported from, scored on the test split."""
    head = ["name", "steps", "trained on", "training", *CATEGORIES, "overall",
            "reworded seen / unseen", "FD (floor)"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, path in SHIPPED:
        m = _load(path)
        machine, n, rw = _machine(m), m["n_images"], m["reworded"]
        seen, unseen = (_acc(rw, c) for c in ("reworded_seen", "reworded_unseen"))
        cells = [f"`{name}`", str(m["run"]["steps"]),
                 f"{machine['capability']} ({machine['precision']})",
                 f"{m['run']['train_seconds'] / 60:.0f} min", *(_acc(m, c) for c in CATEGORIES),
                 format_accuracy(round(m["accuracy"] * n), n), f"{seen} / {unseen}",
                 f"{m['fd']:.1f} ({m['fd_floor']:.2f})"]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


# (label, file): one row per kind of CPU the demo was measured on
DEMO_MACHINES = (
    ("AMD EPYC family 26 model 2, AVX-512 BF16", "benchmarks/results/demo-avx512/metrics.json"),
    ("AMD EPYC family 23 model 1, AVX2 only", "benchmarks/results/demo-avx2/metrics.json"),
)


def demo_machines_table() -> str:
    """`make demo` on each kind of CPU: precision, probe rate, steps, minutes, accuracy."""
    head = ["CPU", "precision (probe GFLOP/s)", "steps", "training", "scoring", "single",
            "overall", "reworded seen / unseen", "FD", "split"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, path in DEMO_MACHINES:
        m = _load(path)
        rec, run = _machine(m), m["run"]
        prec = rec.get("precision", "bf16")
        rate = rec.get("probe_rates", {}).get(prec)
        rw = m.get("reworded")
        reworded = "-" if rw is None else " / ".join(
            f"{100 * rw['per_category'][c]:.1f}%" for c in ("reworded_seen", "reworded_unseen"))
        cells = [label, f"{prec} ({rate:.0f})" if rate else prec, str(run["steps"]),
                 f"{run['train_seconds'] / 60:.1f} min", f"{run['eval_seconds'] / 60:.1f} min",
                 _acc(m, "single"), format_accuracy(round(m["accuracy"] * m["n_images"]),
                                                    m["n_images"]),
                 reworded, f"{m['fd']:.1f}", _split(m)]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def bench_table(path: str, labels: dict[str, str] | None = None) -> str:
    """One bench.json: speed-up (median of paired per-round ratios, its interval; "no
    difference" when it contains 1), PSNR, SSIM, accuracy with its Wilson interval and the
    exact McNemar p against the baseline (where per-image verdicts are recorded), FD."""
    data = _load(path)
    base_name = data["grid"]["baseline"]
    base = next(p for p in data["points"] if p["name"] == base_name)
    n = len(data["prompts"])
    head = ["point", "speed-up [interval]", "PSNR dB", "SSIM", "accuracy [95% CI]",
            "McNemar p", "FD"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for p in data["points"]:
        q, cost = p["quality"], p["cost"]
        speed = (format_speedup(speedup_interval(cost["timing"]["times"],
                                                 base["cost"]["timing"]["times"]))
                 if p is not base and "timing" in cost else "1 (baseline)" if p is base else "-")
        k = sum(p["passed"]) if "passed" in p else round(q["accuracy"] * n)
        pval = ("-" if p is base or "passed" not in p or "passed" not in base
                else format_p(mcnemar_exact(p["passed"], base["passed"]).p_value))
        psnr = q.get("psnr")
        cells = [(labels or {}).get(p["name"], p["name"]), speed,
                 "inf" if psnr in ("inf", float("inf")) else f"{psnr:.1f}", f"{q['ssim']:.3f}",
                 format_accuracy(k, n), pval, f"{q['fd']:.1f}"]
        rows.append("| " + " | ".join(cells) + " |")
    floor = data.get("fd_floor")
    m = data.get("machine", {})
    threads = m.get("threads", m.get("torch_threads"))
    where = f"{m.get('cpu', '?')}" + (f" ({m['capability']})" if m.get("capability") else "")
    note = (f"\n{n} images ({data['grid']['suite']} suite), split: {_split(data['grid'])}; "
            f"FD floor (real vs real, same count): {'-' if floor is None else f'{floor:.1f}'}; "
            f"timed on {where}, {threads} thread(s).\n")
    return "\n".join(rows) + "\n" + note


def _base_name(data: dict) -> str:
    """The base model a tune result file measured: a shipped name, or a checkpoint's folder."""
    return Path(data["base"]["path"]).name


def _stacked(table: Callable[[str], str], *paths: str) -> str:
    """One table per result file, one under the other (e.g. the same recipe's training seeds)."""
    return "\n".join(map(table, paths))


def tune_table(path: str) -> str:
    """Tuning methods side by side: cost, new-concept accuracy, base-suite change, FD, size."""
    data = _load(path)
    res, costs, params = data["results"], data["costs"], data["base_parameters"]
    base, base_name = res["base"], _base_name(data)
    head = ("| method | trainable (share) | tune time | new concept | base suite (change, "
            "McNemar p) | FD base suite | adapter on disk |\n|---|---|---|---|---|---|---|")
    rows = [head]
    for name, r in res.items():
        c, b = r["concept"], r["base"]
        acc = format_accuracy(sum(c["passed"]), c["n"])
        kept = format_accuracy(sum(b["passed"]), b["n"])
        if name == "base":
            rows.append(f"| base ({base_name}) | - | - | {acc} | {kept} | {b['fd']:.1f} | - |")
            continue
        k = costs[name]
        p = format_p(mcnemar_exact(base["base"]["passed"], b["passed"]).p_value)
        rows.append(f"| {name} | {k['trainable']:,} ({100 * k['trainable'] / params:.2f}%) | "
                    f"{k['tune_seconds'] / 60:.1f} min | {acc} | {kept} "
                    f"({100 * b['change']:+.1f}, p {p}) | {b['fd']:.1f} | "
                    f"{k['adapter_bytes'] / 1024:,.0f} KiB |")
    m = data["machine"]
    n_img = len(data["training_images"])
    note = (f"\nBase {base_name}; concept {data['concept']!r}: {n_img} training images; "
            f"split: {data['split']}; "
            f"new concept = {data['sets']['concept']['images']} images of its "
            f"{data['sets']['concept']['suite']} prompts; base suite = "
            f"{data['sets']['base']['images']} images of suite {data['sets']['base']['suite']!r}"
            f"; extended evaluator; timed on {m.get('cpu', '?')} ({m.get('capability', '?')}), "
            f"{m.get('threads')} thread{'' if m.get('threads') == 1 else 's'}")
    loads = [k["load_average_1min"] for k in costs.values() if "load_average_1min" in k]
    if loads:  # other jobs on the machine while timing
        note += f", 1-minute load average {min(loads):.1f}-{max(loads):.1f} on 2 cores"
    return "\n".join(rows) + "\n" + note + ".\n"


def _dev_lines(path: str, keep: str, drop: str,
               base_path: str = "") -> tuple[list[dict], dict | None]:
    """A `tune_explore.py` file's runs whose names match `keep` and not `drop` (regular
    expressions; "" = no filter), and its base line (name "base") if any, or the base line of
    `base_path` (another run file on the same checkpoint, split and seeds)."""
    def read(p: str) -> list[dict]:
        return [json.loads(line) for line in (ROOT / p).read_text().splitlines() if line]

    lines = read(path)
    base = next((r for r in read(base_path or path) if r["name"] == "base"), None)
    runs = [r for r in lines if r["name"] != "base" and re.search(keep, r["name"])
            and not (drop and re.search(drop, r["name"]))]
    if base is not None and base_path:
        ours = {(r["base_model"]["sha256"], r["split"], r["base"]["n"]) for r in runs}
        theirs = (base["base_model"]["sha256"], base["split"], base["base"]["n"])
        if ours != {theirs}:
            raise ConfigError(f"{base_path}'s base line is not on {path}'s checkpoint, split "
                             f"and images: {theirs} vs {sorted(ours)}")
    return runs, base


def _dev_cells(r: dict, base: dict | None) -> str:
    """tune time | new concept | base suite | [vs base |] load |, for one dev run."""
    c, b = r["concept"], r["base"]
    acc = format_accuracy(round(c["accuracy"] * c["n"]), c["n"])
    kept = format_accuracy(round(b["accuracy"] * b["n"]), b["n"])
    vs = ""
    if _paired(base):
        m = mcnemar_exact(base["base"]["passed"], b["passed"])
        vs = f" {m.only_a} / {m.only_b}, p {format_p(m.p_value)} |"
    return (f" {r['tune_seconds'] / 60:.1f} min | {acc} | {kept} |{vs} "
            f"{r['load_average_1min']:.1f} |")


def _paired(base: dict | None) -> bool:
    return base is not None and "passed" in base["base"]


def _dev_note(first: dict, base: dict | None) -> str:
    own = ""
    if base is not None:
        c, b = base["concept"], base["base"]
        own_c = format_accuracy(round(c["accuracy"] * c["n"]), c["n"])
        own_b = format_accuracy(round(b["accuracy"] * b["n"]), b["n"])
        own = f" The base itself: new concept {own_c}, base suite {own_b}."
    return (f"\nBase {first['base_model']['path']}; concept {first['tuned_concept']!r}; split: "
            f"dev; timed on {first['machine'].get('cpu', '?')}; load = 1-minute load average "
            f"on 2 cores after the run.{own}")


def _dev_head(columns: str, paired: bool) -> str:
    cols = columns.split(" | ") + ["tune time", "new concept", "base suite"] + (
        ["vs base (lost / gained, p)"] if paired else []) + ["load"]
    return "| " + " | ".join(cols) + " |\n|" + "---|" * len(cols)


def _dev_table(path: str, keep: str, drop: str, columns: str,
               settings: Callable[[Any, dict], str], base_path: str = "") -> str:
    """One row per dev run: its name, `settings(config, run)` under `columns`, trainable
    weights, then the shared cells."""
    from difflab.tune.fit import TuneConfig  # a run records only the fields it overrides

    runs, base = _dev_lines(path, keep, drop, base_path)
    rows = [_dev_head(f"run | {columns} | trainable", _paired(base))]
    for r in runs:
        rows.append(f"| {r['name']} | {settings(TuneConfig(**r['config']), r)} | "
                    f"{r['trainable']:,} |" + _dev_cells(r, base))
    return "\n".join(rows) + "\n" + _dev_note(runs[0], base) + "\n"


def tune_dev_table(path: str, keep: str = "", drop: str = "") -> str:
    """Tuning recipes tried on the dev split (one JSON line each, `tune_explore.py`): the
    settings, trainable weights, tune time, new-concept and base-suite accuracy; where the file
    holds the base's own line (name "base", with pass flags), the base suite against it."""
    return _dev_table(path, keep, drop, "steps | batch | lr | prior weight | images",
                      lambda cfg, r: f"{cfg.steps} | {cfg.batch_size} | {cfg.learning_rate} | "
                                     f"{cfg.prior} | {r['images']}")


def tune_seeds_table(path: str, keep: str = "", drop: str = "", base_path: str = "") -> str:
    """Dev runs of LoRA starts, batch draws, layers and ranks, each with its training seed."""
    def settings(cfg: Any, r: dict) -> str:
        rank = f"{cfg.rank}" + (f", `{cfg.rank_pattern}`" if cfg.rank_pattern else "")
        lr = f"{cfg.learning_rate}" + (f" {cfg.schedule}" if cfg.schedule != "constant" else "")
        draws = ("stratified" if cfg.stratified else "random") + (
            f", shift {cfg.shift:g}" if cfg.shift else "") + (
            f", objects {cfg.object_sizes}" if cfg.object_sizes != "random" else "")
        layers = cfg.targets.replace("|", "\\|")  # a pipe inside a table cell
        return (f"{cfg.seed} | {cfg.lora_init} | {draws} | {rank} | `{layers}` | {lr}")

    return _dev_table(path, keep, drop, "seed | start | draws | rank | layers | lr", settings,
                      base_path)


def compose_table(path: str) -> str:
    """Two concept adapters together, and one adapter's gain under caches and quantization."""
    data = _load(path)
    comp = data["composition"]
    sets = list(next(iter(comp.values())))
    rows = ["| adapters | " + " | ".join(f"'{k}' prompts" if k != "both" else "both concepts"
                                         for k in sets) + " |",
            "|---" * (len(sets) + 1) + "|"]
    for name, r in comp.items():
        rows.append(f"| {name} | " + " | ".join(
            format_accuracy(sum(r[k]["passed"]), r[k]["n"]) for k in sets) + " |")
    rows += ["", "| applied to the base and to base + adapter | base | base + adapter | "
             "gain (plain gain) | gain kept |", "|---|---|---|---|---|"]
    for method, k in data["under_methods"].items():
        kept = "-" if k["kept"] is None else f"{100 * k['kept']:.0f}%"
        rows.append(f"| {method} | {format_accuracy(sum(k['base']['passed']), k['base']['n'])} "
                    f"| {format_accuracy(sum(k['adapter']['passed']), k['adapter']['n'])} | "
                    f"{100 * k['gain']:+.1f} ({100 * k['gain_plain']:+.1f}) | {kept} |")
    base = f"Base {_base_name(data)}; split" if "base" in data else "Split"
    return "\n".join(rows) + f"\n\n{base}: {data['split']}; extended evaluator.\n"


def tune_accel_table(path: str) -> str:
    """An adapter's accuracy gain under each cache setting (`benchmarks/tune_accel.py`): base
    and adapter accuracy, the share of the gain kept, speed against plain sampling."""
    data = _load(path)
    rows = ["| setting | base | base + adapter | gain | adapter vs base (only base / only "
            "adapter, p) | gain kept | adapter vs plain (only plain / only this, p) | s/image "
            "(spread) | speed-up |", "|---" * 9 + "|"]
    suite = str(data.get("prompts", "")).startswith("suite")  # a change, not a gain, to keep
    for name, r in sorted(data["settings"].items(), key=lambda kv: kv[0] != "plain"):
        kept = "-" if r["kept"] is None or suite else f"{100 * r['kept']:.0f}%"
        b, a, v = r["base"], r["adapter"], r["adapter_vs_plain"]
        test = "-" if name == "plain" else (f"{v['only_plain']} / {v['only_this']}, "
                                            f"p {format_p(v['p'])}")
        paired = mcnemar_exact(b["passed"], a["passed"])
        lo, hi = r["seconds_spread"]
        rows.append(f"| {name} | {format_accuracy(sum(b['passed']), b['n'])} | "
                    f"{format_accuracy(sum(a['passed']), a['n'])} | {100 * r['gain']:+.1f} | "
                    f"{paired.only_a} / {paired.only_b}, p {format_p(paired.p_value)} | "
                    f"{kept} | {test} | {r['seconds_per_image']:.3f} ({lo:.3f}-{hi:.3f}) | "
                    f"{r['speedup']:.2f}x |")
    return "\n".join(rows) + _accel_caption(
        data, f"{data['n_images']} images of {data.get('prompts', 'its prompts')}",
        "gain = the adapter's change; seconds per image with the adapter, medians over batches "
        "of 16, settings interleaved batch by batch")


def _accel_caption(data: dict, images: str, note: str) -> str:
    """The caption under an adapter-under-acceleration table: base, concept, images, split,
    what the columns mean, and the machine."""
    m = data["machine"]
    return (f"\n\nBase {_base_name(data)}; concept '{data['concept']}', {images}; split: "
            f"{data['split']}; extended evaluator; {note}; {m.get('cpu', '?')}, "
            f"{m.get('threads')} threads, precision {m.get('precision')}.\n")


def tune_accel_pooled_table(*paths: str) -> str:
    """One recipe's adapters (one per training seed) under each cache setting, pooled: the
    images of every seed together, the share of the pooled gain kept, the paired test against
    plain sampling over all pairs, and each seed's own share beside it."""
    runs = [_load(p) for p in paths]
    first = runs[0]
    for p, d in zip(paths[1:], runs[1:], strict=True):
        for key in ("base", "concept", "split", "prompts", "n_images"):
            if d.get(key) != first.get(key):
                raise ConfigError(f"{p}: {key} {d.get(key)!r} differs from {paths[0]}'s "
                                  f"{first.get(key)!r}; pool runs of one base, concept and split")
    names = [n for n in first["settings"] if all(n in d["settings"] for d in runs)]
    if "plain" not in names:
        raise ConfigError(f"{paths[0]}: no 'plain' setting common to every run to pool against")

    def pooled(name: str, side: str) -> list[int]:
        return [x for d in runs for x in d["settings"][name][side]["passed"]]

    def gain(name: str) -> float:
        a, b = pooled(name, "adapter"), pooled(name, "base")
        return (sum(a) - sum(b)) / len(a)

    rows = ["| setting | base | base + adapter | gain | gain kept | kept per seed | adapter vs "
            "plain (only plain / only this, p) | speed-up (per seed) |", "|---" * 8 + "|"]
    plain = gain("plain")
    for name in sorted(names, key=lambda n: n != "plain"):
        a, b = pooled(name, "adapter"), pooled(name, "base")
        kept = f"{100 * gain(name) / plain:.0f}%" if plain else "-"
        seeds = " / ".join("-" if d["settings"][name]["kept"] is None
                           else f"{100 * d['settings'][name]['kept']:.0f}%" for d in runs)
        test = "-"
        if name != "plain":
            v = mcnemar_exact(pooled("plain", "adapter"), a)
            test = f"{v.only_a} / {v.only_b}, p {format_p(v.p_value)}"
        speed = " / ".join(f"{d['settings'][name]['speedup']:.2f}x" for d in runs)
        rows.append(f"| {name} | {format_accuracy(sum(b), len(b))} | "
                    f"{format_accuracy(sum(a), len(a))} | {100 * gain(name):+.1f} | {kept} | "
                    f"{seeds} | {test} | {speed} |")
    return "\n".join(rows) + _accel_caption(
        first, f"{len(runs)} adapters (one per training seed) x {first['n_images']} images of "
        f"{first.get('prompts', 'its prompts')}, pooled", "kept per seed and speed-ups in file "
        "order")


def tune_paths_table(path: str) -> str:
    """One adapter's concept accuracy merged into the base and as peft's unmerged layers, in
    bf16 and fp32, with the passes per block of seeds (`benchmarks/tune_paths.py`)."""
    data = _load(path)
    first = next(iter(data["rows"].values()))
    block = first["block_size"]
    rows = [f"| path | precision | new concept | passes per block of {block} images | vs first "
            "(only first / only this, p) |", "|---|---|---|---|---|"]
    for i, r in enumerate(data["rows"].values()):
        v = r["vs_first"]
        test = "-" if i == 0 else f"{v['only_first']} / {v['only_this']}, p {format_p(v['p'])}"
        rows.append(f"| {r['path']} | {r['precision']} | "
                    f"{format_accuracy(sum(r['passed']), r['n'])} | "
                    f"{' / '.join(map(str, r['passed_per_block']))} | {test} |")
    return "\n".join(rows) + (
        f"\n\nBase {_base_name(data)}; concept '{data['concept']}'; split: {data['split']}; "
        f"the same {first['n']} prompts and seeds in every row, blocks in seed order; "
        f"extended evaluator; {data['machine'].get('cpu', '?')}.\n")


def serve_load_table(path: str) -> str:
    """`difflab serve` under load: batching vs one request at a time (images/s, latency,
    batch size, failures), the paired speed-up, and the flood beyond the queue bound."""
    data = _load(path)
    modes = {"batched": "batched (up to 16 images, 50 ms wait)",
             "one_at_a_time": "one request at a time (--max-batch 1)"}
    head = ("| server | images/s (median of rounds) | p50 latency | p99 latency | mean batch | "
            "answered / failed |\n|---|---|---|---|---|---|")
    rows = [head]
    for mode, label in modes.items():
        m = data["modes"][mode]
        lat = m["latency"]
        rows.append(f"| {label} | {m['images_per_second_median']:.2f} | {lat['p50']:.1f} s | "
                    f"{lat['p99']:.1f} s | {m['mean_batch_images']:.1f} | {m['ok']} / "
                    f"{m['failed']} |")
    f, mach, req = data["flood"], data["provenance"]["machine"], data["request"]
    same = data["identical_images"]
    statuses = ", ".join(f"{n} x {code}" for code, n in sorted(f["statuses"].items()))
    note = (f"\nBatching: {data['speedup']['text']} images/s over one at a time (median of "
            f"{len(data['rounds']['batched'])} interleaved rounds of {data['requests_per_round']} "
            f"requests from {data['clients']} concurrent clients; {req['steps']} steps, guidance "
            f"{req['guidance']:g}, one image each); byte-identical images in both modes: "
            f"{same['same']} of {same['of']}. Flood: {f['requests']} requests at once against a "
            f"queue of {f['queue_bound']}: {statuses}; resident memory "
            f"{f['memory_kib_before']['VmRSS'] / 1024:.0f} -> "
            f"{f['memory_kib_after']['VmRSS'] / 1024:.0f} MiB (peak "
            f"{f['memory_kib_after']['VmHWM'] / 1024:.0f} MiB); afterwards /healthz "
            f"{f['healthz_after']} and a request {f['request_after']}. Timed on "
            f"{mach.get('cpu', '?')} ({mach.get('capability', '?')}), {mach.get('threads')} "
            f"threads, load average {data['load_average']['before']:.1f} -> "
            f"{data['load_average']['after']:.1f}.\n")
    return "\n".join(rows) + "\n" + note


def _where(data: dict[str, Any]) -> str:
    m = data.get("machine", {})
    return (f"{m.get('cpu', '?')} ({m.get('capability', '?')}), "
            f"{data.get('config', {}).get('threads', m.get('threads'))} thread(s)")


def edit_inversion_table(path: str) -> str:
    """Inversion methods: reconstruction PSNR under guidance and seconds per image."""
    data = _load(path)
    rows = ["| inversion | reconstruction PSNR mean | median [95% CI] | worst | >= 35 dB | "
            "time per image |", "|---|---|---|---|---|---|"]
    for r in data["results"]:
        lo, hi = r["psnr_median_interval"]
        rows.append(f"| `{r['spec']}` | {r['psnr_mean']:.1f} dB | {r['psnr_median']:.1f} "
                    f"[{lo:.1f}, {hi:.1f}] | {r['psnr_min']:.1f} | "
                    f"{format_accuracy(r['at_least_35db'], len(r['psnr']))} | "
                    f"{r['seconds_per_image']:.2f} s |")
    c = data["config"]
    note = (f"\n{len(data['results'][0]['psnr'])} source scenes of the edit suite, split: "
            f"{data['split']}; guidance {c['cfg']:g}, {c['steps']} DDIM steps; PSNR capped at "
            f"100 dB; timed on {_where(data)}.\n")
    return "\n".join(rows) + "\n" + note


EDIT_KINDS = ("recolor", "reshape", "move", "remove")


def edit_methods_table(path: str) -> str:
    """Edit methods per kind: edits that succeed and keep >= 30 dB outside the edit box."""
    data = _load(path)
    rows = ["| method | kind | edited and kept (>= 30 dB) | edited (evaluator) | PSNR outside "
            "the box, median | time per edit |", "|---|---|---|---|---|---|"]
    for r in data["results"]:
        s = r["summary"]
        kinds = [k for k in EDIT_KINDS if k in s]
        for kind in kinds + (["all"] if len(kinds) > 1 else []):
            k, psnr = s[kind], s[kind]["psnr_outside_median"]
            rows.append(f"| `{r['spec']}` | {kind} | {format_accuracy(k['ok'], k['n'])} | "
                        f"{format_accuracy(k['success'], k['n'])} | "
                        f"{'unchanged' if psnr >= 100 else f'{psnr:.1f} dB'} | "
                        f"{s['seconds_per_edit']:.2f} s |")
    note = (f"\nSplit: {data['split']}; {len(data['cases'])} cases of the edit suite (kinds "
            f"cycle); time per edit is the method's wall time over its cases, timed on "
            f"{_where(data)}.\n")
    return "\n".join(rows) + "\n" + note


def edit_restore_table(path: str) -> str:
    """Inverse problems: each diffusion method beside the best classical baseline."""
    data = _load(path)
    methods: list[str] = []
    for r in data["results"]:
        methods += [k for k, v in r["methods"].items() if not v["baseline"] and k not in methods]
    rows = ["| problem | sigma_y | best baseline | " + " | ".join(f"`{m}`" for m in methods)
            + " |", "|" + "---|" * (3 + len(methods))]
    for r in data["results"]:
        base = r["methods"][r["best_baseline"]]
        cells = [r["problem"], f"{r['sigma_y']:g}",
                 f"{r['best_baseline']} {base['psnr_mean']:.1f} dB / {base['ssim_mean']:.3f}"]
        for m in methods:
            v = r["methods"].get(m)
            d = v["margin_psnr"] if v is not None else None
            cells.append("-" if v is None else
                         f"{v['psnr_mean']:.1f} dB / {v['ssim_mean']:.3f} ({d['mean']:+.1f} "
                         f"[{d['lo']:+.1f}, {d['hi']:+.1f}])")
        rows.append("| " + " | ".join(cells) + " |")
    c = data["config"]
    note = (f"\nPSNR / SSIM against the ground truth, mean over {c['count']} source scenes of "
            f"the edit suite, split: {data['split']}; in brackets the mean paired PSNR "
            f"difference to the best baseline with its 95% interval; prompt {c['prompt']!r} "
            f"(unconditional); timed on {_where(data)}.\n")
    return "\n".join(rows) + "\n" + note


INTEROP = "benchmarks/results/interop"
INTEROP_MODELS = {"pixart": "PixArt", "sd3": "SD3", "unet": "UNet (SD-style)"}


def interop_table() -> str:
    """Caches and quantizers on the random-weight diffusers models: speed-up against the
    uncached run (interleaved rounds, with its interval), PSNR / SSIM to it, weight bytes."""
    data = {name: _load(f"{INTEROP}/{name}/bench.json") for name in INTEROP_MODELS}
    check_machines({f"{INTEROP}/{k}/bench.json": v["machine"] for k, v in data.items()})
    head = ["model", "point", "speed-up [interval]", "PSNR dB", "SSIM", "weights MB"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, d in data.items():
        base = next(p for p in d["points"] if p["name"] == d["grid"]["baseline"])
        for p in d["points"]:
            q, cost = p["quality"], p["cost"]
            if p is base:
                speed = "1 (baseline)"
            elif "timing" in cost:
                speed = format_speedup(speedup_interval(cost["timing"]["times"],
                                                        base["cost"]["timing"]["times"]))
            else:
                speed = "not timed"
            psnr = q["psnr"]
            rows.append(f"| {INTEROP_MODELS[name]} | {p['name']} | {speed} | "
                        f"{'inf' if psnr in ('inf', float('inf')) else f'{psnr:.1f}'} | "
                        f"{q['ssim']:.3f} | {cost['weight_bytes'] / 2**20:.2f} |")
    d = next(iter(data.values()))
    m, g = d["machine"], d["grid"]
    note = (f"\n{g['max_prompts'] * g['seeds_per_prompt']} images per point (prompts of the "
            f"{g['suite']} suite), {g['points'][0]['steps']} steps, CFG "
            f"{g['points'][0]['cfg_scale']}, fp32; {g['timing_repeats']} interleaved rounds; "
            f"timed on {m.get('cpu', '?')} ({m.get('capability', '?')}), {m.get('threads')} "
            "thread(s). Random weights: PSNR / SSIM are against the uncached float run from "
            "the same noise, not image quality.\n")
    return "\n".join(rows) + "\n" + note


def interop_agreement_table() -> str:
    """difflab's samplers against diffusers' schedulers on the same models and noise."""
    data = _load(f"{INTEROP}/agreement.json")
    rows = ["| model | diffusers scheduler | difflab sampler | max relative difference |",
            "|---|---|---|---|"]
    for name, entry in data["models"].items():
        for r in entry["rows"]:
            scheduler = r["scheduler"] + (f" ({r['label']})" if r.get("label") else "")
            rows.append(f"| {INTEROP_MODELS[name]} | {scheduler} | {r['sampler']} | "
                        f"{r['max_rel_diff']:.1e} |")
    r = next(iter(data["models"].values()))["rows"][0]
    note = (f"\n{r['steps']} steps, CFG {r['cfg']}, 4 prompts, fp32; max |difflab - diffusers| "
            "/ max |diffusers| over the final samples.\n")
    return "\n".join(rows) + "\n" + note


def _overall4(passed: list[int], cats: list[str]) -> tuple[int, int]:
    """Passes and images over the four template categories the alignment work targets."""
    keep = [p for p, c in zip(passed, cats, strict=True)
            if c in ("single", "binding", "counting", "spatial")]
    return sum(keep), len(keep)


def _cat_acc(passed: list[int], cats: list[str], cat: str) -> str:
    f = [p for p, c in zip(passed, cats, strict=True) if c == cat]
    return format_accuracy(sum(f), len(f))


def _guard(fd: float, fd_ref: float, single: float, single_ref: float) -> tuple[str, str]:
    """(single-object change, verdict) by the hacking rule: FD up > 20% or single down > 2 pts."""
    change = 100 * (single - single_ref)
    hacking = fd / fd_ref - 1 > 0.20 or change < -2.0
    return f"{change:+.1f}", "hacking" if hacking else "ok"


ALIGN_HEAD = ("| method | compute per image | binding | counting | spatial | overall (4 suites) "
              "| FD | single-object change | guard | vs base (only this, only base, p) |\n"
              + "|---" * 10 + "|")


def _align_tuned_rows(paths: Sequence[str]) -> tuple[list[str], list[str]]:
    """Rows of align_eval result files, each base first and shown once when later files
    scored it on the same images; and each file's base name."""
    rows, bases, first_base = [], [], None
    for path in paths:
        data = _load(path)
        models = data["models"]
        # a planned-layout row's planner (files before the option existed used the world one)
        planner = data["provenance"]["config"].get("planner") or "world"
        base_name = next(name for name, m in models.items() if "guard" not in m)  # reference
        bases.append(base_name)
        for name, m in sorted(models.items(), key=lambda item: item[0] != base_name):
            if name == base_name and first_base is not None and m["passed"] == first_base:
                continue  # the same base on the same images: shown once
            rows.append(_align_tuned_row(name, m, name == base_name, planner))
        first_base = first_base or models[base_name]["passed"]
    return rows, bases


def align_methods_table(search_path: str, tune_paths: Sequence[str], reno_path: str = ""
                        ) -> str:
    """Alignment methods side by side: compute, accuracy per category and overall on the test
    split, FD, single-object change and the hacking verdict."""
    search = _load(search_path)
    tuned, bases = _align_tuned_rows(tune_paths)
    base = _load(tune_paths[-1])["models"][bases[-1]]
    rows = [ALIGN_HEAD, *_align_search_rows(search, "plain sampling (base)"), *tuned]
    note_reno = ""
    if reno_path:
        reno = _load(reno_path)
        rows += _align_search_rows(reno, "plain sampling (base, ReNO prompts)")
        rp = reno["provenance"]["config"]
        note_reno = (f" ReNO rows: {len(reno['prompts'])} test-split prompts ({rp['per_suite']} "
                     f"per suite), {rp['iters']} gradient steps on the initial noise against the "
                     "reward net ('_last': the last iterate; '_netpick': the iterate the net "
                     "scores highest; no suffix: the iterate the evaluator scores highest), "
                     "against their own plain row.")
    sp = search["provenance"]["config"]
    per = sp["per_suite"] or "all"
    note = (f"\nSearch rows: {len(search['prompts'])} test-split prompts ({per}"
            f" per suite of {sp['suites']}), one image each, the evaluator as reward and SMC "
            "potential ('_net': the reward net as potential); "
            f"tuning rows: the test split's 'all' suite ({base['n_images']} images, overall "
            "here over its four template categories, FD over all of them)." + note_reno
            + " Sampling: Euler ancestral, 20 steps, CFG 3 (one model evaluation per step). "
            "Guard: FD up by more than 20% or single-object accuracy down by more than 2 points "
            "against the row's own baseline. Paired test: exact McNemar on the tuned model's and "
            "the base's pass flags over the same images (all 226 for tuning rows).\n")
    return "\n".join(rows) + "\n" + note


def align_tuned_table(paths: Sequence[str]) -> str:
    """Tuning methods against their base on the test split's 'all' suite (align_eval files):
    accuracy per category, FD, the hacking guard and the paired test."""
    tuned, bases = _align_tuned_rows(paths)
    rows = [ALIGN_HEAD, *tuned]
    first = _load(paths[0])
    m, prov = first["models"][bases[0]], first["provenance"]
    per = prov["config"].get("seeds_per_prompt", 1)
    note = (f"\nBase {', '.join(sorted(set(bases)))}; the {prov['split']} split's 'all' suite "
            f"({m['n_images']} images, {per} per prompt; overall over its four template "
            "categories, FD over all of them). Sampling: Euler ancestral, 20 steps, CFG 3. "
            "Guard: FD up by more than 20% or single-object accuracy down by more than 2 points. "
            "Paired test: exact McNemar "
            "on the pass flags of the same images.\n")
    return "\n".join(rows) + "\n" + note


def _align_search_rows(data: dict, plain_label: str) -> list[str]:
    """Rows of a search-style result file (search, ReNO), each against its own plain row."""
    cats, runs = data["categories"], data["runs"]
    plain = runs["plain"]
    single_of = lambda r, c: float(np.mean([p for p, k in zip(r, c, strict=True)  # noqa: E731
                                            if k == "single"]))
    rows = []
    for name, r in sorted(runs.items(), key=lambda item: item[0] != "plain"):
        extra = r["nfe_per_image"] - plain["nfe_per_image"]
        compute = "-" if name == "plain" else f"+{extra} model evaluations"
        if r.get("backward_per_image"):
            compute += f", +{r['backward_per_image']} backward passes"
        k, n = _overall4(r["passed"], cats)
        change, verdict = _guard(r["fd"], plain["fd"], single_of(r["passed"], cats),
                                 single_of(plain["passed"], cats))
        label = plain_label if name == "plain" else name
        rows.append(f"| {label} | {compute} | "
                    + " | ".join(_cat_acc(r["passed"], cats, c)
                                 for c in ("binding", "counting", "spatial"))
                    + f" | {format_accuracy(k, n)} | {r['fd']:.1f} | "
                    + ("-" if name == "plain" else change) + " | "
                    + ("-" if name == "plain" else verdict) + " | - |")
    return rows


def _align_tuned_row(name: str, m: dict, is_base: bool, planner: str = "world") -> str:
    """One row of an align_eval result file: the base, or a tuned adapter with its guard."""
    c = m["categories"]
    k, n = _overall4(m["passed"], c)
    vs = "-"
    if is_base:
        compute, change, verdict, label = "-", "-", "-", f"{name} (base)"
    else:
        t = m["vs_base"]
        vs = f"{t['only_a']}, {t['only_b']}, p {format_p(t['p_value'])}"
        meta, config = m["adapter_manifest"]["metrics"], m["adapter_manifest"]["config"]
        change = f"{100 * m['guard']['single_change']:+.1f}"
        verdict = "hacking" if m["guard"]["hacking"] else "ok"
        if name.startswith("planned:"):  # a layout adapter reading boxes planned per prompt
            return (f"| {config['method']} + {planner}-planned layouts | "
                    f"{meta['seconds'] / 60:.0f} min "
                    f"adapter training, the adapter at sampling | "
                    + " | ".join(_cat_acc(m["passed"], c, x)
                                 for x in ("binding", "counting", "spatial"))
                    + f" | {format_accuracy(k, n)} | {m['fd']:.1f} | {change} | {verdict} | "
                    f"{m['vs_base']['only_a']}, {m['vs_base']['only_b']}, p "
                    f"{format_p(m['vs_base']['p_value'])} |")
        align = config["align"]
        compute = f"{meta['seconds'] / 60:.0f} min tuning, no extra at sampling"
        label = align.get("method", name)
        if label == "draft":
            label = f"draft (K={align['k']}, lr {align['lr']:g})"
        elif label in ("ddpo", "spo"):
            label = f"{label} (lr {align['lr']:g}, {meta['iterations']} iterations)"
        elif label == "raft":
            rounds = len(meta["rounds"])
            label = (f"raft ({align['tuner']}, {rounds} round{'s' if rounds > 1 else ''} of "
                     f"{align['steps']} steps, lr {align['lr']:g}"
                     + (f", prior weight {align['prior_weight']:g}"
                        if align["prior_weight"] != 1 else "")
                     + (f", unconditional weight {align['uncond_weight']:g}"
                        if align.get("uncond_weight") else "") + ")")
    return (f"| {label} | {compute} | "
            + " | ".join(_cat_acc(m["passed"], c, x) for x in ("binding", "counting", "spatial"))
            + f" | {format_accuracy(k, n)} | {m['fd']:.1f} | {change} | {verdict} | {vs} |")


def align_search_table(path: str) -> str:
    """Search at equal model evaluations: reward, accuracy, FD, paired tests against plain."""
    data = _load(path)
    cats, runs, tests = data["categories"], data["runs"], data["paired_tests"]
    rows = ["| search | model evaluations / image | reward calls / image | mean reward | "
            "overall | FD | vs plain (only this, only plain, p) |", "|---|---|---|---|---|---|---|"]
    for name, r in sorted(runs.items(), key=lambda item: item[0] != "plain"):
        k, n = _overall4(r["passed"], cats)
        t = tests.get(f"{name} vs plain")
        vs = "-" if t is None else f"{t['only_a']}, {t['only_b']}, p {format_p(t['p_value'])}"
        rows.append(f"| {name} | {r['nfe_per_image']} | {r['reward_calls_per_image']:g} | "
                    f"{r['mean_reward']:.3f} | {format_accuracy(k, n)} | {r['fd']:.1f} | {vs} |")
    between = [f"{name}: only SMC {t['only_a']}, only best-of {t['only_b']}, p "
               f"{format_p(t['p_value'])}" for name, t in tests.items() if " vs bestof" in name]
    return "\n".join(rows) + "\n\nSMC against best-of-N at equal evaluations: " + \
        "; ".join(between) + f". Split: {data['provenance']['split']}.\n"


def align_draft_dev_table(path: str) -> str:
    """DRaFT-K runs on the dev split: K, lr, steps, evaluator and reward-net scores, FD."""
    data = _load(path)
    cats, runs = data["categories"], data["runs"]
    rows = ["| run | K | lr | steps | tuning | overall | evaluator reward | reward net score "
            "| FD | vs base (only this, only base, p) |", "|---" * 10 + "|"]
    for name, r in sorted(runs.items(), key=lambda item: "config" in item[1]):  # base first
        k, n = _overall4(r["passed"], cats)
        cfg = r.get("config")
        if cfg is None:
            tuned = "| - | - | - | - "
            vs = "-"
        else:
            tuned = (f"| {cfg['k']} | {cfg['lr']:g} | {r['steps_done']} | "
                     f"{r['train_seconds'] / 60:.0f} min ")
            t = r["vs_base"]
            vs = f"{t['only_a']}, {t['only_b']}, p {format_p(t['p_value'])}"
        rows.append(f"| {name} {tuned}| {format_accuracy(k, n)} | {r['mean_reward']:.3f} | "
                    f"{r['mean_net_reward']:.3f} | {r['fd']:.1f} | {vs} |")
    c = data["provenance"]["config"]
    return ("\n".join(rows) + f"\n\n{len(data['prompts'])} dev-split prompts ({c['per_suite']} per "
            f"suite of {c['eval_suites']}), dev image {c['eval_image']} of each (training drew "
            f"images below it); tuned on {c['suites']}, {c['batch_size']} prompts per step.\n")


def align_rewardnet_table(path: str) -> str:
    """The reward net's agreement with the evaluator on held-out images, per requirement."""
    data = _load(path)
    held = data["heldout"]
    sets = ("all", "generated_own_spec", "rendered_own_spec", "near_miss_specs")
    rows = ["| requirement | " + " | ".join(s.replace("_", " ") for s in sets) + " |",
            "|---" * (len(sets) + 1) + "|"]
    for req in ("objects", "colors", "count", "relation", "passed"):
        cells = []
        for s in sets:
            a = held[s].get(req)
            cells.append("-" if a is None else format_accuracy(round(a["agreement"] * a["n"]),
                                                                 a["n"]))
        rows.append(f"| {req} | " + " | ".join(cells) + " |")
    pearson = [held[s]["reward_pearson"] for s in sets]
    rows.append("| reward (Pearson r) | " + " | ".join(
        "- (evaluator reward constant)" if r != r else f"{r:.3f}" for r in pearson) + " |")
    return "\n".join(rows) + (f"\n\n{data['parameters']:,} parameters, trained on "
                              f"{data['train_rows']:,} (image, spec) rows; held out: "
                              f"{data['heldout_rows']:,} rows from other dev seeds.\n")


def _num(v: Any, spec: str = ".1f") -> str:
    return str(v) if isinstance(v, str) else format(v, spec)


def autotune_table(path: str) -> str:
    """`difflab accelerate`: the winner and its test-split confirmation, the finalists (timed
    interleaved with the reference) and the ablation of each of the winner's components."""
    data = _load(path)
    prov, conf, w = data["provenance"], data["confirmation"], data["winner"]
    rungs = " -> ".join(f"{len(r['evaluations'])} x {r['images']}" for r in data["rungs"])
    meets = {e["label"]: e["meets_budget"] for e in data["rungs"][-1]["evaluations"]}
    rows = ["| configuration | speed-up [interval] | accuracy | FD | PSNR dB | meets budget "
            "(calibration) | Pareto |", "|---|---|---|---|---|---|---|"]
    for r in sorted(data["finalists"], key=lambda r: r.get("time_ratio", 1e9)):
        speed = (f"{r['speedup']:.2f}x [{r['speedup_interval'][0]:.2f}, "
                 f"{r['speedup_interval'][1]:.2f}]" if "speedup" in r else "-")
        q = r["quality"]
        rows.append(f"| {r['label']} | {speed} | {100 * q['accuracy']:.1f}% | {q['fd']:.1f} | "
                    f"{_num(q['psnr'])} | {'yes' if meets.get(r['label']) else 'no'} | "
                    f"{'yes' if r['on_frontier'] else ''} |")
    out = "\n".join(rows) + "\n"
    if w is not None and conf is not None:
        n = conf["images"]
        wq, rq = conf["winner_quality"], conf["reference_quality"]
        acc = conf["accuracy_interval"]
        out += (f"\nWinner **{w['label']}**: {w['speedup']:.2f}x "
                f"[{w['speedup_interval'][0]:.2f}, {w['speedup_interval'][1]:.2f}] against "
                f"{data['reference']}. Test split ({n} images): the budget "
                f"**{'held' if conf['held'] else 'did not hold'}**; accuracy "
                f"{100 * wq['accuracy']:.1f}% [{100 * acc['winner'][0]:.1f}, "
                f"{100 * acc['winner'][1]:.1f}] vs reference {100 * rq['accuracy']:.1f}% "
                f"[{100 * acc['reference'][0]:.1f}, {100 * acc['reference'][1]:.1f}] "
                f"(McNemar {format_p(conf['mcnemar']['p'])}), FD {wq['fd']:.1f} vs "
                f"{rq['fd']:.1f}, PSNR {_num(wq['psnr'])} dB; margins: "
                + ", ".join(f"{k} {v:+.3g}" for k, v in conf["margins"].items()) + ".\n")
    if data["ablation"]:
        out += ("\n| without | configuration | speed-up | accuracy | FD | PSNR dB | meets "
                "budget |\n|---|---|---|---|---|---|---|\n")
        for what, a in data["ablation"].items():
            q = a.get("quality")
            cells = (f"{100 * q['accuracy']:.1f}% | {q['fd']:.1f} | {_num(q['psnr'])} | "
                     f"{'yes' if a['meets_budget'] else 'no'}") if q else "(the winner) | | |"
            out += f"| {what} | {a['label']} | {a['speedup']:.2f}x | {cells} |\n"
    mach, cfg = prov["machine"], prov["config"]
    out += (f"\nSearch: successive halving, {rungs} configurations x calibration images "
            f"({cfg['suite']} suite, dev split), {data['search_seconds'] / 60:.1f} min of a "
            f"{cfg['minutes']:g}-min budget; {cfg['precision']}; timed on {mach.get('cpu', '?')} "
            f"({mach.get('capability', '?')}), {mach.get('threads')} thread(s), load average "
            f"{data['load_average']['start'][0]:.1f} at the start and "
            f"{data['load_average']['end'][0]:.1f} at the end (a shared CPU: speed-ups are "
            f"ratios timed round-robin with the reference in one process).\n")
    return out


def format_distill(result: dict[str, Any]) -> str:
    """Distilled students beside the teacher and plain Euler: accuracy per suite with intervals,
    FD, PSNR to the 50-step teacher, McNemar tests; then each student's distillation cost."""
    rows = result["rows"]
    suites = list(rows[0]["per_suite"])
    head = ["point", "NFE (rows)", *suites, "overall", "FD", "PSNR to x50 dB",
            "McNemar p vs x50", "vs plain Euler, same steps (+/-, p)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["name"], f"{r['nfe']} ({r['rows_per_step']})"]
        for s in suites:
            p = r["per_suite"][s]
            cells.append(f"{100 * p['accuracy']:.1f} [{100 * p['interval'][0]:.0f}, "
                         f"{100 * p['interval'][1]:.0f}]")
        cells.append(f"{100 * r['accuracy']:.1f} [{100 * r['interval'][0]:.0f}, "
                     f"{100 * r['interval'][1]:.0f}]")
        cells.append(f"{r['fd']:.1f}")
        cells.append(f"{r['psnr_to_teacher50']:.2f}" if "psnr_to_teacher50" in r else "-")
        m = r.get("mcnemar_vs_teacher50")
        cells.append(f"{m['p']:.2g}" if m else "-")
        e = r.get("mcnemar_vs_plain_euler")
        cells.append(f"+{e['only_this']}/-{e['only_plain']}, {e['p']:.2g}" if e else "-")
        lines.append("| " + " | ".join(cells) + " |")
    cost = ["", "| student | method | trained for | distillation minutes | teacher evaluations "
            "| phases (iterations) |", "|---|---|---|---|---|---|"]
    for name, s in result["students"].items():
        phases = ", ".join(f"{k}: {v}" for k, v in s["phases"].items())
        cost.append(f"| {name} | {s['method']} | {s['sampler']} x{s['trained_steps']} | "
                    f"{s['distill_minutes']} | {s['teacher_evaluations']:,} | {phases} |")
    return "\n".join(lines + cost) + "\n"



def distill_table(path: str) -> str:
    return format_distill(_load(path))


def _control_base(data: dict) -> str:
    """The base model a control result file sampled (its provenance's checkpoint)."""
    return data.get("base") or data["provenance"]["checkpoint"]


def _planned(data: dict) -> str:
    """', layouts planned (grid)' for a control file whose boxes were planned from the prompts
    (files written before the world planner existed name no planner: they used the grid)."""
    if data.get("layouts") != "planned":
        return ""
    return f", layouts planned ({data.get('planner') or 'grid'})"


def control_table(path: str) -> str:
    """Layout control methods side by side: accuracy with its interval, relation, box and mask
    IoU, time per image and McNemar against the plain base."""
    data = _load(path)
    layout = data["suite"] == "layout"
    head = "| method | accuracy (95% CI) | relation |"
    head += " box IoU | mask IoU | objects IoU >= 0.5 |" if layout else ""
    head += " s/image | extra s/image | vs first (only first / only this, p) |"
    rows = [f"{_control_base(data)}, {data['suite']} suite{_planned(data)}, "
            f"{data['provenance']['split']} split, {data['n_images']} images ({path})", "", head,
            "|" + "---|" * (head.count("|") - 1)]
    # the file keeps methods sorted by name; the row every other is compared with goes first
    for name, r in sorted(data["methods"].items(), key=lambda kv: "vs_first" in kv[1]
                          and kv[1]["vs_first"] is not None):
        lo, hi = r["interval"]
        rel = "-" if r["relation"] is None else f"{r['relation']:.1%}"
        row = f"| {name} | {r['accuracy']:.1%} ({lo:.1%}-{hi:.1%}) | {rel} |"
        if layout:
            row += (f" {r['box_iou']:.3f} | {r['mask_iou']:.3f} |"
                    f" {r['objects_box_iou_ge_0.5']:.1%} |")
        vs = r.get("vs_first")
        cmp = f"{vs['only_first']} / {vs['only_this']}, p {format_p(vs['p'])}" if vs else "-"
        extra = r["extra_seconds_per_image"]
        extra = "-" if extra is None else f"{extra:+.2f}"
        row += f" {r['seconds_per_image']:.2f} | {extra} | {cmp} |"
        rows.append(row)
    return "\n".join(rows) + "\n"


def control_adapters_table(path: str) -> str:
    """Trained layout adapters beside the plain base: size (trainable parameters and their
    share of the base), training minutes and steps (where recorded), GLIGEN's final gate
    openings when a row records them, accuracy with its interval, on the layout suite the
    relation, box and mask IoU, time per image and McNemar against the plain base."""
    data = _load(path)
    layout = data["suite"] == "layout"
    ref = data.get("reference") or {}
    gated = any((r.get("adapter") or {}).get("gates") for r in data["methods"].values())
    stepped = any((r.get("adapter") or {}).get("steps_done") for r in data["methods"].values())
    head = "| method | trainable params (share of base) | train min |"
    head += " train steps |" if stepped else ""
    head += " gates abs(tanh(gamma)) |" if gated else ""
    head += " accuracy (95% CI) |"
    head += " relation | box IoU | mask IoU |" if layout else ""
    head += " s/image | vs base (only base / only this, p) |"
    rows = [f"{_control_base(data)}, {data['suite']} suite{_planned(data)}, "
            f"{data['provenance']['split']} split, {data['n_images']} images ({path})", "", head,
            "|" + "---|" * (head.count("|") - 1)]
    for name, r in data["methods"].items():
        lo, hi = r["interval"]
        facts = r.get("adapter")
        size = (f"{facts['parameters']:,} ({facts['share_of_base']:.1%})" if facts else "-")
        seconds = facts.get("train_seconds") if facts else None
        minutes = "-" if seconds is None else f"{seconds / 60:.1f}"
        rel = "-" if r["relation"] is None else f"{r['relation']:.1%}"
        label = name + (" (reference row)" if r.get("from_reference") else "")
        row = f"| {label} | {size} | {minutes} |"
        if stepped:
            steps = (facts or {}).get("steps_done")
            row += f" {'-' if steps is None else f'{steps:,}'} |"
        if gated:
            gates = (facts or {}).get("gates")
            row += f" {' / '.join(f'{v:.2f}' for v in gates.values()) if gates else '-'} |"
        row += f" {r['accuracy']:.1%} ({lo:.1%}-{hi:.1%}) |"
        if layout:
            row += f" {rel} | {r['box_iou']:.3f} | {r['mask_iou']:.3f} |"
        vs = r.get("vs_first")
        cmp = f"{vs['only_first']} / {vs['only_this']}, p {format_p(vs['p'])}" if vs else "-"
        row += f" {r['seconds_per_image']:.2f} | {cmp} |"
        rows.append(row)
    if ref:
        rows += ["", f"Reference rows come from {ref['file']}, whose plain-base row this run "
                 f"reproduced: {'yes' if ref['base_reproduced'] else 'no'}."]
    return "\n".join(rows) + "\n"


def control_gligen_attention_table(path: str) -> str:
    """GLIGEN's gated self-attention per layer: how much more a visual token attends to an
    object's grounding token from inside that object's box than from outside (1 = location
    ignored), and its attention share on grounding tokens, per run and noise level."""
    data = _load(path)
    runs = data["controls"]
    layers = list(next(iter(runs.values()))["gates"])
    head = "| run | positions | t |" + "".join(f" {name}: in/out box, grounding share |"
                                               for name in layers)
    rows = [f"{_control_base(data)}, {data['scenes']} fresh world scenes ({path})", "", head,
            "|" + "---|" * (head.count("|") - 1)]
    for run, r in runs.items():
        for level in [k for k in r if k.startswith("t=")]:
            cells = "".join(f" {r[level][n]['inside_outside_ratio']:.2f}, "
                            f"{r[level][n]['grounding_share']:.1%} |" for n in layers)
            rows.append(f"| {run} | {'yes' if r['positions'] else 'no'} | {level[2:]} |{cells}")
    return "\n".join(rows) + "\n"


def _timed_speedup(point: dict[str, Any], base: dict[str, Any]) -> str:
    """A bench point's paired speed-up with its interval; "1 (baseline)"; "-" when untimed."""
    if point is base:
        return "1 (baseline)"
    if "timing" not in point["cost"]:
        return "-"
    return format_speedup(speedup_interval(point["cost"]["timing"]["times"],
                                           base["cost"]["timing"]["times"]))


def _timing_coverage(points: list[dict[str, Any]], base: dict[str, Any]) -> float:
    """The coverage of the speed-up intervals of a bench run's timed points (one per run)."""
    timed = next(p for p in points if p is not base and "timing" in p["cost"])
    return speedup_interval(timed["cost"]["timing"]["times"],
                            base["cost"]["timing"]["times"]).coverage


def _execution(config: dict[str, Any]) -> str:
    """float (no quantizer), real (int8 kernels) or simulated (fake-quantized in float)."""
    quant = config.get("quant")
    if quant is None:
        return "float"
    real = quant.get("execution") == "real" or quant["recipe"].endswith("_real")
    return "real" if real else "simulated"


# The DiT acceleration grid's points by what they run (benchmarks/accel_grid.toml)
DIT_LABELS = {
    "euler-20": "euler-20, uncached",
    "block-all-n2": "block_cache all blocks, interval 2 (FORA)",
    "block-all-n3": "block_cache all blocks, interval 3",
    "block-mid-n3-quad": "block_cache blocks 1-4 of 6, interval 3, quadratic (Δ-DiT-like)",
    "teacache-0.2": "teacache 0.2 (unfitted)",
    "teacache-0.3": "teacache 0.3 (unfitted)",
    "teacache-fit-0.05": "teacache 0.05, fitted line",
    "teacache-fit-0.1": "teacache 0.1, fitted line",
    "fbcache-0.15": "first_block_cache 0.15",
    "fbcache-0.2": "first_block_cache 0.2",
    "ras-0.5": "ras 0.5",
    "ras-0.25": "ras 0.25",
    "bottleneck": "bottleneck 32→16→32 px",
    "euler-10": "10 steps, no cache",
    "euler-7": "7 steps, no cache",
    "euler-10+block-all-n2": "10 steps + block_cache interval 2",
}


# (label, point in quant/ (ancestral sampling), point in quant_euler/ (deterministic Euler))
QUANT_ROWS = (
    ("bf16 eager (baseline)", "bf16", "bf16"),
    ("bf16 compiled", "bf16_compiled", None),
    ("w8a8", "w8a8", "w8a8"),
    ("w8a8_real eager", "w8a8_real", None),
    ("w8a8_real compiled", "w8a8_real_compiled", None),
    ("w8a8_static (4 timestep groups), min-max ranges", None, "w8a8_static"),
    ("w8a8_static, MSE-optimal ranges", "w8a8_static", "w8a8_static_mse"),
    ("w4a8", "w4a8", None),
    ("w4a8_static, min-max scales from every step", None, "w4a8_static"),
    ("w4a8_static, min-max, last step only", None, "w4a8_static_last"),
    ("w4a8_static, MSE ranges, every step", "w4a8_static", "w4a8_static_mse"),
    ("w4a8_static, MSE ranges, last step", "w4a8_static_last", "w4a8_static_last_mse"),
    ("w4a4", "w4a4", "w4a4"),
    ("w4a4_svd (rank 32)", "w4a4_svd", "w4a4_svd"),
    ("fp8 e4m3", "fp8", None),
    ("fp4 e2m1 (fp8 activations)", "fp4", None),
    ("mixed int4/int8, 6-bit budget", "mixed", None),
)


def quant_table(ancestral_path: str, euler_path: str) -> str:
    """The quantization frontier from two bench runs of the same recipes: the demo's ancestral
    sampling (accuracy, FD, speed) and deterministic Euler (PSNR / SSIM of what quantization
    alone changed); accuracy and FD in parentheses where only the Euler run has the point."""
    paths = {"ancestral": ancestral_path, "euler": euler_path}
    runs = {k: _load(path) for k, path in paths.items()}
    points = {k: {p["name"]: p for p in d["points"]} for k, d in runs.items()}
    for column, k in enumerate(paths, start=1):  # each row names a point of each run or None
        missing = sorted({r[column] for r in QUANT_ROWS} - set(points[k]) - {None})
        if missing:
            raise ConfigError(f"{paths[k]} has no point {', '.join(missing)}; it has: "
                              f"{', '.join(points[k])}")
    base = points["ancestral"][runs["ancestral"]["grid"]["baseline"]]
    head = ["point", "execution", "weights MB", "speed-up [interval]", "accuracy [95% CI]",
            "FD", "PSNR dB (ancestral / Euler)", "SSIM (Euler)"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, a_name, e_name in QUANT_ROWS:
        a = points["ancestral"][a_name] if a_name else None
        e = points["euler"][e_name] if e_name else None
        main = a or e
        n = len(runs["ancestral" if a else "euler"]["prompts"])
        q = main["quality"]
        acc, fd = format_accuracy(round(q["accuracy"] * n), n), f"{q['fd']:.1f}"
        if a is None:
            acc, fd = f"({acc})", f"({fd})"
        psnr = " / ".join("-" if p is None else _num(p["quality"]["psnr"]) for p in (a, e))
        rows.append(f"| {label} | {_execution(main['config'])} | "
                    f"{main['cost']['weight_bytes'] / 1e6:.2f} | "
                    f"{_timed_speedup(a, base) if a else '-'} | {acc} | {fd} | {psnr} | "
                    f"{'-' if e is None else format(e['quality']['ssim'], '.3f')} |")
    g, m = runs["ancestral"]["grid"], runs["ancestral"]["machine"]
    cover = _timing_coverage(runs["ancestral"]["points"], base)
    note = (f"\n{len(runs['ancestral']['prompts'])} images per point ({g['suite']} suite), split: "
            f"{_split(g)}; speed-up: median of {g['timing_repeats']} paired rounds against bf16 "
            f"eager, interval of {100 * cover:.0f}% coverage (ancestral run only; simulated "
            f"points are not timed); timed on {m.get('cpu', '?')}, "
            f"{m.get('torch_threads', m.get('threads'))} thread(s).\n")
    return "\n".join(rows) + "\n" + note


# Labels of benchmarks/quant_grid_test.toml's points
QUANT_TEST_LABELS = {
    "bf16": "bf16 eager (baseline)",
    "bf16_compiled": "bf16 compiled",
    "w8a8_real": "w8a8_real eager",
    "w8a8_real_compiled": "w8a8_real compiled",
    "w8a8_static": "w8a8_static, min-max, 4 timestep groups",
    "w4a8_static": "w4a8_static, min-max, every step (Q-Diffusion)",
    "w4a8_static_last": "w4a8_static, min-max, last step only",
    "w4a4_svd": "w4a4_svd (rank 32)",
    "fp8": "fp8 e4m3",
    "fp4": "fp4 e2m1 (fp8 activations)",
    "mixed": "mixed int4/int8, 6-bit budget",
}


def quant_test_table(path: str) -> str:
    """One quantization bench run: execution, weight size, paired speed-up of the timed
    points, accuracy with its Wilson interval and McNemar p against the baseline, FD, PSNR and
    SSIM against the float reference on the same noise."""
    data = _load(path)
    base = next(p for p in data["points"] if p["name"] == data["grid"]["baseline"])
    n = len(data["prompts"])
    head = ["point", "execution", "weights MB", "speed-up [interval]", "accuracy [95% CI]",
            "McNemar p", "FD", "PSNR dB", "SSIM"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for p in data["points"]:
        q = p["quality"]
        pval = "-" if p is base else format_p(mcnemar_exact(p["passed"], base["passed"]).p_value)
        rows.append(f"| {QUANT_TEST_LABELS.get(p['name'], p['name'])} | "
                    f"{_execution(p['config'])} | {p['cost']['weight_bytes'] / 1e6:.2f} | "
                    f"{_timed_speedup(p, base)} | {format_accuracy(sum(p['passed']), n)} | "
                    f"{pval} | {q['fd']:.1f} | {_num(q['psnr'])} | {q['ssim']:.3f} |")
    g, m = data["grid"], data["machine"]
    floor = data.get("fd_floor")
    cover = _timing_coverage(data["points"], base)
    where = m.get("cpu", "?") + (f" ({m['capability']})" if m.get("capability") else "")
    note = (f"\n{n} images per point ({g['suite']} suite), split: {_split(g)}; FD floor (real "
            f"vs real, same count): {'-' if floor is None else f'{floor:.1f}'}; speed-up: median "
            f"of {g['timing_repeats']} paired interleaved rounds against bf16 eager, interval of "
            f"{100 * cover:.0f}% coverage (simulated points are not timed); timed on {where}, "
            f"{m.get('threads', m.get('torch_threads'))} thread(s).\n")
    return "\n".join(rows) + "\n" + note


def format_sampler_pivot(data: dict[str, Any]) -> str:
    """A sampler grid as one table per CFG scale: a row per sampler, a column per NFE budget,
    each cell accuracy / FD / PSNR / time ratio (the NFE used in brackets where a sampler's
    steps cannot hit the budget exactly, e.g. Heun's 2n - 1)."""
    points = data["points"]
    budgets = sorted({p["cost"]["nfe"] for p in points if p["cost"]["nfe"] == p["config"]["steps"]})
    cells: dict[float, dict[str, dict[int, str]]] = {}
    for p in points:
        c, q, cost = p["config"], p["quality"], p["cost"]
        budget = min(b for b in budgets if b >= cost["nfe"])
        used = "" if cost["nfe"] == budget else f" ({cost['nfe']})"
        row = cells.setdefault(c["cfg_scale"], {}).setdefault(c["sampler"], {})
        row[budget] = (f"{100 * q['accuracy']:.1f}%{used} / {q['fd']:.0f} / "
                       f"{_num(q['psnr'])} / {cost['time_ratio']:.2f}")
    out = []
    for cfg, rows in sorted(cells.items()):
        out += [f"CFG {cfg:g} — accuracy / FD / PSNR (dB) / time ratio, by NFE",
                "| sampler | " + " | ".join(f"NFE {n}" for n in budgets) + " |",
                "|---|" + "---|" * len(budgets)]
        out += [f"| {s} | " + " | ".join(row.get(n, "") for n in budgets) + " |"
                for s, row in rows.items()]
        out.append("")
    return "\n".join(out[:-1]) + "\n"


def sampler_table(path: str) -> str:
    return format_sampler_pivot(_load(path))


TRAIN_LOOP_VARIANTS = {
    "eager": "eager (the trainer's step: forward, loss, backward, clip, AdamW foreach, EMA)",
    "fused_adamw": "AdamW `fused=True`",
    "channels_last": "`channels_last` network and input",
    "compiled": "forward + loss under `torch.compile`",
}


def train_loop_table(path: str) -> str:
    """The training step's variants timed round robin: median s/step [quartiles], and the
    speed-up against the eager step."""
    data = _load(path)
    rows = ["| variant | s/step | vs eager |", "|---|---|---|"]
    for name, label in TRAIN_LOOP_VARIANTS.items():
        v = data["step_variants"][name]
        t = v["timing"]
        rows.append(f"| {label} | {t['median']:.3f} [{t['q1']:.3f}, {t['q3']:.3f}] | "
                    f"{v['speedup_vs_eager']:.2g} |")
    return "\n".join(rows) + "\n"


def presets_table() -> str:
    """The model presets (`difflab models`): computed from the code, not from a result file."""
    from difflab.models import presets_table as table

    return table() + "\n"


def _pr(entry: dict[str, Any]) -> str:
    """'0.75 [0.61, 0.85] (30/40)', or '-' where nothing was passed or labelled pass."""
    if entry["value"] is None:
        return "- (0/0)"
    lo, hi = entry["interval"]
    return f"{entry['value']:.2f} [{lo:.2f}, {hi:.2f}] ({entry['k']}/{entry['n']})"


def evaluator_audit_table(path: str) -> str:
    """The evaluator, lenient (old) and strict (new), against labels made by eye on generated
    images: precision and recall with Wilson intervals, and McNemar's test on agreement."""
    data = _load(path)
    rows = ["| images | labelled pass / fail / unsure | precision old | precision new | "
            "recall old | recall new | agreement old -> new | McNemar p |",
            "|---|---|---|---|---|---|---|---|"]
    order = data["order"]
    groups = [("all", data["overall"])]
    groups += [(f"model `{k}`", data["per_model"][k]) for k in order["models"]]
    groups += [(f"suite {k}", data["per_suite"][k]) for k in order["suites"]]
    for name, g in groups:
        old, new, test, lab = g["old"], g["new"], g["mcnemar"], g["labels"]
        agree = (f"{old['accuracy']['k']}/{old['n']} -> {new['accuracy']['k']}/{new['n']}")
        rows.append(f"| {name} | {lab['pass']} / {lab['fail']} / {lab['unsure']} | "
                    f"{_pr(old['precision'])} | {_pr(new['precision'])} | "
                    f"{_pr(old['recall'])} | {_pr(new['recall'])} | {agree} | "
                    f"{format_p(test['p_value'])} |")
    reasons = data["overall"]["reasons"]
    why = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in reasons.items())
    err = data["errors"]
    rows += ["", "| where old / new disagree with the labels | old | new |", "|---|---|---|"]
    for key, what in (("false_passes_by_reason", "false passes, labelled"),
                      ("false_failures_by_check", "false failures, failing check")):
        for k, n_old in err["old"][key].items():
            if n_old or err["new"][key][k]:
                rows.append(f"| {what} {k.replace('_', ' ')} | {n_old} | "
                            f"{err['new'][key][k]} |")
    prov = data["provenance"]
    cfg = prov["config"]["sample"]
    note = (f"\n{data['regenerated']['images']} images (split {prov['split']}, "
            f"{prov['config']['image_size']} px, {cfg['sampler']} {cfg['steps']} steps, cfg "
            f"{cfg['cfg']:g}, {cfg['precision']}); precision: labelled pass among the "
            f"evaluator's passes; recall: evaluator passes among the labelled passes; unsure "
            f"images left out. Reasons given for labelled failures (one image may have "
            f"several): {why}.\n")
    return "\n".join(rows) + "\n" + note


def _rate(r: dict[str, Any]) -> str:
    return format_accuracy(r["k"], r["n"])


def _evaluated_on(data: dict[str, Any]) -> str:
    m = data["provenance"]["machine"]
    return (f"scored on {m.get('cpu', '?')} ({m.get('capability', '?')}, "
            f"{m.get('auto_precision', '?')}), {m.get('threads', '?')} thread(s)")


UNKNOWN_SLOTS = ("unknown_color", "unknown_shape", "unknown_extra")  # data.paraphrase's


def _reworded_by_word(s: dict[str, Any]) -> dict[str, list[int]]:
    """Reworded one-object images grouped by whether the world's colour / shape word stayed:
    [images, empty, passed] per group."""
    from difflab.data.world import COLORS, SHAPES

    out: dict[str, list[int]] = {}
    rows = zip(s["texts"], s["categories"], s["flags"]["empty"], s["flags"]["passed"],
               strict=True)
    for text, cat, empty, passed in rows:
        if cat.startswith("reworded"):
            words = set(text.split())
            color = "colour word kept" if words & set(COLORS) else "colour reworded"
            shape = "shape word kept" if words & set(SHAPES) else "shape reworded"
            g = out.setdefault(f"{cat.replace('_', ' ')}: {color}, {shape}", [0, 0, 0])
            g[0], g[1], g[2] = g[0] + 1, g[1] + empty, g[2] + passed
    return dict(sorted(out.items()))


def reworded_diagnosis_table(path: str) -> str:
    """The base model on one-object prompts per wording: passed, no object at all, an object
    of the asked shape / colour anywhere; then MiniLM token lengths against `max_length`."""
    data = _load(path)
    s = data["sets"]["one_object"]
    head = ["prompts", "passed", "empty", "asked shape drawn", "asked colour drawn"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for cat in ("single", "reworded_seen", "reworded_unseen", *UNKNOWN_SLOTS):
        rows.append("| " + " | ".join([cat.replace("_", " "), *(
                _rate(s[k][cat]) for k in ("passed", "empty", "has_shape", "has_color"))]) + " |")
    rows += ["", "| reworded one-object prompts | images | empty | passed |", "|---|---|---|---|"]
    for group, (k, e, p) in _reworded_by_word(s).items():
        rows.append(f"| {group} | {k} | {format_accuracy(e, k)} | {format_accuracy(p, k)} |")
    m = data["max_length"]
    rows += ["", f"| prompts | count | tokens max / mean | over max_length {m} |",
             "|---|---|---|---|"]
    for name, t in data["token_lengths"].items():
        rows.append(f"| {name.replace('_', ' ')} | {t['prompts']} | {t['max_tokens']} / "
                    f"{t['mean_tokens']:.1f} | {t['truncated']} |")
    return ("\n".join(rows)
            + f"\n\n{s['n_images']} images, dev split; {_evaluated_on(data)}; {path}\n")


def reworded_synonymy_table(path: str) -> str:
    """Per kind and paraphrase half: how many synonyms' MiniLM token states (in a suite frame)
    lie nearest their own world word, and where the others land."""
    data = _load(path)
    rows = ["| words | nearest world word is its own | the others (word: nearest, own rank) | "
            "similarity to own, median |", "|---|---|---|---|"]
    for key, s in data["summary"].items():
        kind, half = key.split("/")
        words = [w for w in data["words"] if w["kind"] == kind and w["half"] == half]
        misses = ", ".join(f"{w['word']}: {w['nearest']} ({w['rank']})" for w in words
                           if w["nearest"] != w["world_word"])
        med = float(np.median([w["similarity"] for w in words]))
        rows.append(f"| {kind}, {half} half | {s['nearest_is_own']} of {s['words']} | "
                    f"{misses or '-'} | {med:.2f} |")
    frames = ", ".join(f"{k} in \"{v}\"" for k, v in data["frames"].items())
    return "\n".join(rows) + f"\n\nFrames: {frames}; cosine of mean token states; {path}\n"


def reworded_compare_table(path: str) -> str:
    """Runs trained side by side: template and reworded accuracy, the reworded-minus-template
    gap on the same scenes and seeds, unknown-word prompts, and empty images."""
    data = _load(path)
    head = ["run", "checkpoint", "template suites", "reworded seen", "reworded unseen",
            "unseen minus template (p)", "unknown-word prompts", "empty: template",
            "empty: reworded", "empty: unknown-word"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in data["runs"].items():
        rw, gap = r["reworded"]["passed"], r["wording_gap"]["reworded_unseen"]
        cells = [name, Path(r["checkpoint"]).name, _rate(r["template"]["passed"]["overall"]),
                 _rate(rw["reworded_seen"]), _rate(rw["reworded_unseen"]),
                 f"{gap['gap_points']:+.1f} points ({format_p(gap['p'])})",
                 _rate(r["unknown"]["passed"]["overall"]),
                 *(_rate(r[k]["empty"]["overall"]) for k in ("template", "reworded", "unknown"))]
        rows.append("| " + " | ".join(cells) + " |")
    first = next(iter(data["runs"]))
    rows += ["", f"Paired against `{first}` (exact McNemar; images only `{first}` passes / only "
             f"the run passes, p; for empty images: only `{first}` / only the run empty, p):", "",
             "| run | template | reworded | unknown-word | empty: reworded | empty: unknown-word |",
             "|---|---|---|---|---|---|"]
    for name, r in list(data["runs"].items())[1:]:
        vs = r["vs_first"]
        cells = [f"{vs[k]['passed']['only_first']} / {vs[k]['passed']['only_this']}, "
                 f"p {format_p(vs[k]['passed']['p'])}" for k in ("template", "reworded", "unknown")]
        for k in ("reworded", "unknown"):
            e = vs[k]["empty"]
            cells.append(f"{e['only_first']} / {e['only_this']}, p {format_p(e['p'])}")
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    rows += ["", "Empty images per unknown-word slot:", "",
             "| run | " + " | ".join(c.replace("_", " ") for c in UNKNOWN_SLOTS) + " |",
             "|---|" + "---|" * len(UNKNOWN_SLOTS)]
    for name, r in data["runs"].items():
        rows.append(f"| {name} | " + " | ".join(_rate(r["unknown"]["empty"][c])
                                                 for c in UNKNOWN_SLOTS) + " |")
    return "\n".join(rows) + f"\n\n{data['split']} split; {_evaluated_on(data)}; {path}\n"


TABLES: dict[str, Callable[[], str]] = {
    "shapeeval_validation": lambda: ref.shapeeval_validation_table(
        ["benchmarks/results/evaluator/validation.json",
         "benchmarks/results/evaluator/validation_16_128.json"]),
    "fd_sanity": lambda: ref.fd_sanity_table("benchmarks/results/evaluator/fd_sanity.json"),
    "feature_net": lambda: ref.feature_net_table(
        "benchmarks/results/evaluator/feature_net_shipped.json"),
    "core_orders": lambda: ref.core_orders_table("benchmarks/results/core/orders.json"),
    "core_inversion": lambda: ref.core_inversion_table("benchmarks/results/core/orders.json"),
    "quant_toy": lambda: ref.quant_toy_table("benchmarks/results/quant/toy_layer.json"),
    "demo": demo_table,
    "shipped": shipped_table,
    "demo_machines": demo_machines_table,
    "accel_unet": lambda: bench_table("benchmarks/results/accel_unet/bench.json"),
    "accel_unet_test": lambda: bench_table("benchmarks/results/accel_unet_test/bench.json"),
    "tune_star": lambda: tune_table("benchmarks/results/tune/star-test.json"),
    "tune_compose": lambda: compose_table("benchmarks/results/tune/compose.json"),
    "tune_star_long": lambda: tune_table("benchmarks/results/tune/star-long-test.json"),
    "tune_pink_long": lambda: tune_table("benchmarks/results/tune/pink-long-test.json"),
    "tune_compose_long": lambda: compose_table("benchmarks/results/tune/compose-long.json"),
    "tune_star_long_b16": lambda: tune_table("benchmarks/results/tune/star-long-b16-test.json"),
    "tune_star_long_seeds": lambda: _stacked(tune_table,
        "benchmarks/results/tune/star-long-b16-seed1-test.json",
        "benchmarks/results/tune/star-long-b16-seed2-test.json"),
    "tune_star_long_mid_seeds": lambda: _stacked(tune_table,
        "benchmarks/results/tune/star-long-mid-seed0-test.json",
        "benchmarks/results/tune/star-long-mid-seed1-test.json",
        "benchmarks/results/tune/star-long-mid-seed2-test.json"),
    "tune_star_long_r2mid_seeds": lambda: _stacked(tune_table,
        "benchmarks/results/tune/star-long-r2mid-seed0-test.json",
        "benchmarks/results/tune/star-long-r2mid-seed1-test.json",
        "benchmarks/results/tune/star-long-r2mid-seed2-test.json"),
    "tune_star_long_r2mid_p025_seeds": lambda: _stacked(tune_table,
        "benchmarks/results/tune/star-long-r2mid-p025-seed0-test.json",
        "benchmarks/results/tune/star-long-r2mid-p025-seed1-test.json",
        "benchmarks/results/tune/star-long-r2mid-p025-seed2-test.json"),
    "tune_accel_star_long_r2mid_seed0": lambda: tune_accel_table(
        "benchmarks/results/tune/star-long-r2mid-seed0-accel-test.json"),
    "tune_accel_star_long_r2mid_quant": lambda: _stacked(tune_accel_table,
        "benchmarks/results/tune/star-long-r2mid-seed0-accelquant-test.json",
        "benchmarks/results/tune/star-long-r2mid-seed1-accelquant-test.json",
        "benchmarks/results/tune/star-long-r2mid-seed2-accelquant-test.json"),
    "tune_accel_star_long_mid_seed0": lambda: tune_accel_table(
        "benchmarks/results/tune/star-long-mid-seed0-accel-test.json"),
    "tune_accel_star_long_seed1": lambda: tune_accel_table(
        "benchmarks/results/tune/star-long-seed1-accel-test.json"),
    "tune_accel_star_long_dev": lambda: _stacked(tune_accel_table,
        "benchmarks/results/tune/star-long-accel-dev.json",
        "benchmarks/results/tune/star-long-accel-dev2.json"),
    "tune_accel_star_long_test": lambda: tune_accel_table(
        "benchmarks/results/tune/star-long-accel-test.json"),
    "tune_forgetting_star_long": lambda: tune_accel_table(
        "benchmarks/results/tune/star-long-forgetting-test.json"),
    "tune_paths_star_long": lambda: tune_paths_table(
        "benchmarks/results/tune/star-long-paths-test.json"),
    "tune_compose_long_b16": lambda: compose_table(
        "benchmarks/results/tune/compose-long-b16.json"),
    "tune_star_long_dev_steps": lambda: tune_dev_table(
        "benchmarks/results/tune/star-long-dev-steps.jsonl"),
    "tune_star_long_dev_prior": lambda: tune_dev_table(
        "benchmarks/results/tune/star-long-dev-prior.jsonl"),
    "tune_star_long_dev_priorset": lambda: tune_dev_table(
        "benchmarks/results/tune/star-long-dev-priorset.jsonl",
        drop="gradient|stratified|conv2-|mid-"),
    "tune_star_long_dev_starts": lambda: tune_seeds_table(
        "benchmarks/results/tune/star-long-dev-priorset.jsonl",
        keep="-b16($|-seed|-principal|-gradient|-stratified)", drop="^dora|-450-|r2mid|-cos-"),
    "tune_star_long_dev_ranks": lambda: tune_seeds_table(
        "benchmarks/results/tune/star-long-dev-priorset.jsonl", keep="r2mid|-cos-",
        drop="shift|large"),
    "tune_star_long_dev_shift": lambda: tune_seeds_table(
        "benchmarks/results/tune/star-long-dev-priorset.jsonl",
        keep=r"r2mid-r1up-1e-2-p0\.5-600-b16(-seed\d)?$|shift|large"),
    "tune_star_long_kv23_seeds": lambda: _stacked(tune_table,
        "benchmarks/results/tune/star-long-kv23-seed0-test.json",
        "benchmarks/results/tune/star-long-kv23-seed1-test.json",
        "benchmarks/results/tune/star-long-kv23-seed2-test.json"),
    "tune_accel_star_long_kv23_quant": lambda: _stacked(tune_accel_table,
        "benchmarks/results/tune/star-long-kv23-seed0-accelquant-test.json",
        "benchmarks/results/tune/star-long-kv23-seed1-accelquant-test.json",
        "benchmarks/results/tune/star-long-kv23-seed2-accelquant-test.json"),
    "tune_accel_star_long_kv23_front_dev": lambda: _stacked(tune_accel_table,
        "benchmarks/results/tune/star-long-kv23-seed0-cachefront-dev.json",
        "benchmarks/results/tune/star-long-kv23-seed1-cachefront-dev.json"),
    "tune_accel_star_long_kv23_front_test": lambda: _stacked(tune_accel_table,
        "benchmarks/results/tune/star-long-kv23-seed0-cachefront-test.json",
        "benchmarks/results/tune/star-long-kv23-seed1-cachefront-test.json",
        "benchmarks/results/tune/star-long-kv23-seed2-cachefront-test.json"),
    "tune_star_long_kv23_p1_seeds": lambda: _stacked(tune_table,
        "benchmarks/results/tune/star-long-kv23-p1-seed0-test.json",
        "benchmarks/results/tune/star-long-kv23-p1-seed1-test.json",
        "benchmarks/results/tune/star-long-kv23-p1-seed2-test.json"),
    "tune_accel_star_long_kv23_p1_depth_dev": lambda: _stacked(tune_accel_table,
        "benchmarks/results/tune/star-long-kv23-p1-seed0-cachedepth-dev.json",
        "benchmarks/results/tune/star-long-kv23-p1-seed1-cachedepth-dev.json"),
    "tune_accel_star_long_kv23_p1_quant": lambda: _stacked(tune_accel_table,
        "benchmarks/results/tune/star-long-kv23-p1-seed0-accelquant-test.json",
        "benchmarks/results/tune/star-long-kv23-p1-seed1-accelquant-test.json",
        "benchmarks/results/tune/star-long-kv23-p1-seed2-accelquant-test.json"),
    "tune_accel_star_long_kv23_p1_pooled": lambda: tune_accel_pooled_table(
        "benchmarks/results/tune/star-long-kv23-p1-seed0-accelquant-test.json",
        "benchmarks/results/tune/star-long-kv23-p1-seed1-accelquant-test.json",
        "benchmarks/results/tune/star-long-kv23-p1-seed2-accelquant-test.json"),
    "tune_accel_star_long_kv23_p1_front16_pooled": lambda: tune_accel_pooled_table(
        "benchmarks/results/tune/star-long-kv23-p1-seed0-cachefront16-test.json",
        "benchmarks/results/tune/star-long-kv23-p1-seed1-cachefront16-test.json",
        "benchmarks/results/tune/star-long-kv23-p1-seed2-cachefront16-test.json"),
    "tune_pink_long_kv23_p1": lambda: tune_table(
        "benchmarks/results/tune/pink-long-kv23-p1-seed0-test.json"),
    "tune_compose_long_kv23_p1": lambda: compose_table(
        "benchmarks/results/tune/compose-long-kv23-p1.json"),
    "tune_pink_long_kv23": lambda: tune_table(
        "benchmarks/results/tune/pink-long-kv23-seed0-test.json"),
    "tune_compose_long_kv23": lambda: compose_table(
        "benchmarks/results/tune/compose-long-kv23.json"),
    "tune_star_long_dev_kv23": lambda: tune_seeds_table(
        "benchmarks/results/tune/star-long-dev-kv23.jsonl",
        base_path="benchmarks/results/tune/star-long-dev-priorset.jsonl"),
    "serve_load": lambda: serve_load_table("benchmarks/results/serve/load.json"),
    "edit_inversion": lambda: edit_inversion_table("benchmarks/results/edit/inversion.json"),
    "edit_methods": lambda: edit_methods_table("benchmarks/results/edit/edits.json"),
    "edit_restore": lambda: edit_restore_table("benchmarks/results/edit/restore.json"),
    "interop": interop_table,
    "interop_agreement": interop_agreement_table,
    "align_methods": lambda: align_methods_table(
        "benchmarks/results/align/search-test.json",
        ["benchmarks/results/align/dpo-test.json", "benchmarks/results/align/draft-test.json",
         "benchmarks/results/align/policy-test.json"],
        "benchmarks/results/align/reno-test.json"),
    "align_long": lambda: align_tuned_table(
        ["benchmarks/results/align/long-dpo-test.json",
         "benchmarks/results/align/raft-test.json"]),
    "align_planned_long": lambda: align_tuned_table(
        ["benchmarks/results/align/planned-xs-long-test.json",
         "benchmarks/results/align/planned-grid-xs-long-test.json"]),
    "align_raft_dev": lambda: align_tuned_table(
        ["benchmarks/results/align/raft-dev/lr3e-4-s600.json",
         "benchmarks/results/align/raft-dev/sweep.json",
         "benchmarks/results/align/raft-dev/prior3.json",
         "benchmarks/results/align/raft-dev/raft-u1.json"]),
    "align_search": lambda: align_search_table("benchmarks/results/align/search-test.json"),
    "align_search_long": lambda: align_search_table(
        "benchmarks/results/align/search-long-test.json"),
    "align_draft_dev": lambda: align_draft_dev_table("benchmarks/results/align/draft-dev.json"),
    "align_rewardnet": lambda: align_rewardnet_table("benchmarks/results/align/rewardnet.json"),
    "autotune": lambda: autotune_table("benchmarks/results/autotune/psnr-budget/frontier.json"),
    "autotune_issue": lambda: autotune_table(
        "benchmarks/results/autotune/issue-budget/frontier.json"),
    "distill": lambda: distill_table("benchmarks/results/distill/eval.json"),
    "control_layout": lambda: control_table("benchmarks/results/control/layout-test.json"),
    "control_layout_long": lambda: control_table(
        "benchmarks/results/control/layout-long-test.json"),
    "control_empty_layout_long": lambda: control_table(
        "benchmarks/results/control/empty-layout-single-long-test.json"),
    "control_adapters_long": lambda: control_adapters_table(
        "benchmarks/results/control/adapters-long-test.json"),
    "control_empty_layout_adapters_long": lambda: control_adapters_table(
        "benchmarks/results/control/empty-layout-single-adapters-long-test.json"),
    "control_binding": lambda: control_table("benchmarks/results/control/binding-test.json"),
    "control_xs_long": lambda: control_adapters_table(
        "benchmarks/results/control/xs-long-test.json"),
    "control_empty_layout_xs_long": lambda: control_adapters_table(
        "benchmarks/results/control/empty-layout-single-xs-long-test.json"),
    "control_empty_layout_xs_long_4seeds": lambda: control_adapters_table(
        "benchmarks/results/control/empty-layout-single-xs-long-test-4seeds.json"),
    "control_binding_planned_long_dev": lambda: _stacked(control_table,
        "benchmarks/results/control/binding-planned-long-dev.json",
        "benchmarks/results/control/binding-planned-long-dev-box.json",
        "benchmarks/results/control/binding-planned-long-dev-box2.json"),
    "control_binding_planned_long_test": lambda: control_adapters_table(
        "benchmarks/results/control/binding-planned-long-test.json"),
    "control_spatial_planned_long_test": lambda: control_adapters_table(
        "benchmarks/results/control/spatial-planned-long-test.json"),
    "control_counting_planned_long_test": lambda: control_adapters_table(
        "benchmarks/results/control/counting-planned-long-test.json"),
    "control_adapters": lambda: control_adapters_table(
        "benchmarks/results/control/adapters-test.json"),
    "control_gligen_positions_dev": lambda: control_adapters_table(
        "benchmarks/results/control/gligen-pos-dev.json"),
    "control_gligen_attention": lambda: control_gligen_attention_table(
        "benchmarks/results/control/gligen-attention.json"),
    "control_empty_layout": lambda: control_table(
        "benchmarks/results/control/empty-layout-single-test.json"),
    "control_binding_long_dev": lambda: control_table(
        "benchmarks/results/control/binding-long-dev.json"),
    "control_binding_long_test": lambda: control_table(
        "benchmarks/results/control/binding-long-test.json"),
    "quant_test": lambda: quant_test_table("benchmarks/results/quant-test/bench.json"),
    "quant": lambda: quant_table("benchmarks/results/quant/bench.json",
                                 "benchmarks/results/quant_euler/bench.json"),
    "accel_dit": lambda: bench_table("benchmarks/results/accel_dit/bench.json", DIT_LABELS),
    "samplers": lambda: sampler_table("benchmarks/results/samplers/bench.json"),
    "samplers_test": lambda: sampler_table("benchmarks/results/samplers-test/bench.json"),
    "train_loop": lambda: train_loop_table("benchmarks/results/precision/train_loop.json"),
    "presets": presets_table,
    "evaluator_audit": lambda: evaluator_audit_table(
        "benchmarks/results/evaluator_audit/generated.json"),
    "reworded_synonymy": lambda: reworded_synonymy_table(
        "benchmarks/results/reworded/synonymy.json"),
    "reworded_diagnosis": lambda: reworded_diagnosis_table(
        "benchmarks/results/reworded/diagnosis.json"),
    "reworded_compare": lambda: reworded_compare_table("benchmarks/results/reworded/compare.json"),
    "reworded_compare_600": lambda: reworded_compare_table(
        "benchmarks/results/reworded/compare-step600.json"),
    "reworded_compare_400": lambda: reworded_compare_table(
        "benchmarks/results/reworded/compare-step400.json"),
}
PAGES: tuple[str, ...] = ("docs/core.md", "docs/training.md", "docs/acceleration.md",
                          "docs/machine.md", "docs/tune.md", "docs/serving.md", "docs/editing.md",
                          "docs/diffusers.md", "docs/alignment.md", "docs/autotune.md",
                          "docs/distillation.md", "docs/control.md", "docs/quantization.md",
                          "docs/measuring.md", "docs/models.md",
                          "docs/data.md", "docs/runtime.md",
                          "benchmarks/results/evaluator_audit/README.md")


def regenerate(text: str) -> str:
    """`text` with every marked table rebuilt from its result file."""
    def fill(m: re.Match) -> str:
        name = m.group("name")
        if name not in TABLES:
            raise ConfigError(f"unknown table {name!r}; valid: {', '.join(TABLES)}")
        return f"<!-- table:{name} -->\n{TABLES[name]()}<!-- /table:{name} -->"
    return MARKER.sub(fill, text)


def stale_pages(root: Path = ROOT) -> list[str]:
    """The pages whose committed tables differ from their result files."""
    return [page for page in PAGES
            if regenerate((root / page).read_text()) != (root / page).read_text()]
