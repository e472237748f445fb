"""Wording robustness: template prompts vs the same scenes reworded, and prompts with one word
the model cannot know, scored by the shapes evaluator on the same seeds.

    # what the shipped base draws for reworded and unknown-word single-object prompts (dev)
    python benchmarks/reworded_eval.py diagnose --out benchmarks/results/reworded/diagnosis.json
    # one run: template suites, the reworded suite (test split only), unknown-word prompts
    python benchmarks/reworded_eval.py evaluate --split test --run runs/para \
        --out benchmarks/results/reworded/paraphrase-test.json
    # does the frozen text encoder put each paraphrase next to its world word? (no images)
    python benchmarks/reworded_eval.py synonymy --out benchmarks/results/reworded/synonymy.json
    # runs side by side, paired against the first
    python benchmarks/reworded_eval.py compare --runs control=benchmarks/results/reworded/\
control-test.json,paraphrase=benchmarks/results/reworded/paraphrase-test.json \
        --out benchmarks/results/reworded/compare.json

An image is "empty" when the evaluator detects no object in it. Every pair of runs is compared
by an exact McNemar test on the same prompts and seeds; the gap between reworded and template
wording of one run pairs each reworded prompt with its template prompt's first test image.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict

import numpy as np

from difflab.data.paraphrase import unknown_word_prompts
from difflab.data.suites import expand_suite, load_suite
from difflab.data.world import PromptSpec
from difflab.demo import DEMO_SAMPLING, DEMO_SEEDS, REWORDED_SEEDS
from difflab.eval.commands import checkpoint_identity
from difflab.eval.provenance import provenance
from difflab.eval.stats import mcnemar_exact, wilson_interval
from difflab.evaluate import score_images
from difflab.io import write_json
from difflab.runtime import load
from difflab.runtime.artefacts import resolve

BASE_SUITES = ("single", "binding", "counting", "spatial")  # what `reworded` rewords


def rate(flags: list[int]) -> dict:
    """A proportion with its count and 95% Wilson interval."""
    k, n = int(sum(flags)), len(flags)
    return {"rate": k / n if n else float("nan"), "k": k, "n": n,
            "interval": list(wilson_interval(k, n))}


def by_category(flags: list[int], cats: list[str]) -> dict:
    """`rate` overall and per category."""
    out = {"overall": rate(flags)}
    for cat in dict.fromkeys(cats):
        out[cat] = rate([f for f, c in zip(flags, cats, strict=True) if c == cat])
    return out


def outcomes(report) -> dict[str, list[int]]:
    """Per image: passed, empty (no object detected) and, for one-object prompts, whether an
    object of the asked shape / colour is there at all."""
    out = defaultdict(list)
    for v in report.prompts:
        dets, (want, *_) = v.detections, v.spec.objects
        out["passed"].append(int(v.passed))
        out["empty"].append(int(not dets))
        out["has_shape"].append(int(want.shape is None or any(d.shape == want.shape
                                                              for d in dets)))
        out["has_color"].append(int(want.color is None or any(d.color == want.color
                                                              for d in dets)))
    return dict(out)


def run_set(pipe, specs: list[PromptSpec], seeds: list[int]) -> dict:
    """Sample, score and summarise one prompt set (per-image flags kept for paired tests)."""
    t0 = time.perf_counter()
    images = pipe.generate([s.text for s in specs], seeds, DEMO_SAMPLING)
    report, fd, floor = score_images(images, specs, seeds)
    flags = outcomes(report)
    cats = [s.category for s in specs]
    return {"n_images": len(specs), "fd": float(fd), "fd_floor": float(floor),
            "seconds": time.perf_counter() - t0,
            **{k: by_category(v, cats) for k, v in flags.items()},
            "flags": flags, "categories": cats, "seeds": list(seeds),
            "texts": [s.text for s in specs]}


def reworded_specs() -> list[PromptSpec]:
    return load_suite("reworded")


def token_lengths(max_length: int) -> dict:
    """MiniLM token counts (with [CLS] and [SEP]) of template and reworded prompts per
    category, and how many exceed `max_length` (the encoder truncates them)."""
    from transformers import AutoTokenizer

    from difflab.text.hf import minilm_path

    tok = AutoTokenizer.from_pretrained(minilm_path(), local_files_only=True)
    bases = [p for name in BASE_SUITES for p in load_suite(name)]
    groups = defaultdict(list)
    for p in bases:
        groups[f"template/{p.category}"].append(p.text)
    for i, p in enumerate(reworded_specs()):
        groups[f"{p.category}/{bases[i % len(bases)].category}"].append(p.text)
    out = {}
    for name, texts in groups.items():
        n = np.array([len(tok(t)["input_ids"]) for t in texts])
        over = [t for t, k in zip(texts, n, strict=True) if k > max_length]
        out[name] = {"prompts": len(texts), "max_tokens": int(n.max()),
                     "mean_tokens": float(n.mean()), "truncated": len(over),
                     "examples": texts[:3], "truncated_examples": over[:3]}
    return out


def training_caption_lengths(options: dict, n: int = 4000) -> dict:
    """Token counts of `n` training captions drawn with `options` (ShapesConfig fields)."""
    from transformers import AutoTokenizer

    from difflab.data.shapes_dataset import ShapesConfig, ShapesDataset
    from difflab.text.hf import minilm_path

    tok = AutoTokenizer.from_pretrained(minilm_path(), local_files_only=True)
    ds = ShapesDataset(ShapesConfig(**options))
    k = np.array([len(tok(ds.sample(i).caption)["input_ids"]) for i in range(n)])
    return {"options": options, "captions": n, "max_tokens": int(k.max()),
            "p99_tokens": float(np.percentile(k, 99)),
            "over": {str(m): float((k > m).mean()) for m in (16, 20, 24)}}


def diagnose(args) -> dict:
    """Shapes-base on dev seeds: one-object prompts in template, reworded and unknown words."""
    pipe = load(args.base)
    singles = {p.seed for p in load_suite("single")}
    specs = load_suite("single") + [p for p in reworded_specs() if p.seed in singles]
    specs += unknown_word_prompts("dev")
    specs, seeds = expand_suite(specs, args.seeds, split="dev")
    demo_kinds = ["single", "single", "single", "relation", "count"]
    return {"what": "shapes-base on one-object prompts: template, reworded (both halves, dev "
                    "seeds, diagnosis only) and one unknown word; MiniLM token lengths",
            "token_lengths": token_lengths(args.max_length), "max_length": args.max_length,
            "training_captions": [
                training_caption_lengths({"kinds": demo_kinds}),
                training_caption_lengths({"kinds": demo_kinds, "paraphrase": True}),
                training_caption_lengths({"kinds": demo_kinds, "paraphrase": True,
                                          "unknown_words": 0.2})],
            "sets": {"one_object": run_set(pipe, specs, seeds)},
            "provenance": provenance("dev", str(resolve(args.base)),
                                     checkpoint_identity(resolve(args.base)))}


# The frames a colour and a shape word are read in: the suites' own single-object wording.
SYNONYM_FRAMES = {"color": "a {} circle", "shape": "a red {}"}


def word_states(encoder, frame: str, words: list[str]) -> np.ndarray:
    """Mean last-layer MiniLM state over each word's own tokens in `frame` (what the network's
    cross-attention reads at that word), unit length: (len(words), D)."""
    prefix = encoder.tokenizer(frame.split("{}")[0].strip())["input_ids"][:-1]  # [CLS] a ...
    enc = encoder.encode([frame.format(w) for w in words])
    out = []
    for i, w in enumerate(words):
        n = len(encoder.tokenizer(w, add_special_tokens=False)["input_ids"])
        v = enc.tokens[i, len(prefix):len(prefix) + n].mean(0).numpy()
        out.append(v / np.linalg.norm(v))
    return np.stack(out)


def synonymy(args) -> dict:
    """Does the frozen text encoder put each paraphrase next to its world word? For every colour
    and shape synonym of both halves: cosine similarity of its token states, in a suite frame,
    to each world word's in the same frame; the nearest world word and the margin."""
    from difflab.data.paraphrase import COLOR_WORDS, HALVES, SHAPE_WORDS
    from difflab.text.hf import build_minilm

    encoder = build_minilm(max_length=args.max_length)
    kinds = {"color": {w: s for w, s in COLOR_WORDS.items()},
             "shape": {w: (s[0][0], s[1][0]) for w, s in SHAPE_WORDS.items()}}
    rows, summary = [], {}
    for kind, table in kinds.items():
        world = list(table)
        ref = word_states(encoder, SYNONYM_FRAMES[kind], world)
        for h, half in enumerate(HALVES):
            words = [table[w][h] for w in world]
            sims = word_states(encoder, SYNONYM_FRAMES[kind], words) @ ref.T  # (n, n)
            hits = 0
            for i, w in enumerate(world):
                order = np.argsort(-sims[i])
                nearest = world[order[0]]
                hits += nearest == w
                rows.append({"kind": kind, "half": half, "word": words[i], "world_word": w,
                             "nearest": nearest, "similarity": float(sims[i, i]),
                             "best_other": float(max(s for j, s in enumerate(sims[i]) if j != i)),
                             "rank": int(np.where(order == i)[0][0]) + 1})
            summary[f"{kind}/{half}"] = {"nearest_is_own": int(hits), "words": len(world)}
    return {"what": "nearest world word of each paraphrase by MiniLM token states in a suite "
                    "frame (cosine); no images", "frames": SYNONYM_FRAMES,
            "max_length": args.max_length, "words": rows, "summary": summary,
            "provenance": provenance("none", "minilm", "", {"frames": SYNONYM_FRAMES})}


