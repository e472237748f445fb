"""Docs tables generated from result files: each table lives between `<!-- table:NAME -->` and
`<!-- /table:NAME -->` in a Markdown page and is rebuilt from benchmarks/results/**.json."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from difflab.config import ConfigError
from difflab.eval.stats import (
    format_accuracy,
    format_p,
    format_speedup,
    mcnemar_exact,
    speedup_interval,
)

ROOT = Path(__file__).resolve().parents[3]  # the repository (src/difflab/eval -> root)
MARKER = re.compile(r"<!-- table:(?P<name>[\w-]+) -->\n(?P<body>.*?)<!-- /table:(?P=name) -->",
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


# (label, file): one row per kind of CPU the demo was measured on
DEMO_MACHINES = (
    ("AMD EPYC, AVX-512 BF16 (recorded before machine records)",
     "benchmarks/results/demo/metrics.json"),
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


def tune_table(path: str) -> str:
    """Tuning methods side by side: cost, new-concept accuracy, base-suite change, FD, size."""
    data = _load(path)
    res, costs, params = data["results"], data["costs"], data["base_parameters"]
    base = res["base"]
    head = ("| method | trainable (share) | tune time | new concept | base suite (change, "
            "McNemar p) | FD base suite | adapter on disk |\n|---|---|---|---|---|---|---|")
    rows = [head]
    for name, r in res.items():
        c, b = r["concept"], r["base"]
        acc = format_accuracy(sum(c["passed"]), c["n"])
        kept = format_accuracy(sum(b["passed"]), b["n"])
        if name == "base":
            rows.append(f"| base (shapes-base) | - | - | {acc} | {kept} | {b['fd']:.1f} | - |")
            continue
        k = costs[name]
        p = format_p(mcnemar_exact(base["base"]["passed"], b["passed"]).p_value)
        rows.append(f"| {name} | {k['trainable']:,} ({100 * k['trainable'] / params:.2f}%) | "
                    f"{k['tune_seconds'] / 60:.1f} min | {acc} | {kept} "
                    f"({100 * b['change']:+.1f}, p {p}) | {b['fd']:.1f} | "
                    f"{k['adapter_bytes'] / 1024:,.0f} KiB |")
    m = data["machine"]
    n_img = len(data["training_images"])
    note = (f"\nConcept {data['concept']!r}: {n_img} training images; split: {data['split']}; "
            f"new concept = {data['sets']['concept']['images']} images of its "
            f"{data['sets']['concept']['suite']} prompts; base suite = "
            f"{data['sets']['base']['images']} images of suite {data['sets']['base']['suite']!r}"
            f"; extended evaluator; timed on {m.get('cpu', '?')} ({m.get('capability', '?')}), "
            f"{m.get('threads')} threads")
    loads = [k["load_average_1min"] for k in costs.values() if "load_average_1min" in k]
    if loads:  # other jobs on the machine while timing
        note += f", 1-minute load average {min(loads):.1f}-{max(loads):.1f} on 2 cores"
    return "\n".join(rows) + "\n" + note + ".\n"


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
    return "\n".join(rows) + f"\n\nSplit: {data['split']}; extended evaluator.\n"


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


TABLES: dict[str, Callable[[], str]] = {
    "demo": demo_table,
    "demo_machines": demo_machines_table,
    "accel_unet": lambda: bench_table("benchmarks/results/accel_unet/bench.json"),
    "tune_star": lambda: tune_table("benchmarks/results/tune/star-test.json"),
    "tune_compose": lambda: compose_table("benchmarks/results/tune/compose.json"),
    "serve_load": lambda: serve_load_table("benchmarks/results/serve/load.json"),
    "edit_inversion": lambda: edit_inversion_table("benchmarks/results/edit/inversion.json"),
    "edit_methods": lambda: edit_methods_table("benchmarks/results/edit/edits.json"),
    "edit_restore": lambda: edit_restore_table("benchmarks/results/edit/restore.json"),
    "interop": interop_table,
    "interop_agreement": interop_agreement_table,
}
PAGES: tuple[str, ...] = ("docs/training.md", "docs/acceleration.md", "docs/machine.md",
                          "docs/tune.md", "docs/serving.md", "docs/editing.md",
                          "docs/diffusers.md")


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
