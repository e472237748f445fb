"""Markdown table of control result files (what docs/control.md pastes; never typed by hand).

    python benchmarks/control_table.py benchmarks/results/control/layout-test.json ...
"""

from __future__ import annotations

import json
import sys

from difflab.eval.stats import format_p


def table(path: str) -> str:
    data = json.loads(open(path, encoding="utf-8").read())
    layout = data["suite"] == "layout"
    head = "| method | accuracy (95% CI) | relation |"
    head += " box IoU | mask IoU | objects IoU >= 0.5 |" if layout else ""
    head += " s/image | extra s/image | vs first (only first / only this, p) |"
    rows = [f"{data['suite']} suite, {data['provenance']['split']} split, "
            f"{data['n_images']} images ({path})", "", head,
            "|" + "---|" * (head.count("|") - 1)]
    for name, r in data["methods"].items():
        lo, hi = r["interval"]
        rel = "-" if r["relation"] is None else f"{r['relation']:.1%}"
        row = f"| {name} | {r['accuracy']:.1%} ({lo:.1%}-{hi:.1%}) | {rel} |"
        if layout:
            row += (f" {r['box_iou']:.3f} | {r['mask_iou']:.3f} |"
                    f" {r['objects_box_iou_ge_0.5']:.1%} |")
        vs = r.get("vs_first")
        cmp = f"{vs['only_first']} / {vs['only_this']}, p {format_p(vs['p'])}" if vs else "-"
        row += f" {r['seconds_per_image']:.2f} | {r['extra_seconds_per_image']:+.2f} | {cmp} |"
        rows.append(row)
    return "\n".join(rows)


if __name__ == "__main__":
    print("\n\n".join(table(p) for p in sys.argv[1:]))