def paired(a: dict, b: dict, key: str) -> dict:
    """Exact McNemar of run b against run a on one set's per-image `key` flags."""
    t = mcnemar_exact(a["flags"][key], b["flags"][key])
    return {"only_first": t.only_a, "only_this": t.only_b, "n": t.n, "p": t.p_value}


def wording_gap(rw: dict, template: dict) -> dict:
    """Reworded accuracy minus template accuracy on the same scenes and seeds, per half, with
    McNemar (each reworded prompt against its template prompt's image of the same seed)."""
    by_seed = dict(zip(template["seeds"], template["flags"]["passed"], strict=True))
    out = {}
    for half in ("reworded_seen", "reworded_unseen"):
        idx = [i for i, c in enumerate(rw["categories"]) if c == half]
        if not idx:
            continue
        r = [rw["flags"]["passed"][i] for i in idx]
        t = [by_seed[rw["seeds"][i]] for i in idx]
        test = mcnemar_exact(t, r)
        out[half] = {"reworded": rate(r), "template": rate(t),
                     "gap_points": 100 * (np.mean(r) - np.mean(t)),
                     "only_template": test.only_a, "only_reworded": test.only_b,
                     "p": test.p_value}
    return out


def evaluate_run(args) -> dict:
    """One run on the template suites, the reworded suite (test split only) and the
    unknown-word prompts, every image's verdict kept for paired tests."""
    n = args.per_set or None
    sets = {"template": expand_suite(load_suite("all")[:n], args.template_seeds,
                                     split=args.split),
            "unknown": expand_suite(unknown_word_prompts(args.split)[:n], args.unknown_seeds,
                                    split=args.split)}
    if args.split == "test":
        sets["reworded"] = expand_suite(reworded_specs()[:n], REWORDED_SEEDS, split="test")
    pipe = load(args.run)
    folder = resolve(args.run)
    res = {k: run_set(pipe, specs, seeds) for k, (specs, seeds) in sets.items()}
    if "reworded" in res:
        res["wording_gap"] = wording_gap(res["reworded"], res["template"])
    print(", ".join(f"{k} {v['passed']['overall']['rate']:.3f} (empty "
                    f"{v['empty']['overall']['rate']:.3f})" for k, v in res.items() if k in sets))
    return {"what": "one run: template suites, reworded suite, unknown-word prompts",
            "split": args.split, "sets": list(sets), "results": res,
            "sampling": {"sampler": DEMO_SAMPLING.sampler, "steps": DEMO_SAMPLING.steps,
                         "cfg": DEMO_SAMPLING.cfg},
            "provenance": provenance(args.split, str(folder), checkpoint_identity(folder),
                                     dict(getattr(pipe, "config", {}) or {})) | {
                "machine_note": "a shared 2-core CPU (other jobs running): seconds are not "
                                "speeds"}}


