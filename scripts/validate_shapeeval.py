"""Validate the shapes evaluator and the FD feature space on ground-truth renders.

    .venv/bin/python scripts/validate_shapeeval.py --sizes 32 64 --n-seeds 4 --fd-n 1000
    .venv/bin/python scripts/validate_shapeeval.py --sizes 32 --n-seeds 0 --audit-seeds 2 \
        --audit-out benchmarks/results/evaluator_audit

Columns: clean / noise / blur = fraction of renders whose own prompt passes (noise and blur
as given); reject = fraction of renders that fail a prompt their true scene does not satisfy;
truth = fraction of true scenes that pass their own prompt under the evaluator's rules.
The FD table compares --fd-n renders of random suite prompts with --fd-n other renders
(different seeds), clean or degraded, in the shipped feature net's space.
The audit (--audit-seeds) scores true renders and hard negatives (difflab.eval.hard_negatives)
with the lenient evaluator (strict=False) and the strict one, and with --audit-out writes
audit.json and README.md (its table and the command that made it) there.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from difflab.data.shapes import load_suite, render_spec
from difflab.eval.features import (
    add_gaussian_noise,
    blockiness,
    color_shift,
    extract_features,
    frechet_distance,
    gaussian_blur,
)
from difflab.eval.shapeeval import validate

COLUMNS = ("clean", "noise", "blur", "reject", "truth", "n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[32, 64])
    p.add_argument("--n-seeds", type=int, default=4, help="0: skip the accuracy table")
    p.add_argument("--suite", default="all")
    p.add_argument("--noise", type=float, default=8 / 255, help="noise std in [0, 1] units")
    p.add_argument("--blur", type=float, default=0.5, help="Gaussian blur std in pixels")
    p.add_argument("--fd-n", type=int, default=0, help="images per set for the FD table")
    p.add_argument("--audit-seeds", type=int, default=0,
                   help="seeds per prompt of the hard-negative audit (0: skip it)")
    p.add_argument("--audit-out", default="", help="folder for audit.json and README.md")
    p.add_argument("--out", default="", help="result file for the accuracy and FD tables "
                   "(docs/data.md renders them through difflab.eval.tables)")
    args = p.parse_args()
    record: dict = {"suite": args.suite, "noise": args.noise, "blur": args.blur,
                    "n_seeds": args.n_seeds, "fd_n": args.fd_n, "accuracy": {}, "fd": {}}
    for size in args.sizes:
        if args.n_seeds:
            record["accuracy"][str(size)] = accuracy_table(size, args)
        if args.fd_n:
            record["fd"][str(size)] = fd_table(size, args.fd_n)
        if args.audit_seeds:
            audit_table(size, args)
    if args.out:
        from difflab.eval.provenance import provenance
        from difflab.io import write_json

        record["provenance"] = provenance("ground-truth renders (no model)",
                                          config={k: v for k, v in vars(args).items()})
        write_json(args.out, record)
        print(f"wrote {args.out}")


def audit_markdown(result: dict) -> str:
    """The audit as a Markdown table: pass rate per category old / new, precision per negative
    kind (its negatives against all true renders), overall precision and recall."""
    lines = ["| category | should | n | pass rate old | pass rate new | precision old | "
             "precision new |", "|---|---|---|---|---|---|---|"]
    for cat, e in result["categories"].items():
        prec = (["-", "-"] if e["should_pass"] else
                [f"{e['precision_old']:.3f}", f"{e['precision_new']:.3f}"])
        lines.append(f"| {cat} | {'pass' if e['should_pass'] else 'fail'} | {e['n']} | "
                     f"{e['pass_rate_old']:.3f} | {e['pass_rate_new']:.3f} | "
                     + " | ".join(prec) + " |")
    for mode in ("old", "new"):
        o = result["overall"][mode]
        lines.append(f"\n{mode} evaluator overall: precision {o['precision']:.3f}, recall "
                     f"{o['recall']:.3f} ({o['tp']} true passes, {o['fp']} false passes, "
                     f"{o['fn']} false failures)")
    return "\n".join(lines)


def audit_table(size: int, args: argparse.Namespace) -> None:
    """Run the hard-negative audit at one size, print it, and write it when asked."""
    from difflab.eval.hard_negatives import audit
    from difflab.eval.provenance import provenance
    from difflab.io import atomic_write, write_json

    start = time.perf_counter()
    result = audit(size, args.audit_seeds, args.suite)
    command = "python scripts/validate_shapeeval.py " + " ".join(sys.argv[1:])
    result["provenance"] = provenance("audit (own seeds)", command=command)
    table = audit_markdown(result)
    print(f"\nhard-negative audit at {size}x{size}, suite {args.suite!r}, {args.audit_seeds} "
          f"seeds per prompt ({time.perf_counter() - start:.0f} s)\n{table}")
    if args.audit_out:
        out = Path(args.audit_out)
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "audit.json", result)
        text = README.format(command=command, size=size, seeds=args.audit_seeds, table=table)
        old = out / "README.md"
        if old.is_file() and GENERATED_SECTION in old.read_text():  # keep the labelled audit
            text += "\n" + GENERATED_SECTION + old.read_text().split(GENERATED_SECTION, 1)[1]
        atomic_write(out / "README.md", lambda p: p.write_text(text))


README = """# Shapes evaluator audit: the lenient evaluator against the strict one

