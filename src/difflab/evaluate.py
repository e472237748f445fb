"""Score a pipeline on the shapes prompt suites: images, evaluator verdicts, FD to real renders."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from difflab.data.world import PromptSpec


@dataclass
class SuiteResult:
    """Generated images with their specs, the evaluator's report and FD to real renders."""

    suite: str
    specs: list[PromptSpec]
    seeds: list[int]
    images: np.ndarray  # (N, H, W, 3) uint8
    report: Any  # difflab.eval.shapeeval.ShapeEvalReport
    fd: float
    config: dict[str, Any]

    def metrics(self) -> dict[str, Any]:
        return {"suite": self.suite, "n_images": len(self.images),
                "accuracy": self.report.overall, "per_category": self.report.per_category,
                "criteria": self.report.criteria, "fd": self.fd, "sample_config": self.config}

    def table(self) -> str:
        """A plain-text table: accuracy per category, overall, FD."""
        rows = [(c, f"{100 * a:5.1f}%") for c, a in self.report.per_category.items()]
        rows += [("overall", f"{100 * self.report.overall:5.1f}%"), ("FD", f"{self.fd:7.2f}")]
        width = max(len(r[0]) for r in rows)
        return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def suite_prompts(suite: str, seeds_per_prompt: int = 1) -> tuple[list[PromptSpec], list[int]]:
    """The suite's specs, one per image, with their seeds (`difflab.data.suites.suite_seeds`)."""
    from difflab.data.suites import expand_suite, load_suite

    if seeds_per_prompt < 1:
        raise ValueError(f"seeds_per_prompt must be >= 1, got {seeds_per_prompt}")
    return expand_suite(load_suite(suite), seeds_per_prompt)


def score_images(images: np.ndarray, specs: list[PromptSpec], seeds: list[int]) -> tuple:
    """(evaluator report, FD to real renders of the same specs and seeds)."""
    from difflab.data.shapes import render_specs
    from difflab.eval.features import extract_features, frechet_distance
    from difflab.eval.shapeeval import evaluate

    report = evaluate(images, specs)
    real = render_specs(specs, seeds, images.shape[1])
    fd = frechet_distance(extract_features(images), extract_features(real))
    return report, fd


def evaluate_suite(pipe: Any, suite: str, config: Any, seeds_per_prompt: int = 1,
                   progress: bool = True) -> SuiteResult:
    """Sample every prompt of `suite` with its fixed seeds and score the images."""
    from difflab.config import to_dict

    specs, seeds = suite_prompts(suite, seeds_per_prompt)
    images = pipe.generate([s.text for s in specs], seeds, config, progress=progress)
    report, fd = score_images(images, specs, seeds)
    return SuiteResult(suite, specs, seeds, images, report, fd, to_dict(config))


def marked_grid(result: SuiteResult, category: str, scale: int = 3, ncol: int = 12):
    """A grid of one category's images, each caption prefixed with a pass/fail mark."""
    from difflab.data.grid import make_grid

    idx = [i for i, s in enumerate(result.specs) if s.category == category]
    labels = [("PASS " if result.report.prompts[i].passed else "FAIL ") + result.specs[i].text
              for i in idx]
    return make_grid(result.images[idx], labels=labels, ncol=ncol, scale=scale)


def write_suite_outputs(result: SuiteResult, out: str | Path) -> Path:
    """metrics.json, verdicts.json and one marked grid PNG per category, in `out`."""
    from difflab.io import atomic_write, write_json

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "metrics.json", result.metrics())
    write_json(out / "verdicts.json", result.report.to_dict()["prompts"])
    for cat in result.report.per_category:
        atomic_write(out / f"grid_{cat}.png",
                     lambda p, c=cat: marked_grid(result, c).save(p, format="PNG"))
    return out
