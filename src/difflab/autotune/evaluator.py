"""The evaluator over a real Pipeline: configurations generated on a fixed calibration set
(prompts x seeds of a suite split), scored against the reference configuration's images from
the same noise, and timed interleaved with the reference in the same process."""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from difflab.autotune.search import Evaluation
from difflab.autotune.space import Candidate
from difflab.autotune.store import EvaluationStore
from difflab.eval.bench import generate_all, reference_images, score_quality
from difflab.eval.commands import PipelineTarget
from difflab.eval.stats import speedup_interval, speedup_verdict


def calibration_set(suite: str, split: str, images: int, seed: int,
                    seeds_per_prompt: int = 1) -> tuple[list[Any], list[str], list[int]]:
    """`images` (spec, prompt, seed) triples of `suite` in `split`, in an order shuffled by
    `seed` so that every prefix (a rung) mixes the suite's categories."""
    from difflab.data.suites import expand_suite, load_suite

    specs, seeds = expand_suite(load_suite(suite), seeds_per_prompt, split=split)
    order = list(range(len(specs)))
    random.Random(seed).shuffle(order)
    order = order[:images]
    return [specs[i] for i in order], [specs[i].text for i in order], [seeds[i] for i in order]


class PipelineEvaluator:
    """Scores candidates on the first n images of a calibration set of `target`'s pipeline."""

    def __init__(self, target: PipelineTarget, reference: Candidate, metrics: Sequence[str],
                 specs: list[Any], prompts: list[str], seeds: list[int], *, split: str,
                 store: EvaluationStore | None = None, batch_size: int = 16,
                 timing_images: int = 4, timing_repeats: int = 3,
                 cache_dir: str | Path | None = None, precision: str = "fp32") -> None:
        from difflab.data.shapes import render_specs
        from difflab.eval.bench import default_cache_dir

        self.target, self.reference = target, reference
        # paired metrics compare to the reference; accuracy and FD come along for the report
        self.metrics = tuple(dict.fromkeys(metrics))
        self.specs, self.prompts, self.seeds, self.split = specs, prompts, seeds, split
        self.store = store if store is not None else EvaluationStore(None)
        self.batch_size, self.timing_images = batch_size, timing_images
        self.timing_repeats, self.precision = timing_repeats, precision
        cache = Path(cache_dir) if cache_dir else default_cache_dir()
        self.ref_images, _ = reference_images(target, self.point(reference), prompts, seeds,
                                              batch_size, cache)
        self.real = render_specs(specs, seeds, size=self.ref_images.shape[1])
        self._real_feats: np.ndarray | None = None
        self._nets: dict[str, Any] = {}
        self.evaluated = 0  # evaluations computed (not read from the store)

    def _images_key(self, n: int) -> dict[str, Any]:
        return {"split": self.split, "prompts": self.prompts[:n], "seeds": self.seeds[:n],
                "metrics": list(self.metrics), "reference": self.reference.key(),
                "precision": self.precision}

    def _score(self, images: np.ndarray, n: int) -> dict[str, Any]:
        from difflab.eval.bench import features_of

        feats, real = features_of(self.metrics, {"x": images}, self.real[:n])
        quality, _ = score_quality(self.metrics, images, self.specs[:n], feats.get("x"), real,
                                   self.ref_images[:n])
        return quality

    def reference_quality(self, images: int) -> dict[str, float]:
        quality = self._score(self.ref_images[:images], images)
        return {k: float(v) for k, v in quality.items() if not isinstance(v, list)}

    def point(self, candidate: Candidate) -> dict[str, Any]:
        """The candidate as a bench point at the evaluator's precision; quantized networks are
        made once per recipe (the target keeps them by point name)."""
        point = candidate.point(f"quant-{candidate.quant}" if candidate.quant else None)
        point["sample"] = {**point.get("sample", {}), "precision": self.precision}
        return point

    def generate(self, candidate: Candidate, prompts: Sequence[str],
                 seeds: Sequence[int]) -> np.ndarray:
        return generate_all(self.target, self.point(candidate), prompts, seeds, self.batch_size)

    def evaluate(self, candidate: Candidate, images: int) -> Evaluation:
        key = self.store.key(self.target.identity, candidate.key(), self._images_key(images))
        hit = self.store.get(key)
        if hit is not None:
            return Evaluation(candidate, images, hit["quality"], hit["seconds_per_image"],
                              cached=True, passed=hit.get("passed", []))
        if candidate.quant:  # calibration is a one-off per recipe, not the configuration's time
            self.target.network(self.point(candidate))
        start = time.perf_counter()
        out = self.generate(candidate, self.prompts[:images], self.seeds[:images])
        seconds = (time.perf_counter() - start) / images
        quality = self._score(out, images)
        passed = [int(v) for v in quality.get("passed", [])]
        scalars = {k: float(v) for k, v in quality.items() if not isinstance(v, list)}
        self.store.put(key, {"quality": scalars, "seconds_per_image": seconds,
                             "passed": passed, "label": candidate.label()})
        self.evaluated += 1
        return Evaluation(candidate, images, scalars, seconds, passed=passed)

    def time_ratios(self, candidates: Sequence[Candidate]) -> dict[str, dict[str, Any]]:
        """Round-robin timing of the reference and `candidates` on one batch of
        `timing_images` images; each candidate's median time over the reference's."""
        from difflab.eval.cost import time_interleaved

        n = self.timing_images
        prompts, seeds = self.prompts[:n], self.seeds[:n]
        todo = {"reference": self.reference, **{c.key(): c for c in candidates}}
        for c in todo.values():  # quantize (calibrate) before the clock starts
            self.target.network(self.point(c))
        fns = {k: (lambda c=c: self.generate(c, prompts, seeds)) for k, c in todo.items()}
        timings = time_interleaved(fns, repeats=self.timing_repeats, warmup=1)
        base = timings["reference"]
        out = {}
        for key, t in timings.items():
            if key == "reference":
                continue
            speedup = speedup_interval(t.times, base.times)
            out[key] = {"time_ratio": t.median / base.median, "speedup": base.median / t.median,
                        "latency_s": t.median, "reference_latency_s": base.median,
                        "speedup_interval": [speedup.lo, speedup.hi],
                        "speedup_verdict": speedup_verdict(speedup),
                        "rounds": self.timing_repeats, "images": n}
        return out
