"""Docs tables of the reference checks that need no trained model: the evaluator and the FD
feature space on ground-truth renders, the feature net's held-out accuracy, sampler orders and
the DDIM round trip on an exact denoiser, and the quantization recipes on a toy layer."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

COLUMNS = ("clean", "noise", "blur", "reject", "truth", "n")
# result files store keys sorted; tables show them in the order the scripts ran them
ORDER = ("real (other seeds)", "ve", "flow", "euler", "heun", "dpmpp_2m", "lms", "w8a8",
         "w8a8_real", "w4a8", "w4a4", "w4a4_svd", "fp8", "fp4")


def _ordered(keys: Sequence[str]) -> list[str]:
    """Known keys in ORDER first, the rest as given."""
    return sorted(keys, key=lambda k: ORDER.index(k) if k in ORDER else len(ORDER))


def _load(path: str) -> dict[str, Any]:
    from difflab.eval.tables import ROOT

    return json.loads((ROOT / path).read_text())


def _footer(data: dict[str, Any], path: str) -> str:
    """Where the numbers come from: the machine, code version, date and the file."""
    prov = data["provenance"]
    m = prov.get("machine", {})
    return (f"{prov['split']}; run on {m.get('cpu', '?')}, {m.get('threads', '?')} thread(s), "
            f"{prov['date'][:10]}, code {_version(prov['code_version'])}; {path}\n")


def _version(code: str) -> str:
    commit, _, dirty = code.partition("+")
    return commit[:12] + (f"+{dirty}" if dirty else "")


def shapeeval_validation_table(paths: Sequence[str]) -> str:
    """Per size: the fraction of renders that pass their own prompt clean, noised and blurred,
    that fail another prompt (reject), and whose true scene passes (truth)."""
    parts = []
    for path in paths:
        data = _load(path)
        for size, table in data["accuracy"].items():
            rows = [f"{size}x{size}, suite '{data['suite']}', {data['n_seeds']} seed(s) per "
                    f"prompt, noise std {data['noise']:.4f}, blur std {data['blur']} px:", "",
                    "| category | " + " | ".join(COLUMNS) + " |",
                    "|---" * (len(COLUMNS) + 1) + "|"]
            for cat, row in table.items():
                cells = [f"{row[c]:.4f}" if c != "n" else str(row[c]) for c in COLUMNS]
                rows.append(f"| {cat} | " + " | ".join(cells) + " |")
            parts.append("\n".join(rows) + "\n")
        parts.append(_footer(data, path))
    return "\n".join(parts)


def fd_sanity_table(path: str) -> str:
    """FD(A, B) per size: A = renders of random suite prompts, B = other renders, clean,
    degraded or of other content."""
    data = _load(path)
    sizes = list(data["fd"])
    names = _ordered(list(data["fd"][sizes[0]]))
    rows = ["| set B | " + " | ".join(f"FD at {s}x{s}" for s in sizes) + " |",
            "|---" * (len(sizes) + 1) + "|"]
    for name in names:
        rows.append(f"| {name} | " + " | ".join(f"{data['fd'][s][name]:.3f}" for s in sizes)
                    + " |")
    n = data["fd_n"]
    return ("\n".join(rows) + f"\n\n{n} vs {n} images per pair (set A: random prompts of suite "
            f"'{data['suite']}'); " + _footer(data, path))


FEATURE_HEADS = (("degradation", "degradation", "the degradation class"),
                 ("colour counts", "color_counts", "all 8 colour counts right at once"),
                 ("shape counts", "shape_counts", "all 6 shape counts right at once"))


def feature_net_table(path: str) -> str:
    """The shipped feature net's held-out accuracy per head."""
    data = _load(path)
    rows = ["| head | accuracy | what counts as correct |", "|---|---|---|"]
    for label, key, what in FEATURE_HEADS:
        rows.append(f"| {label} | {100 * data['val_accuracy'][key]:.1f}% | {what} |")
    return ("\n".join(rows) + f"\n\n{data['n_val']} held-out renders; weights "
            f"{data['weights']} (sha256 {data['weights_sha256'][:12]}, "
            f"{data['parameters']:,} parameters, {data['bytes'] / 1024:.0f} KiB); "
            + _footer(data, path))


def core_orders_table(path: str) -> str:
    """Measured convergence order per sampler, VE and flow geometry."""
    data = _load(path)
    geos = _ordered(list(data["orders"]))
    names = _ordered(list(data["orders"][geos[0]]))
    rows = ["| sampler | " + " | ".join(geos) + " |", "|---" * (len(geos) + 1) + "|"]
    for name in names:
        rows.append(f"| `{name}` | " + " | ".join(f"{data['orders'][g][name]['order']:.2f}"
                                                  for g in geos) + " |")
    return "\n".join(rows) + "\n\n" + _footer(data, path)


def core_inversion_table(path: str) -> str:
    """Relative error of DDIM inversion then sampling, classic and with fixed-point steps."""
    data = _load(path)
    rows = ["| geometry | classic inversion (`fixed_point_iters=0`) | default, 3 iterations |",
            "|---|---|---|"]
    for geo in _ordered(list(data["inversion"])):
        errs = data["inversion"][geo]
        rows.append(f"| {'VE' if geo == 've' else geo} | {errs['0']:.1e} | {errs['3']:.1e} |")
    return "\n".join(rows) + "\n\n" + _footer(data, path)


def quant_toy_table(path: str) -> str:
    """Each recipe on the toy MLP: execution, relative output error, bytes, and the restore."""
    data = _load(path)
    rows = ["| recipe | execution | rel-MSE | bytes | bf16 / quantized | restored |",
            "|---|---|---|---|---|---|"]
    for name in _ordered(list(data["recipes"])):
        r = data["recipes"][name]
        rows.append(f"| `{name}` | {r['execution']} | {r['rel_mse']:.2e} | {r['bytes']:,} | "
                    f"{r['vs_bf16']:.2f} | {'yes' if r['restored'] else 'no'} |")
    return ("\n".join(rows) + f"\n\n{data['layer']}, {data['inputs']} inputs; "
            + _footer(data, path))