Made by

    {command}

on ground-truth renders and synthetic hard negatives (`difflab.eval.hard_negatives`) at
{size}x{size} px, {seeds} seeds per prompt of suite `all` (seeds other than the suites' own).
"old" is the lenient evaluator (`strict=False`: off-palette pixels count as background, blobs
below a third of the smallest object vanish, any shape fit above IoU 0.6 counts); "new" adds
the per-image quality flag (off-palette mass, debris mass, shape fit >= 0.75). Rows that
should pass are true renders (clean, Gaussian noise std 8/255, blur std 0.5 px at 32 px);
every other row should fail. Precision per kind pools that kind's negatives with every true
render. Every number below is in `audit.json`.

{table}
"""
# The README's second part, on generated images labelled by eye, is written by hand around a
# table that scripts/tables.py fills from generated.json; rewriting the first part keeps it.
GENERATED_SECTION = "## Generated images labelled by eye"


def renders(n: int, size: int, seed: int, suite: str = "all") -> np.ndarray:
    """n renders (n, S, S, 3) of random prompts of `suite`, seeded."""
    specs = load_suite(suite)
    picks = np.random.default_rng(seed).integers(len(specs), size=n)
    return np.stack([render_spec(specs[i], size, seed=seed * 1_000_000 + j)[0]
                     for j, i in enumerate(picks)])


def fd_table(size: int, n: int) -> dict[str, float]:
    """FD from one set of real renders to another set, clean, degraded, or of other content."""
    real_a, real_b = renders(n, size, 1), renders(n, size, 2)
    f_a = extract_features(real_a)
    rows = {
        "real (other seeds)": real_b,
        "blur std 0.5 px @32": gaussian_blur(real_b, 0.5 * size / 32),
        "blur std 1 px @32": gaussian_blur(real_b, size / 32),
        "noise std 8/255": add_gaussian_noise(real_b, 8 / 255, seed=0),
        "noise std 0.1": add_gaussian_noise(real_b, 0.1, seed=0),
        "blockiness 2 px @32": blockiness(real_b, max(1, size // 16)),
        "colour shift 0.1": color_shift(real_b, 0.1, seed=0),
        "content: single objects only": renders(n, size, 3, "single"),
        "content: counting only": renders(n, size, 4, "counting"),
    }
    print(f"\nFD at {size}x{size}, {n} vs {n} images (set A: random prompts of suite 'all')")
    print("| set B | FD(A, B) |\n|---|---|")
    fds = {}
    for name, images in rows.items():
        fds[name] = float(frechet_distance(f_a, extract_features(images)))
        print(f"| {name} | {fds[name]:.3f} |")
    return fds


def accuracy_table(size: int, args: argparse.Namespace) -> dict:
    """Validate the evaluator at one image size, print its table and return it."""
    start = time.perf_counter()
    result = validate(size, args.n_seeds, args.suite, args.noise, args.blur)
    seconds = time.perf_counter() - start
    n_scored = 4 * result["table"]["overall"]["n"]  # clean, noise, blur, reject
    print(f"\n{size}x{size}, suite {args.suite!r}, {args.n_seeds} seeds per prompt, "
          f"noise std {args.noise:.4f}, blur std {args.blur} px "
          f"({n_scored} images scored in {seconds:.1f} s: {n_scored / seconds:.0f} images/s "
          "including rendering)")
    print("| category | " + " | ".join(COLUMNS) + " |")
    print("|---" * (len(COLUMNS) + 1) + "|")
    for cat, row in result["table"].items():
        cells = [f"{row[c]:.4f}" if c != "n" else str(row[c]) for c in COLUMNS]
        print(f"| {cat} | " + " | ".join(cells) + " |")
    return result["table"]


if __name__ == "__main__":
    main()