def compare(args) -> dict:
    """Runs evaluated by `evaluate` (same split, sets and seeds), with paired tests of every
    run against the first."""
    files = dict(item.split("=", 1) for item in args.runs.split(","))
    runs = {name: json.loads(open(path, encoding="utf-8").read()) for name, path in files.items()}
    first = next(iter(runs.values()))
    for name, r in runs.items():
        if r["split"] != first["split"] or r["sets"] != first["sets"] or any(
                r["results"][k]["seeds"] != first["results"][k]["seeds"] for k in r["sets"]):
            raise SystemExit(f"{files[name]} was scored on other prompts or seeds than "
                             f"{next(iter(files.values()))}; cannot pair them")
    out = {"what": "wording robustness of runs trained side by side", "split": first["split"],
           "sampling": first["sampling"], "files": files, "runs": {}}
    for name, r in runs.items():
        res = dict(r["results"])
        if r is not first:
            res["vs_first"] = {k: {"passed": paired(first["results"][k], res[k], "passed"),
                                   "empty": paired(first["results"][k], res[k], "empty")}
                               for k in r["sets"]}
        out["runs"][name] = res | {"checkpoint": r["provenance"]["checkpoint"],
                                   "checkpoint_sha256": r["provenance"]["checkpoint_sha256"],
                                   "train_config": r["provenance"]["config"],
                                   "evaluated": r["provenance"]}
    out["provenance"] = provenance(
        first["split"], ",".join(r["provenance"]["checkpoint"] for r in runs.values()),
        ",".join(r["provenance"]["checkpoint_sha256"] for r in runs.values()),
        machine=first["provenance"]["machine"])
    return out


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=("diagnose", "evaluate", "compare", "synonymy"))
    ap.add_argument("--base", default="shapes-base", help="diagnose: the model")
    ap.add_argument("--seeds", type=int, default=2, help="diagnose: images per prompt")
    ap.add_argument("--max-length", type=int, default=16, help="diagnose: text max_length")
    ap.add_argument("--run", default="", help="evaluate: a run folder or checkpoint")
    ap.add_argument("--template-seeds", type=int, default=DEMO_SEEDS, help="evaluate")
    ap.add_argument("--unknown-seeds", type=int, default=DEMO_SEEDS, help="evaluate")
    ap.add_argument("--per-set", type=int, default=0, help="evaluate: first N prompts of each "
                    "set (0: all; a smoke test)")
    ap.add_argument("--runs", default="", help="compare: name=evaluate's file, comma-separated")
    ap.add_argument("--split", default="dev", choices=("dev", "test"))
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    if args.mode == "compare" and not args.runs:
        ap.error("compare needs --runs name=file[,name=file...]")
    if args.mode == "evaluate" and not args.run:
        ap.error("evaluate needs --run")
    result = {"diagnose": diagnose, "evaluate": evaluate_run, "compare": compare,
              "synonymy": synonymy}[args.mode](args)
    write_json(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main(sys.argv[1:])
