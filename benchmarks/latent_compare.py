"""Latent against pixel diffusion at equal training time ("High-Resolution Image Synthesis with
Latent Diffusion Models", 2022): accuracy per suite, paired McNemar, and seconds per image.

Both runs (configs/latent.toml, configs/pixel64.toml) sample every prompt of each suite with the
same seeds (test split by default), so their pass flags pair up image by image. Seconds per image
are timed in rounds that alternate the two models in one process (ratio with its interval);
the machine is shared, so only the ratio is meaningful. Training facts come from each run's
checkpoint (steps, train loss) and from the wall-clock record `--train-times` (JSON: run folder
-> {"seconds": ...}) written by the commands that trained them.

    python benchmarks/latent_compare.py --latent runs/latent --pixel runs/pixel64 \
        --train-times runs/train_times.json --out benchmarks/results/latent/compare.json
    python benchmarks/latent_compare.py --table benchmarks/results/latent/compare.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from difflab.config import to_dict
from difflab.eval.provenance import provenance
from difflab.eval.stats import mcnemar_exact, median_interval, speedup_interval, wilson_interval
from difflab.evaluate import score_images, suite_prompts
from difflab.io import write_json
from difflab.runtime import SampleConfig, load, read_manifest
from difflab.runtime.artefacts import resolve, sha256_file
from difflab.runtime.latent import AE_WEIGHTS

# the demo's sampling settings (difflab.demo.DEMO_SAMPLING), not tuned for either model
SAMPLING = SampleConfig(sampler="euler_ancestral", steps=20, cfg=3.0, batch_size=32)


def run_facts(run: str, times: dict[str, Any]) -> dict[str, Any]:
    """What a run is: its checkpoint, weights hash, steps, last train loss and wall time."""
    folder = resolve(run)
    manifest = read_manifest(folder)
    facts = {"run": run, "checkpoint": str(folder), "kind": manifest.kind,
             "sha256": manifest.files["model.safetensors"],
             "steps": manifest.metrics.get("step"),
             "train_loss_last": manifest.metrics.get("train_loss"),
             "batch_size": manifest.config["schedule"]["batch_size"],
             "train_seconds": times.get(run, {}).get("seconds"),
             "latent": manifest.config.get("latent", {})}
    if AE_WEIGHTS in manifest.files:
        facts["autoencoder_sha256"] = manifest.files[AE_WEIGHTS]
    return facts


def score(pipe, suite: str, split: str) -> dict[str, Any]:
    specs, seeds = suite_prompts(suite, 1, split)
    t0 = time.perf_counter()
    images = pipe.generate([s.text for s in specs], seeds, SAMPLING)
    seconds = time.perf_counter() - t0
    report, fd, floor = score_images(images, specs, seeds)
    flags = [bool(v.passed) for v in report.prompts]
    k, n = sum(flags), len(flags)
    per = {}
    for cat in report.per_category:
        f = [p for p, s in zip(flags, specs, strict=True) if s.category == cat]
        per[cat] = {"accuracy": sum(f) / len(f), "n": len(f),
                    "interval": list(wilson_interval(sum(f), len(f)))}
    print(f"{pipe.source} {suite}: {k}/{n}, FD {fd:.1f} ({seconds:.0f} s)", flush=True)
    return {"accuracy": k / n, "n": n, "interval": list(wilson_interval(k, n)),
            "per_category": per, "fd": float(fd), "fd_floor": float(floor),
            "passed": [int(f) for f in flags], "seconds_shared_machine": round(seconds, 1)}


def reconstruction_ceiling(folder: str, suite: str, split: str) -> dict[str, Any]:
    """The evaluator on the suite's ground-truth renders and on their autoencoder round trips
    (posterior mean): what the latent model could score if it matched the data exactly."""
    import torch

    from difflab.data.grid import to_uint8
    from difflab.data.shapes import render_specs
    from difflab.runtime.latent import read_autoencoder

    ae = read_autoencoder(folder)
    specs, seeds = suite_prompts(suite, 1, split)
    size = 64
    renders = render_specs(specs, seeds, size)  # (N, H, W, 3) uint8
    x = torch.from_numpy(renders).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    with torch.no_grad():
        recon = to_uint8(ae.decode(ae.encode(x).mean))
    rows = {}
    for name, images in (("renders", renders), ("reconstructions", recon)):
        report, fd, _ = score_images(images, specs, seeds)
        flags = [bool(v.passed) for v in report.prompts]
        rows[name] = {"accuracy": sum(flags) / len(flags), "n": len(flags),
                      "interval": list(wilson_interval(sum(flags), len(flags))),
                      "fd": float(fd), "passed": [int(f) for f in flags]}
    m = mcnemar_exact(rows["reconstructions"]["passed"], rows["renders"]["passed"])
    rows["mcnemar"] = {"only_reconstructions": m.only_a, "only_renders": m.only_b,
                       "p": m.p_value}
    diff = recon.astype(np.float64) - renders.astype(np.float64)
    rows["psnr_db"] = float(10 * np.log10(255.0**2 / max(np.mean(diff**2), 1e-12)))
    print(f"{suite}: renders {rows['renders']['accuracy']:.3f}, reconstructions "
          f"{rows['reconstructions']['accuracy']:.3f}, PSNR {rows['psnr_db']:.2f} dB", flush=True)
    return rows


def time_rounds(pipes: dict[str, Any], rounds: int, prompts: list[str]) -> dict[str, list]:
    """Seconds per image for each pipeline, alternating them within every round."""
    seeds = list(range(len(prompts)))
    for pipe in pipes.values():  # warm-up: first-call allocations are not the model's cost
        pipe.generate(prompts[:1], seeds[:1], SAMPLING)
    times: dict[str, list[float]] = {name: [] for name in pipes}
    for r in range(rounds):
        order = list(pipes) if r % 2 == 0 else list(reversed(pipes))
        for name in order:
            t0 = time.perf_counter()
            pipes[name].generate(prompts, seeds, SAMPLING)
            times[name].append((time.perf_counter() - t0) / len(prompts))
    return times


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latent", default="runs/latent")
    ap.add_argument("--pixel", default="runs/pixel64")
    ap.add_argument("--train-times", default="runs/train_times.json")
    ap.add_argument("--suites", default="single")
    ap.add_argument("--latent-only-suites", default="", help="suites scored for latent alone")
    ap.add_argument("--split", default="test")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--timing-images", type=int, default=4)
    ap.add_argument("--rejected-autoencoder", action="append", default=[],
                    help="another autoencoder folder to score the same way (dev and test)")
    ap.add_argument("--out", default="benchmarks/results/latent/compare.json")
    ap.add_argument("--table", default="", help="print the markdown tables of a result file")
    args = ap.parse_args(argv)
    if args.table:
        print(table(json.loads(Path(args.table).read_text())))
        return 0
    start = time.perf_counter()
    times = json.loads(Path(args.train_times).read_text())
    pipes = {"latent": load(args.latent), "pixel": load(args.pixel)}
    runs = {"latent": run_facts(args.latent, times), "pixel": run_facts(args.pixel, times)}
    ae_folder = runs["latent"]["latent"]["autoencoder"]
    ae = read_manifest(ae_folder)
    runs["latent"]["autoencoder"] = {"folder": ae_folder, "metrics": ae.metrics,
                                     "config": ae.config["model"],
                                     "sha256": ae.files[AE_WEIGHTS]}
    all_suites = [*args.suites.split(","), *filter(None, args.latent_only_suites.split(","))]
    runs["latent"]["autoencoder"]["evaluator_ceiling"] = {
        suite: reconstruction_ceiling(ae_folder, suite, args.split) for suite in all_suites}
    # the autoencoder was chosen on the dev split: both candidates' ceilings there
    runs["latent"]["autoencoder"]["evaluator_ceiling_dev"] = {
        suite: reconstruction_ceiling(ae_folder, suite, "dev") for suite in all_suites}
    rejected = {}
    for folder in args.rejected_autoencoder:
        m = read_manifest(folder)
        rejected[folder] = {"metrics": m.metrics, "config": m.config, "sha256": m.files[AE_WEIGHTS],
                            "evaluator_ceiling_dev": {s: reconstruction_ceiling(folder, s, "dev")
                                                      for s in all_suites},
                            "evaluator_ceiling": {s: reconstruction_ceiling(folder, s, args.split)
                                                  for s in all_suites}}
    runs["latent"]["rejected_autoencoders"] = rejected
    suites: dict[str, Any] = {}
    for suite in args.suites.split(","):
        rows = {name: score(pipe, suite, args.split) for name, pipe in pipes.items()}
        m = mcnemar_exact(rows["latent"]["passed"], rows["pixel"]["passed"])
        suites[suite] = {**rows, "mcnemar": {"only_latent": m.only_a, "only_pixel": m.only_b,
                                             "n": m.n, "p": m.p_value}}
    for suite in filter(None, args.latent_only_suites.split(",")):
        suites[suite] = {"latent": score(pipes["latent"], suite, args.split)}
    specs, _ = suite_prompts("single", 1, args.split)
    prompts = [s.text for s in specs[:args.timing_images]]
    secs = time_rounds(pipes, args.rounds, prompts)
    ratio = speedup_interval(secs["latent"], secs["pixel"])
    timing = {name: {"seconds_per_image": v, "median": median_interval(v).median}
              for name, v in secs.items()}
    timing["latent_speedup"] = {"median": ratio.median, "lo": ratio.lo, "hi": ratio.hi,
                                "coverage": ratio.coverage}
    timing["images_per_round"] = len(prompts)
    config = {"sampling": to_dict(SAMPLING), "suites": suites and list(suites),
              "rounds": args.rounds, "seeds_per_prompt": 1,
              "note": "both runs trained at the same time on a shared 2-core CPU, one thread "
                      "each, stopped at the same wall time; timings interleaved on the same "
                      "shared machine"}
    sha = sha256_file(Path(runs["latent"]["checkpoint"]) / "model.safetensors")
    result = {"provenance": provenance(args.split, args.latent, sha, config),
              "machine_shared": True, "runs": runs, "suites": suites, "timing": timing,
              "seconds": round(time.perf_counter() - start, 1)}
    write_json(args.out, result)
    print(table(result))
    print(f"wrote {args.out}")
    return 0


def _acc(row: dict[str, Any]) -> str:
    lo, hi = row["interval"]
    return f"{100 * row['accuracy']:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}] (n={row['n']})"


def table(result: dict[str, Any]) -> str:
    """The docs' markdown tables of a result file: training, accuracy, speed."""
    runs, timing = result["runs"], result["timing"]
    lines = ["| model | train minutes | steps x batch | last train loss | s / image (median) |",
             "|---|---|---|---|---|"]
    for name in ("latent", "pixel"):
        r = runs[name]
        minutes = f"{r['train_seconds'] / 60:.1f}" if r["train_seconds"] else "-"
        loss = f"{r['train_loss_last']:.3f}" if r["train_loss_last"] is not None else "-"
        lines.append(f"| {name} | {minutes} | {r['steps']} x {r['batch_size']} | {loss} | "
                     f"{timing[name]['median']:.3f} |")
    s = timing["latent_speedup"]
    lines += ["", f"Latent sampling is {s['median']:.1f}x faster per image "
              f"[{s['lo']:.1f}, {s['hi']:.1f}] ({len(timing['latent']['seconds_per_image'])} "
              "interleaved rounds, decoding included)."]
    lines += ["", "| suite | latent | pixel | latent-only / pixel-only passes | McNemar p | "
              "FD latent / pixel |", "|---|---|---|---|---|---|"]
    for suite, rows in result["suites"].items():
        if "pixel" not in rows:
            lines.append(f"| {suite} | {_acc(rows['latent'])} | not run | - | - | "
                         f"{rows['latent']['fd']:.1f} / - |")
            continue
        m = rows["mcnemar"]
        lines.append(f"| {suite} | {_acc(rows['latent'])} | {_acc(rows['pixel'])} | "
                     f"{m['only_latent']} / {m['only_pixel']} | {m['p']:.2g} | "
                     f"{rows['latent']['fd']:.1f} / {rows['pixel']['fd']:.1f} |")
    ae = runs["latent"]["autoencoder"]["metrics"]
    lines += ["", f"Autoencoder: held-out PSNR {ae['psnr']:.2f} dB, scale factor "
              f"{ae['scale_factor']:.3f}, trained {ae['train_seconds'] / 60:.1f} min.", "",
              "| suite | evaluator on renders | on their autoencoder round trips | PSNR dB | "
              "McNemar p |", "|---|---|---|---|---|"]
    rejected = runs["latent"]["rejected_autoencoders"].items()
    candidates = {"used": runs["latent"]["autoencoder"],
                  **{f"rejected ({k})": v for k, v in rejected}}
    for label, ae_row in candidates.items():
        loss = ae_row["config"].get("recon_loss") or ae_row["config"]["model"]["recon_loss"]
        for split in ("evaluator_ceiling_dev", "evaluator_ceiling"):
            for suite, c in ae_row.get(split, {}).items():
                where = "dev" if split.endswith("dev") else result["provenance"]["split"]
                lines.append(f"| {label}, {loss}: {suite} ({where}) | {_acc(c['renders'])} | "
                             f"{_acc(c['reconstructions'])} | {c['psnr_db']:.2f} | "
                             f"{c['mcnemar']['p']:.2g} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
