"""A feature space for Fréchet distance in the shapes world: a tiny CNN trained on renders.

KID and precision/recall (eval/metrics.py) use the same features.

The network (`ShapeFeatureNet`) is trained by `scripts/train_shape_features.py` to predict
what is in a render (how many objects of each shape and colour) and whether and how the
render was degraded (blur, noise, blockiness, colour shift), so that its pooled features see
both content and image quality. Its weights ship in `difflab/assets/`.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import linalg
from torch import nn

from difflab.io import load_tensors

ASSETS = Path(__file__).resolve().parent.parent / "assets"
WEIGHTS_FILE = "shape_features.safetensors"
CONFIG_FILE = "shape_features.json"

# ----------------------------------------------------------------------------- images


def to_uint8_images(images: np.ndarray | torch.Tensor | list) -> np.ndarray:
    """Images as a (N, H, W, 3) uint8 array.

    Accepts uint8 (H, W, 3) / (N, H, W, 3) arrays or tensors, a list of (H, W, 3) uint8 arrays,
    or float tensors/arrays in [-1, 1] shaped (3, H, W) / (N, 3, H, W) (the samplers' output).
    """
    if isinstance(images, list):
        images = np.stack([to_uint8_images(im)[0] for im in images]) if images else np.zeros(
            (0, 1, 1, 3), np.uint8
        )
    if isinstance(images, torch.Tensor):
        if images.dtype == torch.uint8:
            images = images.cpu().numpy()
        else:
            x = images.detach().float().cpu()
            x = x.unsqueeze(0) if x.ndim == 3 else x
            if x.ndim != 4 or x.shape[1] != 3:
                raise ValueError(
                    f"float images must be (N, 3, H, W) in [-1, 1], got {tuple(x.shape)}")
            x = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
            images = x.permute(0, 2, 3, 1).numpy()
    images = np.asarray(images)
    if images.dtype != np.uint8:
        if images.ndim in (3, 4) and images.shape[-3 if images.ndim == 3 else 1] == 3:
            return to_uint8_images(torch.from_numpy(np.ascontiguousarray(images)).float())
        raise ValueError(f"images must be uint8 (N, H, W, 3) or float in [-1, 1] (N, 3, H, W), "
                         f"got dtype {images.dtype} shape {images.shape}")
    images = images[None] if images.ndim == 3 else images
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"uint8 images must be (N, H, W, 3), got shape {images.shape}")
    return images


def _as_float(images: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float32 in [0, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0


def _as_uint8(x: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) float in [0, 1] -> (N, H, W, 3) uint8 (rounded, clipped)."""
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


# ----------------------------------------------------------------------------- degradations


def gaussian_blur(images: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of (N, H, W, 3) uint8 images with std `sigma` pixels."""
    if sigma <= 0:
        return images.copy()
    radius = max(1, int(np.ceil(3 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    x = _as_float(images)  # (N, 3, H, W)
    x = F.pad(x, (radius, radius, radius, radius), mode="replicate")
    x = F.conv2d(x, k.view(1, 1, 1, -1).repeat(3, 1, 1, 1), groups=3)
    x = F.conv2d(x, k.view(1, 1, -1, 1).repeat(3, 1, 1, 1), groups=3)
    return _as_uint8(x)


def add_gaussian_noise(images: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    """Add i.i.d. Gaussian noise of std `sigma` (in [0, 1] units) to uint8 images."""
    g = torch.Generator().manual_seed(seed)
    x = _as_float(images)
    return _as_uint8(x + sigma * torch.randn(x.shape, generator=g))


def blockiness(images: np.ndarray, block: int) -> np.ndarray:
    """Replace each `block`x`block` tile by its mean colour (a coarse compression artefact)."""
    x = _as_float(images)
    h, w = x.shape[-2:]
    small = F.avg_pool2d(x, block, ceil_mode=True)
    return _as_uint8(F.interpolate(small, scale_factor=block, mode="nearest")[..., :h, :w])


def color_shift(images: np.ndarray, shift: float, seed: int = 0) -> np.ndarray:
    """Add one random RGB offset of norm `shift` (in [0, 1] units) per image."""
    g = torch.Generator().manual_seed(seed)
    x = _as_float(images)
    d = torch.randn(x.shape[0], 3, 1, 1, generator=g)
    d = d / d.flatten(1).norm(dim=1).view(-1, 1, 1, 1) * shift
    return _as_uint8(x + d)


# ----------------------------------------------------------------------------- network


class ShapeFeatureNet(nn.Module):
    """A small conv net (in the spirit of the Inception features of FID, Heusel et al. 2017)."""

    def __init__(self, width: int = 32, feature_dim: int = 64, input_size: int = 32,
                 heads: dict[str, int] | None = None) -> None:
        super().__init__()
        self.input_size = input_size
        self.feature_dim = feature_dim
        w = width

        def block(cin: int, cout: int, stride: int) -> nn.Sequential:
            # BatchNorm (running statistics at eval time, so a feature does not depend on the
            # rest of the batch): GroupNorm left this net stuck at its priors in trials.
            return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.BatchNorm2d(cout),
                                 nn.SiLU())

        # 32 -> 32 -> 16 -> 8 -> 4 spatial; then global average pooling.
        self.trunk = nn.Sequential(block(3, w, 1), block(w, 2 * w, 2), block(2 * w, 4 * w, 2),
                                   block(4 * w, 4 * w, 2))
        self.proj = nn.Linear(4 * w, feature_dim)
        self.heads = nn.ModuleDict({k: nn.Linear(feature_dim, n) for k, n in (heads or {}).items()})

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) in [-1, 1] -> (N, feature_dim) pooled features."""
        h = self.trunk(x).mean(dim=(2, 3))  # (N, 4w)
        return self.proj(h)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = F.silu(self.features(x))
        return {k: head(f) for k, head in self.heads.items()}


def prepare(images: np.ndarray, size: int) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, size, size) float in [-1, 1], resized with antialiasing."""
    x = _as_float(images) * 2 - 1
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True,
                          align_corners=False)
    return x


@functools.lru_cache(maxsize=4)
def load_feature_net(directory: str | None = None) -> ShapeFeatureNet:
    """The shipped (or a given folder's) trained feature net, in eval mode; cached."""
    folder = Path(directory) if directory else ASSETS
    cfg_path = folder / CONFIG_FILE
    if not cfg_path.is_file():
        raise FileNotFoundError(f"feature-net config not found: {cfg_path} "
                                "(train one with scripts/train_shape_features.py)")
    cfg = json.loads(cfg_path.read_text())
    net = ShapeFeatureNet(**cfg["model"])
    net.load_state_dict(load_tensors(folder / WEIGHTS_FILE))
    net.eval().requires_grad_(False)
    return net


@torch.no_grad()
def extract_features(images: np.ndarray | torch.Tensor | list, batch_size: int = 256,
                     net: ShapeFeatureNet | None = None) -> np.ndarray:
    """(N, D) float64 features of images (uint8 NHWC or float [-1, 1] NCHW), any resolution."""
    images = to_uint8_images(images)
    net = net if net is not None else load_feature_net()
    out = [net.features(prepare(images[i:i + batch_size], net.input_size)).double().numpy()
           for i in range(0, len(images), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, net.feature_dim))


# ----------------------------------------------------------------------------- distances


def _stats(feats: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    feats = np.asarray(feats, dtype=np.float64)
    if feats.ndim != 2 or len(feats) < 2:
        raise ValueError(f"{name} must be (N >= 2, D) features, got shape {feats.shape}")
    return feats.mean(0), np.atleast_2d(np.cov(feats, rowvar=False))  # (D,), (D, D)


def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (GANs Trained by a
    Two Time-Scale Update Rule Converge to a Local Nash Equilibrium, Heusel et al. 2017).

    d² = |mu_a - mu_b|² + Tr(S_a + S_b - 2 (S_a S_b)^½). Tr((S_a S_b)^½) is computed as
    Tr((S_a^½ S_b S_a^½)^½), whose argument is symmetric PSD, so both square roots come from
    symmetric eigen-decompositions (no complex parts, no sqrtm iteration).
    """
    mu_a, s_a = _stats(feats_a, "feats_a")
    mu_b, s_b = _stats(feats_b, "feats_b")
    if mu_a.shape != mu_b.shape:
        raise ValueError(f"feature dims differ: {mu_a.shape[0]} vs {mu_b.shape[0]}")
    w, v = linalg.eigh(s_a)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T  # S_a^½ (D, D)
    m = root_a @ s_b @ root_a
    m = (m + m.T) / 2  # symmetric up to round-off
    tr_cross = np.sqrt(np.clip(linalg.eigvalsh(m), 0, None)).sum()
    d2 = ((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * tr_cross
    return float(max(d2, 0.0))
