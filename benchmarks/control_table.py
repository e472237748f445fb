"""Markdown table of control result files (the tables in docs/control.md are generated from
the same function by scripts/tables.py).

    python benchmarks/control_table.py benchmarks/results/control/layout-test.json ...
"""

from __future__ import annotations

import sys

from difflab.eval.tables import control_table

if __name__ == "__main__":
    print("\n\n".join(control_table(p) for p in sys.argv[1:]))
