"""Image metrics: PSNR and SSIM against paired references; KID, precision/recall and Fréchet
distance between feature sets; all registered in `METRICS` for the bench runner."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from difflab.registry import Registry


def _as_float_images(images: np.ndarray, data_range: float | None) -> tuple[np.ndarray, float]:
    """(N, H, W, C) or (H, W, C) images as float64 (N, H, W, C), with their value range."""
    x = np.asarray(images)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4:
        raise ValueError(f"expected images (N, H, W, C) or (H, W, C), got shape {x.shape}")
    if data_range is None:
        if np.issubdtype(x.dtype, np.integer):
            data_range = 255.0
        elif float(np.max(x)) > 1.0 + 1e-6:
            raise ValueError(
                "float images with values above 1: pass data_range=255 (or 1.0 for [0, 1])"
            )
        else:
            data_range = 1.0
    return x.astype(np.float64), float(data_range)


def _check_pair(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(f"image shapes differ: {a.shape} vs {b.shape}")


def psnr(a: np.ndarray, b: np.ndarray, data_range: float | None = None) -> np.ndarray:
    """Peak signal-to-noise ratio per image in dB, (N,); inf where the images are equal."""
    x, r = _as_float_images(a, data_range)
    y, _ = _as_float_images(b, r)
    _check_pair(x, y)
    mse = ((x - y) ** 2).reshape(len(x), -1).mean(axis=1)
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(r**2 / mse)


def gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    """Normalised 1-D Gaussian window (size,), as in Wang et al. 2004."""
    t = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(t**2) / (2 * sigma**2))
    return g / g.sum()


def _filter_valid(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filter, 'valid' region only: (B, 1, H, W) -> (B, 1, H-k+1, W-k+1)."""
    k = g.numel()
    x = F.conv2d(x, g.view(1, 1, k, 1))
    return F.conv2d(x, g.view(1, 1, 1, k))


