"""Print the sampler frontier (bench.json of benchmarks/sampler_grid.toml) as one Markdown table
per CFG scale: a row per sampler, a column per NFE budget, each cell accuracy / FD / PSNR /
time ratio (a sampler whose steps cannot hit the budget exactly, e.g. Heun's 2n - 1, shows the
NFE it used in brackets).

    python benchmarks/pivot_samplers.py benchmarks/results/samplers/bench.json
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict

from make_sampler_grid import NFES


def main(path: str) -> None:
    points = json.load(open(path))["points"]
    budgets = sorted(NFES)
    cells: dict[float, dict[str, dict[int, str]]] = defaultdict(lambda: defaultdict(dict))
    for p in points:
        c, q, cost = p["config"], p["quality"], p["cost"]
        budget = min(b for b in budgets if b >= cost["nfe"])
        used = "" if cost["nfe"] == budget else f" ({cost['nfe']})"
        cells[c["cfg_scale"]][c["sampler"]][budget] = (
            f"{100 * q['accuracy']:.1f}%{used} / {q['fd']:.0f} / {q['psnr']:.1f} / "
            f"{cost['time_ratio']:.2f}")
    for cfg, rows in sorted(cells.items()):
        print(f"\nCFG {cfg:g} — accuracy / FD / PSNR (dB) / time ratio, by NFE")
        print("| sampler | " + " | ".join(f"NFE {n}" for n in budgets) + " |")
        print("|---|" + "---|" * len(budgets))
        for sampler, row in rows.items():
            print(f"| {sampler} | " + " | ".join(row.get(n, "") for n in budgets) + " |")


if __name__ == "__main__":
    main(sys.argv[1])
