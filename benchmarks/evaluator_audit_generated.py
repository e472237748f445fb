"""The shapes evaluator on generated images labelled by eye: lenient (old) against strict (new).

    # 1. generate the audit images and blinded contact sheets (no verdicts are shown)
    python benchmarks/evaluator_audit_generated.py generate --out runs/audit
    # 2. look at runs/audit/sheet_*.png, write one line per tile to runs/audit/labels.txt
    #    ("TAG pass", "TAG fail wrong_count,garbage", "TAG unsure"), then merge them
    python benchmarks/evaluator_audit_generated.py label --sheets runs/audit \
        --labels runs/audit/labels.txt
    # 3. regenerate every image from labels.json (pixel hashes checked) and score it
    python benchmarks/evaluator_audit_generated.py score

Models (each a folder or shipped name; its model.safetensors sha256 is recorded and checked):
`shapes-base` (the demo recipe, 1000 fp32 steps), `demo-250` (the same recipe cut to 250
steps) and `shapes-base-w4a4` (shapes-base under the `w4a4` recipe, simulated).
`score` writes benchmarks/results/evaluator_audit/generated.json: precision and recall of the
evaluator's passes against the labels, overall, per model and per suite, old and new, each with
its Wilson interval, and McNemar's test of old against new on per-image agreement.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from difflab.config import ConfigError
from difflab.data.suites import check_split, load_suite, suite_seeds
from difflab.eval.label_audit import (
    LABELS,
    LABELS_VERSION,
    REASONS,
    audit_generated,
    error_breakdown,
    failed_checks,
    pixels_sha256,
    read_labels,
)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks/results/evaluator_audit"
# name -> (what load() takes, the command that makes it, what it is)
MODELS: dict[str, tuple[str, str, str]] = {
    "shapes-base": ("shapes-base", "shipped (src/difflab/assets/models/shapes-base)",
                    "the demo recipe trained 1000 fp32 steps"),
    "demo-250": ("runs/demo-250",
                 "difflab train configs/demo.toml -o schedule.steps=250 "
                 "-o run.out_dir=runs/demo-250",
                 "the demo recipe cut to 250 steps (bf16 autocast, AVX-512 CPU)"),
    "shapes-base-w4a4": ("runs/shapes-base-w4a4",
                         "difflab quantize shapes-base --out runs/shapes-base-w4a4 "
                         "--recipe w4a4",
                         "shapes-base with int4 weights and int4 per-token activations "
                         "(simulated)"),
}
# Images per prompt of each suite (dev split, image k = 0 first), and how many prompts.
PLAN: dict[str, tuple[int, int]] = {"single": (42, 1), "counting": (32, 1), "spatial": (20, 1),
                                    "binding": (20, 1)}
# The demo's evaluation sampler, in fp32 so that images regenerate bit for bit on any CPU
# that computes fp32 the same way (bf16 autocast depends on the CPU's instruction set).
SAMPLE = {"sampler": "euler_ancestral", "steps": 20, "cfg": 3.0, "precision": "fp32"}
# One intra-op thread and batches of BATCH in file order: the quantized model's int4 rounding
# turns the last-bit differences of other thread counts or batch shapes into other pixels.
THREADS, BATCH = 1, 32
COLUMNS, ROWS, ZOOM = 6, 4, 7


def checkpoint_of(source: str) -> tuple[str, str]:
    """(folder, sha256 of its model.safetensors) of what `load(source)` reads."""
    from difflab.runtime.artefacts import resolve, sha256_file

    folder = resolve(source)
    if (folder / "latest").is_file():  # a run folder: its latest checkpoint
        folder = folder / (folder / "latest").read_text().strip()
    return str(folder), sha256_file(folder / "model.safetensors")


def plan_images(split: str = "dev") -> list[dict[str, Any]]:
    """One row per image to generate per model: prompt, suite, indices and seed."""
    check_split(split)
    rows = []
    for suite, (n_prompts, per_prompt) in PLAN.items():
        specs = load_suite(suite)[:n_prompts]
        for k in range(per_prompt):
            for i, spec in enumerate(specs):
                rows.append({"prompt": spec.text, "suite": suite, "prompt_index": i,
                             "image_index": k, "seed": suite_seeds(spec, 1, k, split)[0]})
    return rows


def generate_rows(rows: list[dict[str, Any]], models: dict[str, dict[str, Any]]) -> np.ndarray:
    """The images (N, H, W, 3) uint8 of image rows, each model loaded once and its weights'
    hash checked against the recorded one."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        return _generate_rows(rows, models)
    finally:
        torch.set_num_threads(threads)