def ssim(
    a: np.ndarray,
    b: np.ndarray,
    data_range: float | None = None,
    win_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> np.ndarray:
    """Mean SSIM per image (N,), Gaussian window, per channel then averaged.

    "Image Quality Assessment: From Error Visibility to Structural Similarity" (Wang et al., 2004).
    """
    x, r = _as_float_images(a, data_range)
    y, _ = _as_float_images(b, r)
    _check_pair(x, y)
    n, h, w, c = x.shape
    if min(h, w) < win_size:
        raise ValueError(f"images {h}x{w} are smaller than the SSIM window {win_size}")
    c1, c2 = (k1 * r) ** 2, (k2 * r) ** 2
    g = torch.from_numpy(gaussian_window(win_size, sigma))
    # (N, H, W, C) -> (N*C, 1, H, W): every channel filtered on its own.
    tx = torch.from_numpy(x).permute(0, 3, 1, 2).reshape(n * c, 1, h, w)
    ty = torch.from_numpy(y).permute(0, 3, 1, 2).reshape(n * c, 1, h, w)
    mu_x, mu_y = _filter_valid(tx, g), _filter_valid(ty, g)
    var_x = _filter_valid(tx * tx, g) - mu_x**2
    var_y = _filter_valid(ty * ty, g) - mu_y**2
    cov = _filter_valid(tx * ty, g) - mu_x * mu_y
    luminance = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
    contrast_structure = (2 * cov + c2) / (var_x + var_y + c2)
    ssim_map = luminance * contrast_structure  # (N*C, 1, H', W')
    return ssim_map.reshape(n, -1).mean(dim=1).numpy()


def _check_features(fa: np.ndarray, fb: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    a = torch.as_tensor(np.asarray(fa), dtype=torch.float64)
    b = torch.as_tensor(np.asarray(fb), dtype=torch.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"expected feature arrays (N, D) and (M, D), got {a.shape} and {b.shape}")
    return a, b


def _mmd2_unbiased(x: torch.Tensor, y: torch.Tensor) -> float:
    """Unbiased MMD^2 with the cubic polynomial kernel k(x, y) = (x.y / d + 1)^3."""
    d = x.shape[1]
    kxx = (x @ x.T / d + 1) ** 3
    kyy = (y @ y.T / d + 1) ** 3
    kxy = (x @ y.T / d + 1) ** 3
    m, n = len(x), len(y)
    # Diagonal terms k(x_i, x_i) are left out so the estimator is unbiased.
    sxx = (kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
    syy = (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
    return float(sxx + syy - 2 * kxy.mean())


def kid(
    fa: np.ndarray,
    fb: np.ndarray,
    n_subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """Kernel Inception Distance (mean, std over random subsets), unbiased MMD^2, cubic kernel.

    "Demystifying MMD GANs" (Binkowski et al., 2018).
    """
    a, b = _check_features(fa, fb)
    size = min(subset_size, len(a), len(b))
    if size < 2:
        raise ValueError(f"KID needs at least 2 samples per set, got {len(a)} and {len(b)}")
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_subsets):
        ia = torch.from_numpy(rng.choice(len(a), size, replace=False))
        ib = torch.from_numpy(rng.choice(len(b), size, replace=False))
        values.append(_mmd2_unbiased(a[ia], b[ib]))
    return float(np.mean(values)), float(np.std(values))


def _knn_radii(x: torch.Tensor, k: int) -> torch.Tensor:
    """Distance from each row of x (N, D) to its k-th nearest other row, (N,)."""
    dist = torch.cdist(x, x)  # (N, N), self-distance 0 sits at rank 0
    return dist.kthvalue(k + 1, dim=1).values


def _coverage(manifold: torch.Tensor, radii: torch.Tensor, queries: torch.Tensor) -> float:
    """Fraction of queries (Q, D) inside any ball (manifold[i], radii[i])."""
    inside = torch.zeros(len(queries), dtype=torch.bool)
    for start in range(0, len(queries), 1024):  # chunks keep the (Q, N) matrix small
        q = queries[start : start + 1024]
        inside[start : start + 1024] = (torch.cdist(q, manifold) <= radii[None, :]).any(dim=1)
    return float(inside.double().mean())


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> tuple[float, float]:
    """k-NN manifold precision and recall of fake features against real ones.

    "Improved Precision and Recall Metric for Assessing Generative Models" (Kynkäänniemi, 2019).
    """
    r, f = _check_features(real, fake)
    if min(len(r), len(f)) <= k:
        raise ValueError(f"precision/recall with k={k} needs more than {k} samples per set")
    precision = _coverage(r, _knn_radii(r, k), f)
    recall = _coverage(f, _knn_radii(f, k), r)
    return precision, recall


# --- registry: what the bench can compute, and from which inputs -----------------------------

MetricInputs = Literal["paired", "features", "specs"]


@dataclass(frozen=True)
class Metric:
    """A bench metric: `fn(generated, reference) -> {name: value}`.

    `inputs` says what the runner passes: "paired" images (N, H, W, 3) uint8 of the same noise,
    "features" (N, D) arrays of generated and real images, or "specs" (images, PromptSpecs).
    `keys` names the values it returns ("accuracy/*": one per prompt category);
    `higher_is_better` applies to every one of them. A value that is a list holds one entry
    per image (the accuracy metric's "passed" verdicts): a detail, not a table column.
    """

    fn: Callable[[Any, Any], dict[str, float]]
    inputs: MetricInputs
    keys: tuple[str, ...]
    higher_is_better: bool

    def produces(self, key: str) -> bool:
        """Whether `key` (e.g. "kid", "accuracy/spatial") is one of this metric's values."""
        return key in self.keys or any(
            k.endswith("/*") and key.startswith(k[:-1]) for k in self.keys
        )


METRICS: Registry[Metric] = Registry("metric")


def register_metric(
    name: str, inputs: MetricInputs, keys: tuple[str, ...], higher_is_better: bool
):
    """Decorator: register `fn(generated, reference) -> dict` as metric `name`."""

    def decorate(fn: Callable[[Any, Any], dict[str, float]]):
        METRICS.register(name)(Metric(fn, inputs, keys, higher_is_better))
        return fn

    return decorate


@register_metric("psnr", "paired", ("psnr", "psnr_identical"), higher_is_better=True)
def _psnr_metric(images: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    # The set's PSNR, from the MSE over all images: per-image PSNR is inf for exact matches,
    # which makes a per-image mean either inf or (skipping them) blind to the matches.
    x, r = _as_float_images(images, None)
    y, _ = _as_float_images(reference, r)
    _check_pair(x, y)
    mse = float(((x - y) ** 2).mean())
    identical = float((psnr(images, reference) == np.inf).sum())
    value = 10.0 * np.log10(r**2 / mse) if mse > 0 else float("inf")
    return {"psnr": float(value), "psnr_identical": identical}


@register_metric("ssim", "paired", ("ssim",), higher_is_better=True)
def _ssim_metric(images: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    return {"ssim": float(ssim(images, reference).mean())}


@register_metric("kid", "features", ("kid", "kid_std"), higher_is_better=False)
def _kid_metric(feats: np.ndarray, real: np.ndarray) -> dict[str, float]:
    mean, std = kid(feats, real, seed=0)
    return {"kid": mean, "kid_std": std}


@register_metric("precision_recall", "features", ("precision", "recall"), higher_is_better=True)
def _pr_metric(feats: np.ndarray, real: np.ndarray) -> dict[str, float]:
    precision, recall = precision_recall(real, feats, k=3)
    return {"precision": precision, "recall": recall}


@register_metric("fd", "features", ("fd",), higher_is_better=False)
def _fd_metric(feats: np.ndarray, real: np.ndarray) -> dict[str, float]:
    # The Fréchet distance lives with the feature extractor (eval/features.py); not duplicated.
    from difflab.eval.features import frechet_distance

    return {"fd": float(frechet_distance(feats, real))}


@register_metric("accuracy", "specs", ("accuracy", "accuracy/*"), higher_is_better=True)
def _accuracy_metric(images: np.ndarray, specs: list) -> dict[str, Any]:
    from difflab.eval.shapeeval import evaluate, specs_vocabulary

    report = evaluate(images, specs, vocabulary=specs_vocabulary(specs))  # world unless novel
    # "passed": each image's verdict, kept beside the table's columns for paired tests.
    return {**shapes_accuracy(report), "passed": [v.passed for v in report.prompts]}


def shapes_accuracy(report: Any) -> dict[str, float]:
    """A `shapeeval.ShapeEvalReport` as {"accuracy": overall, "accuracy/<category>": ...}."""
    out = {"accuracy": float(report.overall)}
    out.update({f"accuracy/{k}": float(v) for k, v in sorted(report.per_category.items())})
    return out
