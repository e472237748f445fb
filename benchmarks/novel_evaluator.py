"""Validate the shapes evaluator's "extended" vocabulary (novel concepts) on ground truth.

    .venv/bin/python benchmarks/novel_evaluator.py --n-seeds 4 \
        --out benchmarks/results/novel/evaluator_validation.json
    .venv/bin/python benchmarks/novel_evaluator.py --size 16 --n-seeds 4 --world-seeds 1 \
        --out benchmarks/results/novel/evaluator_validation_16px.json

Three tables at --size px: (1) every ALL_SHAPES x ALL_COLORS single object and 20 two-object
scenes with novel concepts, clean / Gaussian noise / blur (pass rate of the own prompt; per
shape, `reject` = a clean render fails every same-colour prompt naming another shape);
(2) the novel suites' renders (clean, noise, blur, reject a wrong prompt of the suite, truth);
(3) the world suite `all` scored with the extended vocabulary, to show that no world render
is read as a star, a heart or pink.
"""

from __future__ import annotations

import argparse
import sys
import time

from difflab.data.suites import NOVEL_SUITES
from difflab.eval.novel_validation import validate_concepts
from difflab.eval.shapeeval import validate

COLUMNS = ("clean", "noise", "blur", "reject", "truth", "n")


def markdown(title: str, rows: dict[str, dict]) -> str:
    """One table: a row per key, the columns of COLUMNS it has."""
    cols = [c for c in COLUMNS if any(c in r for r in rows.values())]
    lines = [f"\n{title}", f"| | {' | '.join(cols)} |", "|---" * (len(cols) + 1) + "|"]
    for name, r in rows.items():
        cells = [str(r[c]) if c == "n" else f"{r[c]:.4f}" if c in r else "-" for c in cols]
        lines.append(f"| {name} | {' | '.join(cells)} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--n-seeds", type=int, default=4, help="renders per prompt")
    p.add_argument("--world-seeds", type=int, default=2, help="renders per prompt of 'all'")
    p.add_argument("--noise", type=float, default=8 / 255, help="noise std in [0, 1] units")
    p.add_argument("--blur", type=float, default=0.5, help="Gaussian blur std in pixels")
    p.add_argument("--out", default="", help="JSON result file")
    args = p.parse_args()
    start = time.perf_counter()
    degrade = {"noise": args.noise, "blur": args.blur}
    concepts = validate_concepts(args.size, args.n_seeds, **degrade)
    suites = {s: validate(args.size, args.n_seeds, suite=s, **degrade) for s in NOVEL_SUITES}
    world = validate(args.size, args.world_seeds, suite="all", vocabulary="extended", **degrade)
    seconds = time.perf_counter() - start
    t = concepts["table"]
    print(f"{args.size}x{args.size}, extended vocabulary, {args.n_seeds} seeds per prompt, "
          f"noise std {concepts['noise']:.4f}, blur std {concepts['blur']} px ({seconds:.0f} s)")
    print(markdown("single objects, per shape", t["shapes"]))
    print(markdown("single objects, per colour", t["colors"]))
    print(markdown("two-object scenes with a novel concept", {"pairs": t["pairs"]}))
    print(markdown("novel suites", {s: r["table"]["overall"] for s, r in suites.items()}))
    print(markdown(f"suite 'all' with the extended vocabulary ({args.world_seeds} seeds)",
                   world["table"]))
    if concepts["confusions"]:
        print("\nfailures (what was detected instead):", concepts["confusions"])
    if args.out:
        from difflab.eval.provenance import provenance
        from difflab.io import write_json

        command = "python benchmarks/novel_evaluator.py " + " ".join(sys.argv[1:])
        write_json(args.out, {"concepts": concepts, "suites": suites, "world_all": world,
                              "seconds": seconds,
                              "provenance": provenance("ground truth (own seeds)",
                                                       command=command)})
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
