"""Bench reports: bench.json, a Markdown table, a quality-versus-cost plot with the Pareto
frontier, and an HTML page with one strip of images per configuration."""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from difflab.io import atomic_write, write_json

if TYPE_CHECKING:
    from difflab.eval.bench import BenchResult

# (column title, cost key, scale, format) for the Markdown table.
COST_COLUMNS = (
    ("NFE", "nfe", 1, "{:.0f}"),
    ("GFLOP/img", "flops_per_image", 1e-9, "{:.3g}"),
    ("time ratio", "time_ratio", 1, "{:.3f}"),
    ("speed-up", "speedup", 1, "{:.2f}x"),
    ("img/s", "images_per_s", 1, "{:.3g}"),
    ("peak MB", "peak_memory_bytes", 1e-6, "{:.1f}"),
    ("weights MB", "weight_bytes", 1e-6, "{:.2f}"),
)


def _fmt(value: Any, spec: str = "{:.4g}") -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return spec.format(value)


def quality_keys(result: BenchResult) -> list[str]:
    """Quality columns in the order the metrics were asked for."""
    keys: list[str] = []
    for p in result.points:
        keys += [k for k in p["quality"] if k not in keys]
    return keys


def markdown_table(result: BenchResult) -> str:
    """One row per point: settings, cost columns, quality columns; * marks the frontier."""
    qkeys = quality_keys(result)
    head = ["point", "sampler", "steps", "cfg"] + [c[0] for c in COST_COLUMNS] + qkeys
    arrows = {k: "↑" if result.directions.get(k, True) else "↓" for k in qkeys}
    head = head[: 4 + len(COST_COLUMNS)] + [f"{k} {arrows[k]}" for k in qkeys]
    baseline = result.grid["baseline"]
    base_flags = result.point(baseline).get("passed")
    if base_flags is not None:
        head += ["accuracy 95% CI", "McNemar p vs baseline"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for p in result.points:
        cfg, cost = p["config"], p["cost"]
        name = p["name"] + (" (baseline)" if p["name"] == baseline else "")
        name += " *" if p.get("on_frontier") else ""
        cells = [name, str(cfg.get("sampler", "-")), str(cfg.get("steps", "-")),
                 str(cfg.get("cfg_scale", "-"))]
        cells += [_cost_cell(cost, k, scale, f) for _, k, scale, f in COST_COLUMNS]
        cells += [_fmt(p["quality"].get(k)) for k in qkeys]
        if base_flags is not None:
            cells += _paired_cells(p, base_flags, p["name"] == baseline)
        rows.append("| " + " | ".join(cells) + " |")
    front, m = result.grid.get("frontier", {}), result.machine
    split = result.grid.get("split", "dev")
    floor = "" if result.fd_floor is None else (
        f" FD's real-vs-real floor at this sample count: {result.fd_floor:.4g}.")
    note = (f"\n`*`: on the Pareto frontier of {front.get('quality')} vs {front.get('cost')}. "
            "Time ratio and speed-up are relative to the baseline, timed round-robin in the same "
            f"process ({m['cpu']}, {m['capability']}, {m['threads']} threads, "
            f"torch {m['torch']}); speed-up is the median of the per-round paired ratios with "
            "its interval, \"no difference\" when that interval contains 1. Split: "
            f"{split}.{floor}\n")
    return "\n".join(rows) + "\n" + note


def _cost_cell(cost: Mapping[str, Any], key: str, scale: float, spec: str) -> str:
    if key == "speedup" and cost.get("speedup_interval") is not None:
        from difflab.eval.stats import MedianInterval, format_speedup

        lo, hi = cost["speedup_interval"]
        median = cost.get("speedup_paired_median", cost["speedup"])
        return format_speedup(MedianInterval(median, lo, hi, 0.0))
    return _fmt(None if cost.get(key) is None else cost[key] * scale, spec)


def _paired_cells(point: Mapping[str, Any], base_flags: list[int], is_base: bool) -> list[str]:
    """The accuracy's Wilson interval and the exact McNemar p-value against the baseline."""
    from difflab.eval.stats import format_p, mcnemar_exact

    lo, hi = point["accuracy_interval"]
    ci = f"[{100 * lo:.1f}, {100 * hi:.1f}]"
    if is_base:
        return [ci, "-"]
    return [ci, format_p(mcnemar_exact(point["passed"], base_flags).p_value)]


def plot_frontier(result: BenchResult, path: Path) -> Path:
    """Quality (y) against cost (x), every point labelled, the frontier drawn as a step line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    front = result.grid["frontier"]
    qk, ck = front["quality"], front["cost"]
    shown = [p for p in result.points if p["cost"].get(ck) is not None]  # untimed: no x
    xs = np.array([p["cost"][ck] for p in shown], dtype=float)
    ys = np.array([p["quality"][qk] for p in shown], dtype=float)
    on = np.array([p["on_frontier"] for p in shown], dtype=bool)
    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=120)
    ax.scatter(xs[~on], ys[~on], c="tab:gray", label="dominated")
    ax.scatter(xs[on], ys[on], c="tab:red", label="Pareto frontier")
    order = np.argsort(xs[on])
    ax.plot(xs[on][order], ys[on][order], c="tab:red", drawstyle="steps-post", lw=1)
    for p, x, y in zip(shown, xs, ys, strict=True):
        ax.annotate(p["name"], (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    arrow = "higher is better" if result.directions.get(qk, True) else "lower is better"
    ax.set_xlabel(f"{ck} (lower is better)")
    ax.set_ylabel(f"{qk} ({arrow})")
    ax.set_title(f"quality vs cost, baseline {result.grid['baseline']}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png"))
    plt.close(fig)
    return path


def _png_data_uri(image: np.ndarray, scale: int) -> str:
    from PIL import Image

    big = Image.fromarray(image).resize((image.shape[1] * scale, image.shape[0] * scale),
                                        Image.NEAREST)
    buf = io.BytesIO()
    big.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def html_page(result: BenchResult, strips: Mapping[str, np.ndarray], prompts: list[str]) -> str:
    """A page with the table and one strip per configuration (same prompts and seeds)."""
    scale = max(1, 96 // max(1, next(iter(strips.values())).shape[1]))
    rows = []
    for name, images in strips.items():
        cells = "".join(f'<img src="{_png_data_uri(im, scale)}" title="{html.escape(t)}">'
                        for im, t in zip(images, prompts, strict=True))
        rows.append(f"<tr><th>{html.escape(name)}</th><td>{cells}</td></tr>")
    captions = "".join(f"<li>{html.escape(t)}</li>" for t in prompts)
    table = html.escape(markdown_table(result))
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>difflab bench</title>"
        "<style>body{font-family:sans-serif} img{image-rendering:pixelated;margin:1px}"
        "th{text-align:right;padding-right:8px}</style></head><body>"
        "<h1>difflab bench</h1><img src='frontier.png' alt='quality vs cost'>"
        f"<h2>images (left to right)</h2><ol>{captions}</ol><table>{''.join(rows)}</table>"
        f"<h2>numbers</h2><pre>{table}</pre></body></html>"
    )


def write_report(
    result: BenchResult, out_dir: Path, images: Mapping[str, np.ndarray],
    reference: np.ndarray | None, real: np.ndarray, strip_images: int = 8,
) -> dict[str, str]:
    """Write bench.json, table.md, frontier.png and index.html into `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    result.files = {
        "json": str(out_dir / "bench.json"), "table": str(out_dir / "table.md"),
        "plot": str(out_dir / "frontier.png"), "html": str(out_dir / "index.html"),
    }
    write_json(result.files["json"], _finite(result.to_dict()))
    table = markdown_table(result)
    atomic_write(result.files["table"], lambda p: p.write_text(table))
    plot_frontier(result, Path(result.files["plot"]))
    k = strip_images
    strips = {"real renders": real[:k]}
    if reference is not None and result.reference is not None:
        strips[f"reference: {result.reference['name']}"] = reference[:k]
    strips.update({name: ims[:k] for name, ims in images.items()})
    pairs = zip(result.prompts[:k], result.seeds[:k], strict=True)
    prompts = [f"{p} (seed {s})" for p, s in pairs]
    page = html_page(result, strips, prompts)
    atomic_write(result.files["html"], lambda p: p.write_text(page))
    return result.files


def _finite(obj: Any) -> Any:
    """JSON has no inf/nan: write them as strings so the file stays standard JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj
