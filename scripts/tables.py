"""Regenerate the docs tables from their result files (benchmarks/results/**.json).

    python scripts/tables.py            # rewrite every marked table in place
    python scripts/tables.py --check    # exit 1, naming the pages, when a table is stale

A table sits between `<!-- table:NAME -->` and `<!-- /table:NAME -->`; NAME is a key of
`difflab.eval.tables.TABLES`, which says which result file it is built from.
"""

from __future__ import annotations

import argparse
import sys

from difflab.eval.tables import PAGES, ROOT, regenerate, stale_pages
from difflab.io import atomic_write


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="only report stale pages")
    args = p.parse_args()
    if args.check:
        stale = stale_pages()
        for page in stale:
            print(f"stale: {page} (run python scripts/tables.py)")
        return 1 if stale else 0
    for page in PAGES:
        path = ROOT / page
        text = regenerate(path.read_text())
        atomic_write(path, lambda q, t=text: q.write_text(t))
        print(f"wrote {page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