def _generate_rows(rows: list[dict[str, Any]], models: dict[str, dict[str, Any]]) -> np.ndarray:
    from difflab.runtime import load, sample_config

    out: list[np.ndarray | None] = [None] * len(rows)
    for name in dict.fromkeys(r["model"] for r in rows):
        folder, sha = checkpoint_of(models[name]["source"])
        if sha != models[name]["checkpoint_sha256"]:
            raise ConfigError(f"{folder}/model.safetensors has sha256 {sha[:12]}..., the labels "
                              f"were made with {models[name]['checkpoint_sha256'][:12]}...; "
                              f"remake it with: {models[name]['make']}")
        pipe = load(folder)
        mine = [i for i, r in enumerate(rows) if r["model"] == name]
        for sample in {json.dumps(rows[i]["sample"], sort_keys=True) for i in mine}:
            idx = [i for i in mine if json.dumps(rows[i]["sample"], sort_keys=True) == sample]
            images = pipe.generate([rows[i]["prompt"] for i in idx],
                                   [rows[i]["seed"] for i in idx],
                                   sample_config({**json.loads(sample), "batch_size": BATCH}))
            for i, img in zip(idx, images, strict=True):
                out[i] = img
    return np.stack(out)


def contact_sheet(images: np.ndarray, tags: list[int], prompts: list[str]) -> Any:
    """A PIL image: images upscaled ZOOM x (nearest neighbour), each with its tag and prompt."""
    import textwrap

    from PIL import Image, ImageDraw, ImageFont

    side = images.shape[1] * ZOOM
    cell_w, cell_h = side + 16, side + 60
    sheet = Image.new("RGB", (COLUMNS * cell_w, ROWS * cell_h), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=15)
    for j, (img, tag, prompt) in enumerate(zip(images, tags, prompts, strict=True)):
        x, y = (j % COLUMNS) * cell_w + 8, (j // COLUMNS) * cell_h + 4
        sheet.paste(Image.fromarray(img).resize((side, side), Image.NEAREST), (x, y))
        caption = "\n".join(textwrap.wrap(f"{tag}: {prompt}", 26))
        draw.multiline_text((x, y + side + 2), caption, fill=(0, 0, 0), font=font, spacing=1)
    return sheet


def cmd_generate(args: argparse.Namespace) -> None:
    """Generate every model's images, write items.json (rows without labels), images.npz and
    blinded contact sheets in shuffled order (tags, not models, on the tiles)."""
    from difflab.io import atomic_write, write_json

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    models = {}
    for name, (source, make, what) in MODELS.items():
        folder, sha = checkpoint_of(source)
        models[name] = {"source": source, "checkpoint": folder, "checkpoint_sha256": sha,
                        "make": make, "description": what}
    rows = [{"id": 0, "model": name, "checkpoint_sha256": m["checkpoint_sha256"],
             **r, "sample": dict(SAMPLE)} for name, m in models.items() for r in plan_images()]
    for i, r in enumerate(rows):
        r["id"] = i
    images = generate_rows(rows, models)
    for r, img in zip(rows, images, strict=True):
        r["pixels_sha256"] = pixels_sha256(img)
    order = np.random.default_rng(args.seed).permutation(len(rows))  # tag t shows row order[t]
    for t, i in enumerate(order):
        rows[i]["tag"] = t
    write_json(out / "items.json", {"models": models, "images": rows, "seed": args.seed})
    atomic_write(out / "images.npz", lambda p: np.savez(p.open("wb"), images=images))
    write_sheets(out, rows, images, order)


def write_sheets(out: Path, rows: list[dict[str, Any]], images: np.ndarray,
                 order: np.ndarray) -> None:
    """Contact sheets of COLUMNS x ROWS tiles in `order`, tile t of them tagged t."""
    from difflab.io import atomic_write

    per = COLUMNS * ROWS
    for s in range(0, len(order), per):
        idx = order[s:s + per]
        sheet = contact_sheet(images[idx], list(range(s, s + len(idx))),
                              [rows[i]["prompt"] for i in idx])
        atomic_write(out / f"sheet_{s // per:02d}.png", lambda p, im=sheet: im.save(p, "PNG"))
    models = len({r["model"] for r in rows})
    print(f"{len(rows)} images of {models} models; {-(-len(rows) // per)} sheets in {out}")


def parse_label_lines(text: str) -> dict[int, tuple[str, list[str], str]]:
    """'TAG LABEL [REASON,REASON] [# note]' lines -> {tag: (label, reasons, note)}; lines
    that start with '#' are comments."""
    out: dict[int, tuple[str, list[str], str]] = {}
    for n, line in enumerate(text.splitlines(), 1):
        body, _, note = line.partition("#")
        parts = body.split()
        if not parts:
            continue
        if len(parts) not in (2, 3) or not parts[0].isdigit() or parts[1] not in LABELS:
            raise ConfigError(f"labels line {n}: {line!r}; want 'TAG {'|'.join(LABELS)} "
                              f"[{','.join(REASONS)}]'")
        reasons = parts[2].split(",") if len(parts) == 3 else []
        out[int(parts[0])] = (parts[1], reasons, note.strip())
    return out


def label_rules(text: str) -> str:
    """The comment block at the top of a labels text file: the rules the labels follow."""
    lines = []
    for line in text.splitlines():
        if not line.startswith("#") or line.startswith("# sheet"):
            break
        lines.append(line.lstrip("# "))
    return " ".join(lines)


def cmd_label(args: argparse.Namespace) -> None:
    """Merge labels typed per tag into the items and write the versioned labels file."""
    from difflab.io import write_json

    items = json.loads((Path(args.sheets) / "items.json").read_text())
    text = Path(args.labels).read_text()
    labels = parse_label_lines(text)
    missing = sorted({r["tag"] for r in items["images"]} - set(labels))
    if missing:
        raise ConfigError(f"{len(missing)} images have no label, e.g. tags {missing[:10]}")
    rows = []
    for r in items["images"]:
        label, reasons, note = labels[r["tag"]]
        rows.append({**{k: v for k, v in r.items() if k != "tag"}, "label": label,
                     "reasons": reasons, **({"note": note} if note else {})})
    data = {
        "version": LABELS_VERSION,
        "what": "generated images labelled by eye: does the image satisfy its prompt?",
        "how": "tiles upscaled 7x (nearest neighbour) on contact sheets of 24 in shuffled "
               f"order (numpy default_rng({items['seed']}).permutation), the prompt under each "
               "and no model or verdict shown; labels written before any scoring",
        "rules": label_rules(text),
        "labels": {"pass": "every object present with the asked shape, colour, count and "
                           "relation, nothing else drawn",
                   "fail": "one or more reasons", "unsure": "cannot tell at 32 px; left out "
                                                            "of precision and recall"},
        "reasons": list(REASONS), "split": "dev", "image_size": 32,
        "generation": {"threads": THREADS, "batch_size": BATCH,
                       "batches": "each model's images in file order"},
        "models": items["models"], "images": rows,
    }
    write_json(args.out, data)
    counts = {lab: sum(r["label"] == lab for r in rows) for lab in LABELS}
    print(f"wrote {args.out}: {len(rows)} images, {counts}")
    read_labels(args.out)  # the file it wrote reads back


def cmd_score(args: argparse.Namespace) -> None:
    """Regenerate the labelled images, check their pixels, score old and new, write results."""
    import time

    from difflab.eval.provenance import provenance
    from difflab.eval.shapeeval import STRICT_SHAPE_IOU, inspect, score
    from difflab.io import write_json

    data = read_labels(args.labels)
    rows = data["images"]
    start = time.perf_counter()
    images = generate_rows(rows, data["models"])
    changed = [r["id"] for r, img in zip(rows, images, strict=True)
               if pixels_sha256(img) != r["pixels_sha256"]]
    if changed:
        raise ConfigError(f"{len(changed)} of {len(rows)} images differ from the labelled ones "
                          f"(pixel sha256), e.g. ids {changed[:10]}; the labels do not apply")
    specs = {(s.text, name): s for name in PLAN for s in load_suite(name)}
    scored = {mode: [score(img, specs[r["prompt"], r["suite"]], strict=mode == "new")
                     for r, img in zip(rows, images, strict=True)] for mode in ("old", "new")}
    verdicts = {mode: [v.passed for v in vs] for mode, vs in scored.items()}
    checks = {mode: [failed_checks(v) for v in vs] for mode, vs in scored.items()}
    result = audit_generated(rows, verdicts["old"], verdicts["new"])
    result["order"] = {"models": list(data["models"]), "suites": list(PLAN)}
    result["errors"] = {mode: error_breakdown(rows, verdicts[mode], checks[mode])
                        for mode in ("old", "new")}
    seen = [inspect(img) for img in images]  # what the strict quality flag looks at
    result["per_image"] = [{"id": r["id"], "label": r["label"], "old": verdicts["old"][i],
                            "new": verdicts["new"][i], "failed_old": checks["old"][i],
                            "failed_new": checks["new"][i],
                            "off_palette": seen[i].off_palette, "debris": seen[i].debris,
                            "shape_iou": [round(d.shape_iou, 3) for d in seen[i].detections]}
                           for i, r in enumerate(rows)]
    result["quality_thresholds"] = {"mass_px": seen[0].min_area,
                                    "shape_iou": STRICT_SHAPE_IOU}
    result["models"] = data["models"]
    result["labels_file"] = str(Path(args.labels).resolve().relative_to(ROOT))
    result["regenerated"] = {"images": len(rows), "pixels_identical": True,
                             "seconds": round(time.perf_counter() - start, 1)}
    result["provenance"] = provenance(
        data["split"], checkpoint=", ".join(m["checkpoint"] for m in data["models"].values()),
        checkpoint_sha256=", ".join(m["checkpoint_sha256"] for m in data["models"].values()),
        config={"sample": SAMPLE, "plan": PLAN, "image_size": data["image_size"]},
        command="python benchmarks/evaluator_audit_generated.py " + " ".join(sys.argv[1:]))
    write_json(args.out, result)
    from difflab.eval.tables import evaluator_audit_table

    print(evaluator_audit_table(str(Path(args.out).resolve().relative_to(ROOT))))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="images and blinded contact sheets")
    g.add_argument("--out", default="runs/audit")
    g.add_argument("--seed", type=int, default=0, help="seed of the sheets' shuffled order")
    lab = sub.add_parser("label", help="merge typed labels into the labels file")
    lab.add_argument("--sheets", default="runs/audit")
    lab.add_argument("--labels", default="runs/audit/labels.txt")
    lab.add_argument("--out", default=str(RESULTS / "labels.json"))
    s = sub.add_parser("score", help="regenerate, score old and new, write generated.json")
    s.add_argument("--labels", default=str(RESULTS / "labels.json"))
    s.add_argument("--out", default=str(RESULTS / "generated.json"))
    args = p.parse_args()
    try:
        {"generate": cmd_generate, "label": cmd_label, "score": cmd_score}[args.command](args)
    except ConfigError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
