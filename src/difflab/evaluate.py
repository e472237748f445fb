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
    split: str = "dev"
    fd_floor: float = float("nan")  # FD between two real sets of the same specs and size
    vocabulary: str = "world"  # the evaluator's: "extended" for suites with novel concepts

    def metrics(self) -> dict[str, Any]:
        """Accuracies with 95% Wilson intervals and counts, FD with its real-vs-real floor,
        and every image's verdict (for paired tests between result files)."""
        from difflab.eval.stats import wilson_interval

        flags = [v.passed for v in self.report.prompts]
        cats = {c: [f for f, s in zip(flags, self.specs, strict=True) if s.category == c]
                for c in self.report.per_category}
        return {"suite": self.suite, "split": self.split, "vocabulary": self.vocabulary,
                "n_images": len(self.images),
                "accuracy": self.report.overall, "n_passed": sum(flags),
                "accuracy_interval": list(wilson_interval(sum(flags), len(flags))),
                "per_category": self.report.per_category,
                "per_category_n": {c: len(f) for c, f in cats.items()},
                "per_category_interval": {c: list(wilson_interval(sum(f), len(f)))
                                          for c, f in cats.items()},
                "criteria": self.report.criteria, "fd": self.fd, "fd_floor": self.fd_floor,
                "sample_config": self.config, "seeds": list(self.seeds),
                "passed": [int(f) for f in flags]}

    def table(self) -> str:
        """A plain-text table: accuracy per category with its 95% interval, overall, FD."""
        from difflab.eval.stats import format_accuracy

        m = self.metrics()
        ks = {c: round(a * m["per_category_n"][c]) for c, a in self.report.per_category.items()}
        rows = [(c, format_accuracy(k, m["per_category_n"][c])) for c, k in ks.items()]
        rows += [("overall", format_accuracy(m["n_passed"], m["n_images"])),
                 ("FD", f"{self.fd:.2f} (real-vs-real floor {self.fd_floor:.2f})"),
                 ("split", self.split)]
        width = max(len(r[0]) for r in rows)
        return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def suite_prompts(suite: str, seeds_per_prompt: int = 1,
                  split: str = "dev") -> tuple[list[PromptSpec], list[int]]:
    """The suite's specs, one per image, with their seeds in `split`
    (`difflab.data.suites.suite_seeds`)."""
    from difflab.data.suites import check_split, expand_suite, load_suite

    if seeds_per_prompt < 1:
        raise ValueError(f"seeds_per_prompt must be >= 1, got {seeds_per_prompt}")
    check_split(split, suite)
    return expand_suite(load_suite(suite), seeds_per_prompt, split=split)


# Seeds of the second real set behind the FD floor: half a stride away from every suite seed.
FLOOR_SEED_SHIFT = 50_001


def fd_floor(real_feats: np.ndarray, specs: list[PromptSpec], seeds: list[int],
             size: int) -> float:
    """FD between the real renders' features and a second real set of the same specs and
    count (other seeds): what FD reads for a perfect generator at this sample count."""
    from difflab.data.shapes import render_specs
    from difflab.eval.features import extract_features, frechet_distance

    other = render_specs(specs, [s + FLOOR_SEED_SHIFT for s in seeds], size)
    return float(frechet_distance(real_feats, extract_features(other)))


def score_images(images: np.ndarray, specs: list[PromptSpec], seeds: list[int]) -> tuple:
    """(evaluator report, FD to real renders of the same specs and seeds, FD floor); specs
    naming a novel concept are scored with the evaluator's "extended" vocabulary."""
    from difflab.data.shapes import render_specs
    from difflab.eval.features import extract_features, frechet_distance
    from difflab.eval.shapeeval import evaluate, specs_vocabulary

    report = evaluate(images, specs, vocabulary=specs_vocabulary(specs))
    real = extract_features(render_specs(specs, seeds, images.shape[1]))
    fd = frechet_distance(extract_features(images), real)
    return report, fd, fd_floor(real, specs, seeds, images.shape[1])


def evaluate_suite(pipe: Any, suite: str, config: Any, seeds_per_prompt: int = 1,
                   progress: bool = True, split: str = "dev") -> SuiteResult:
    """Sample every prompt of `suite` with its fixed seeds in `split` and score the images
    (novel-concept suites with the evaluator's "extended" vocabulary)."""
    from difflab.config import to_dict
    from difflab.eval.shapeeval import specs_vocabulary

    specs, seeds = suite_prompts(suite, seeds_per_prompt, split)
    images = pipe.generate([s.text for s in specs], seeds, config, progress=progress)
    report, fd, floor = score_images(images, specs, seeds)
    return SuiteResult(suite, specs, seeds, images, report, fd, to_dict(config), split, floor,
                       specs_vocabulary(specs))


def suite_provenance(pipe: Any, split: str, command: str | None = None) -> dict[str, Any]:
    """The provenance block for results of `pipe`: its checkpoint, hash and stored config."""
    from difflab.eval.commands import checkpoint_identity
    from difflab.eval.provenance import provenance

    source = getattr(pipe, "source", "") or ""
    sha = checkpoint_identity(source) if source and Path(source).exists() else ""
    return provenance(split, source, sha, dict(getattr(pipe, "config", {}) or {}), command)


def marked_grid(result: SuiteResult, category: str, scale: int = 3, ncol: int = 12):
    """A grid of one category's images, each caption prefixed with a pass/fail mark."""
    from difflab.data.grid import make_grid

    idx = [i for i, s in enumerate(result.specs) if s.category == category]
    labels = [("PASS " if result.report.prompts[i].passed else "FAIL ") + result.specs[i].text
              for i in idx]
    return make_grid(result.images[idx], labels=labels, ncol=ncol, scale=scale)


def write_suite_outputs(result: SuiteResult, out: str | Path,
                        provenance: dict[str, Any] | None = None) -> Path:
    """metrics.json (with `provenance` when given), verdicts.json and one marked grid PNG per
    category, in `out`."""
    from difflab.io import atomic_write, write_json

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "metrics.json", {**result.metrics(), "provenance": provenance or {}})
    write_json(out / "verdicts.json", result.report.to_dict()["prompts"])
    for cat in result.report.per_category:
        atomic_write(out / f"grid_{cat}.png",
                     lambda p, c=cat: marked_grid(result, c).save(p, format="PNG"))
    return out
