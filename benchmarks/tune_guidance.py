"""How an adapter's new concept fares at each guidance scale, prompt by prompt.

For every `--cfg` scale the base with the adapter merged samples the adapter's concept prompts
(demo sampling otherwise), and each prompt's passes are counted: a prompt that fails more as the
scale grows is one where guidance's text direction, (conditional - unconditional), leads away
from the concept. Writes one JSON result file with provenance.

    python benchmarks/tune_guidance.py --base shapes-long \
        --adapter runs/tune-r2mid-seed0/star-lora-shapes-long-test --split dev --seeds 8 \
        --cfg 1,2,3,5 --out benchmarks/results/tune/star-long-r2mid-seed0-guidance-dev.json
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from difflab.data.suites import expand_suite
from difflab.demo import DEMO_SAMPLING
from difflab.eval.shapeeval import evaluate
from difflab.runtime import read_manifest

sys.path.insert(0, str(Path(__file__).parent))
from tune_accel import write_adapter_result  # noqa: E402
from tune_compose import pipeline  # noqa: E402
from tune_concepts import concept_specs  # noqa: E402


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--adapter", required=True, help="the adapter folder (tuned on --base)")
    ap.add_argument("--base", default="shapes-base")
    ap.add_argument("--split", default="dev", choices=("dev", "test"))
    ap.add_argument("--seeds", type=int, default=8, help="images per concept prompt")
    ap.add_argument("--cfg", default="1,2,3,5", help="guidance scales, comma-separated")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    concept = read_manifest(args.adapter).config["tune"]["concept"]
    specs, seeds = expand_suite(concept_specs(concept), args.seeds, split=args.split)
    pipe = pipeline(args.base, [args.adapter])
    scales = {}
    for scale in (float(s) for s in args.cfg.split(",")):
        images = pipe.generate([s.text for s in specs], seeds, replace(DEMO_SAMPLING, cfg=scale))
        verdicts = evaluate(images, specs, vocabulary="extended").prompts
        prompts: dict[str, dict] = {}
        for v in verdicts:
            p = prompts.setdefault(v.spec.text, {"passed": 0, "n": 0, "drawn_instead": {}})
            p["n"] += 1
            p["passed"] += int(v.passed)
            if not v.passed:
                for d in v.detections:
                    p["drawn_instead"][d.shape] = p["drawn_instead"].get(d.shape, 0) + 1
        scales[f"{scale:g}"] = {"accuracy": sum(v.passed for v in verdicts) / len(verdicts),
                                "n": len(verdicts), "prompts": prompts}
        print(f"cfg {scale:g}: " + ", ".join(f"{t} {p['passed']}/{p['n']}"
                                             for t, p in prompts.items()), flush=True)
    write_adapter_result("tune_guidance.py", argv, args, concept, {
        "n_images": len(specs), "evaluator_vocabulary": "extended", "scales": scales})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
