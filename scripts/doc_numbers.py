"""Trace every number quoted in the prose of README.md and docs/*.md to a result file.

    python scripts/doc_numbers.py                # untraced numbers, page:line and context
    python scripts/doc_numbers.py --weak         # also numbers found only in an uncited file
    python scripts/doc_numbers.py --suggest      # for each, the result files with a near value
    python scripts/doc_numbers.py --provenance   # also cited files excepted from provenance
    python scripts/doc_numbers.py docs/tune.md   # some pages only

Exit status 1 when a number is untraced and not in benchmarks/doc_numbers_allowlist.txt, an
allowlist entry is no longer needed, or a cited result file lacks provenance (command, code
version, split, checkpoint and hash, config, machine, date) without an entry in
benchmarks/provenance_exceptions.txt saying why. What counts as traced: docs/measuring.md.
"""

from __future__ import annotations

import argparse
import sys

from difflab.eval import doc_numbers as dn


def _show(v: dn.Verdict, suggest: bool) -> None:
    q = v.quote
    where = f" (in {v.file}: {v.how})" if v.file else ""
    print(f"{v.status}: {q.page}:{q.line}: {q.text}{where}\n    {q.context[:160]}")
    if suggest:
        near = dn.near_values(q)
        for path, value, key in near:
            print(f"    near: {path} {key} = {value:g}")
        if not near:
            print("    near: no result file holds a value within 10%")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("pages", nargs="*", help="pages to check (default: README.md, docs/*.md)")
    p.add_argument("--weak", action="store_true",
                   help="also list numbers found only in result files the page does not cite")
    p.add_argument("--suggest", action="store_true",
                   help="for each listed number, the result files holding a near value")
    p.add_argument("--provenance", action="store_true",
                   help="also list cited result files lacking provenance that are excepted")
    args = p.parse_args()
    pages = args.pages or dn.doc_pages()
    missing = [page for page in pages if not (dn.ROOT / page).is_file()]
    if missing:
        print(f"error: no such page: {', '.join(missing)}", file=sys.stderr)
        return 2
    report = dn.check(pages)
    shown = ("untraced", "weak") if args.weak else ("untraced",)
    for v in report.verdicts:
        if v.status in shown:
            _show(v, args.suggest)
    for a in report.unused:
        print(f"unused allowlist entry: {dn.ALLOWLIST}:{a.line}: {a.page} | {a.number} "
              "(the number now traces or is gone)")
    missing, stale = dn.provenance_problems(pages)
    stale = [] if args.pages else stale  # a page subset cites only some excepted files
    listed = dn.cited_without_provenance(pages) if args.provenance else missing
    for path, citing in listed.items():
        note = "" if path in missing else f" (excepted in {dn.PROVENANCE_EXCEPTIONS})"
        print(f"no provenance: {path} (cited by {', '.join(citing)}){note}")
    for path in stale:
        print(f"stale provenance exception: {path} (no longer cited, or now has provenance)")
    counts = {s: len(report.with_status(s)) for s in ("traced", "weak", "allowed", "untraced")}
    print(", ".join(f"{n} {s}" for s, n in counts.items()) + f" on {len(pages)} pages")
    return 1 if counts["untraced"] or report.unused or missing or stale else 0


if __name__ == "__main__":
    sys.exit(main())
