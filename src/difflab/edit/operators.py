"""Linear measurement operators for inverse problems: y = A x + sigma_y * n on images (B, C, H, W).

Each operator gives the forward map `A`, its adjoint `A_T` and a pseudo-inverse `A_pinv` with
A A_pinv A = A, which is what the null-space method needs ("Zero-Shot Image Restoration Using
Denoising Diffusion Null-Space Model", 2023, Sec. 3.1). A new problem is one small class.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F
from torch import Tensor

from difflab.config import ConfigError

PROBLEMS = ("inpaint", "sr2", "sr4", "deblur", "cs:RATIO")


class LinearOperator(ABC):
    """A linear map on images (B, C, H, W) with its adjoint and a pseudo-inverse."""

    name: str = ""

    @abstractmethod
    def A(self, x: Tensor) -> Tensor:
        """The measurement of x."""

    @abstractmethod
    def A_T(self, y: Tensor) -> Tensor:
        """The adjoint: <A x, y> = <x, A_T y>."""

    @abstractmethod
    def A_pinv(self, y: Tensor) -> Tensor:
        """A pseudo-inverse: A A_pinv A = A."""

    def measure(self, x: Tensor, sigma_y: float = 0.0, seed: int = 0) -> Tensor:
        """y = A x + sigma_y n, n standard normal drawn from `seed`."""
        y = self.A(x)
        if sigma_y > 0:
            g = torch.Generator().manual_seed(seed)
            y = y + sigma_y * torch.randn(y.shape, generator=g).to(y)
        return y


class Inpaint(LinearOperator):
    """Keep the pixels where mask = 1 (mask (H, W) or (B, 1, H, W)); A = A_T = A_pinv."""

    name = "inpaint"

    def __init__(self, mask: Tensor) -> None:
        self.mask = mask.float()

    def A(self, x: Tensor) -> Tensor:
        return x * self.mask.to(x)

    A_T = A_pinv = A


def box_mask(size: int, frac: float = 0.5) -> Tensor:
    """(size, size) mask that hides a centred square of side frac * size (1 = observed)."""
    mask = torch.ones(size, size)
    side = round(frac * size)
    lo = (size - side) // 2
    mask[lo:lo + side, lo:lo + side] = 0
    return mask


class SuperResolution(LinearOperator):
    """Average-pool by `factor`; A A_T = I / factor^2, so A_pinv = factor^2 A_T (nearest)."""

    def __init__(self, factor: int) -> None:
        self.factor = factor
        self.name = f"sr{factor}"

    def A(self, x: Tensor) -> Tensor:
        return F.avg_pool2d(x, self.factor)

    def A_T(self, y: Tensor) -> Tensor:
        f = self.factor
        return y.repeat_interleave(f, -2).repeat_interleave(f, -1) / f**2

    def A_pinv(self, y: Tensor) -> Tensor:
        return self.A_T(y) * self.factor**2


class Deblur(LinearOperator):
    """Circular Gaussian blur, diagonal in Fourier space; frequencies whose gain is below `tol`
    are cut (part of A), so the pseudo-inverse divides only by gains >= tol."""

    def __init__(self, size: int, std: float = 1.5, tol: float = 1e-2) -> None:
        self.name = "deblur"
        f = torch.fft.fftfreq(size, dtype=torch.float64)  # cycles per pixel
        g = torch.exp(-2 * (math.pi * std * f) ** 2)  # transform of a unit-sum Gaussian
        gain = g[:, None] * g[None, :]  # (H, W), real and symmetric
        self.gain = torch.where(gain >= tol, gain, torch.zeros_like(gain))

    def _apply(self, x: Tensor, gain: Tensor) -> Tensor:
        out = torch.fft.ifft2(torch.fft.fft2(x.double()) * gain.to(x.device)).real
        return out.to(x.dtype)

    def A(self, x: Tensor) -> Tensor:
        return self._apply(x, self.gain)

    A_T = A  # a real, symmetric transfer function: the blur is self-adjoint

    def A_pinv(self, y: Tensor) -> Tensor:
        inv = torch.where(self.gain > 0, 1 / self.gain.clamp(min=1e-30),
                          torch.zeros_like(self.gain))
        return self._apply(y, inv)


class CompressedSensing(LinearOperator):
    """m = ratio * n rows of a seeded random orthogonal matrix acting on the flattened image:
    orthonormal rows, so A_pinv = A_T."""

    def __init__(self, shape: tuple[int, int, int], ratio: float, seed: int = 0) -> None:
        if not 0 < ratio <= 1:
            raise ConfigError(f"compressed-sensing ratio must be in (0, 1], got {ratio!r}")
        n = math.prod(shape)
        g = torch.Generator().manual_seed(seed)
        m = max(1, round(ratio * n))
        # orthonormal columns of a Gaussian (n, m) matrix: the rows of a Haar-random orthogonal
        q, _ = torch.linalg.qr(torch.randn(n, m, generator=g, dtype=torch.float64))
        self.matrix = q.T.float()  # (m, n)
        self.shape = shape
        self.name = f"cs:{ratio:g}"

    def A(self, x: Tensor) -> Tensor:
        return x.flatten(1) @ self.matrix.to(x).T  # (B, m)

    def A_T(self, y: Tensor) -> Tensor:
        return (y @ self.matrix.to(y)).reshape(-1, *self.shape)

    A_pinv = A_T


def make_operator(problem: str, shape: tuple[int, int, int], seed: int = 0) -> LinearOperator:
    """The operator named `problem` (inpaint, sr2, sr4, deblur, cs:RATIO) for images `shape`."""
    size = shape[-1]
    if problem == "inpaint":
        return Inpaint(box_mask(size))
    if problem in ("sr2", "sr4"):
        factor = int(problem[2:])
        if size % factor:
            raise ConfigError(f"{problem} needs an image side divisible by {factor}, got {size}")
        return SuperResolution(factor)
    if problem == "deblur":
        return Deblur(size)
    if problem.startswith("cs:"):
        try:
            ratio = float(problem[3:])
        except ValueError:
            raise ConfigError(f"bad compressed-sensing ratio in {problem!r}; "
                              "write e.g. cs:0.25") from None
        return CompressedSensing(shape, ratio, seed)
    raise ConfigError(f"unknown problem {problem!r}; valid: {', '.join(PROBLEMS)}")
