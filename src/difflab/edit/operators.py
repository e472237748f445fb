"""Linear measurement operators y = A x + n for inverse problems, with adjoint and pseudo-inverse.

An operator acts on images x (B, C, H, W) in [-1, 1] and has `A(x)`, its adjoint `A_T(y)`
(<A x, y> = <x, A_T y>) and the Moore-Penrose pseudo-inverse `pinv(y)` where it is known in
closed form, so that `project(x, y) = A⁺ y + (I - A⁺ A) x` (DDNM's range-null-space step) is
exact. A new problem is one small class registered under a name; `make_operator("sr4", shape)`
builds one from the spec strings the command line and the benchmarks use:

    inpaint[:missing fraction, 0.7]   sr2, sr4 (average pooling)
    deblur[:sigma px, 2.0]            cs[:ratio, 0.25]
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from difflab.config import ConfigError
from difflab.registry import Registry

PROBLEMS: Registry = Registry("inverse problem")
SPEC = re.compile(r"^(?P<name>[a-z]+?)(?P<factor>\d+)?(?::(?P<value>[0-9.eE+-]+))?$")


class LinearOperator(ABC):
    """A linear measurement A on (B, C, H, W) images; subclasses give A, A_T and pinv."""

    name: str = ""
    baselines: tuple[str, ...] = ()  # classical reconstructions to compare with (restore.py)
    singular: float = 1.0  # the singular value of A where all are equal (Blur: per frequency)

    def __init__(self, shape: tuple[int, int, int]) -> None:
        self.shape = tuple(shape)  # (C, H, W) of the images it measures

    @abstractmethod
    def A(self, x: Tensor) -> Tensor:
        """The measurement of x (B, C, H, W)."""

    @abstractmethod
    def A_T(self, y: Tensor) -> Tensor:
        """The adjoint: <A x, y> = <x, A_T y> for every x, y."""

    @abstractmethod
    def pinv(self, y: Tensor) -> Tensor:
        """The pseudo-inverse A⁺ y (the least-norm x with A x = y where y is in A's range)."""

    def project(self, x: Tensor, y: Tensor, budget: float | None = None) -> Tensor:
        """A⁺ y + (I - A⁺ A) x, whose measurement is y ("Zero-Shot Image Restoration Using
        Denoising Diffusion Null-Space Model", 2023). With a noise `budget` b (the noise std
        the step may add, per unit of measurement noise) each singular direction s is
        corrected by lambda = min(1, b s), so that the noise A⁺ carries, std lambda / s,
        stays within it (DDNM+, Eq. 19); operators with one singular value say it in
        `singular`."""
        correction = self.pinv(self.A(x) - y)
        if budget is None:
            return x - correction
        return x - min(1.0, budget * self.singular) * correction

    def measure(self, x: Tensor, sigma_y: float = 0.0, seed: int = 0) -> Tensor:
        """y = A x + sigma_y n, with n standard normal drawn from `seed`."""
        y = self.A(x)
        if sigma_y > 0:
            g = torch.Generator().manual_seed(seed)
            y = y + sigma_y * torch.randn(y.shape, generator=g).to(y)
        return y

    def describe(self) -> str:
        return self.name

    def check_measurement(self, y: Tensor) -> None:
        """Raise a ConfigError unless y has the shape this operator's measurements have."""
        want = tuple(self.A(torch.zeros(1, *self.shape)).shape[1:])
        if tuple(y.shape[1:]) != want:
            raise ConfigError(f"{self.name}: measurement of shape {tuple(y.shape[1:])}, but "
                              f"this problem measures {want} from {self.shape} images")


class Inpaint(LinearOperator):
    """Keep the pixels where `mask` (H, W) is True; y is the image with the rest zeroed."""

    baselines = ("nearest",)

    def __init__(self, shape: tuple[int, int, int], mask: Tensor) -> None:
        super().__init__(shape)
        if tuple(mask.shape) != tuple(shape[1:]):
            raise ConfigError(f"inpainting mask of shape {tuple(mask.shape)} does not match "
                              f"the {shape[1]}x{shape[2]} image")
        self.mask = mask.bool()
        self.name = f"inpaint ({100 * (1 - self.mask.float().mean()):.0f}% missing)"

    def A(self, x: Tensor) -> Tensor:
        return x * self.mask.to(x)

    def A_T(self, y: Tensor) -> Tensor:
        return y * self.mask.to(y)

    def pinv(self, y: Tensor) -> Tensor:
        return y * self.mask.to(y)


class Downsample(LinearOperator):
    """Super-resolution: A = f x f average pooling; A A_T = I / f^2, so A⁺ = f^2 A_T = nearest
    upsampling."""

    baselines = ("bicubic",)

    def __init__(self, shape: tuple[int, int, int], factor: int) -> None:
        super().__init__(shape)
        if factor < 2 or shape[1] % factor or shape[2] % factor:
            raise ConfigError(f"sr factor {factor} must be >= 2 and divide the image side "
                              f"{shape[1]}x{shape[2]}")
        self.factor = factor
        self.singular = 1.0 / factor  # A A_T = I / f^2
        self.name = f"sr x{factor}"

    def A(self, x: Tensor) -> Tensor:
        return F.avg_pool2d(x, self.factor)

    def A_T(self, y: Tensor) -> Tensor:
        return self.pinv(y) / self.factor**2

    def pinv(self, y: Tensor) -> Tensor:
        return F.interpolate(y, scale_factor=self.factor, mode="nearest")


class Blur(LinearOperator):
    """Gaussian blur of `sigma` px with circular boundaries, diagonal in the 2-D DFT:
    A = F⁻¹ diag(K) F; A⁺ inverts the frequencies where K > `cutoff` and zeroes the rest (the
    pseudo-inverse of the blur with its smaller singular values counted as lost: inverting
    them would amplify float32 rounding by over 1/cutoff)."""

    baselines = ("wiener",)

    def __init__(self, shape: tuple[int, int, int], sigma: float, cutoff: float = 1e-3) -> None:
        super().__init__(shape)
        if not 0 < sigma <= 4:
            raise ConfigError(f"deblur sigma must be in (0, 4] px, got {sigma}")
        _, h, w = shape
        fy = torch.fft.fftfreq(h, dtype=torch.float64)[:, None]  # cycles per pixel
        fx = torch.fft.rfftfreq(w, dtype=torch.float64)[None, :]
        # the DFT of a sampled, wrapped Gaussian is (to double precision) a Gaussian in frequency
        self.K = torch.exp(-2 * math.pi**2 * sigma**2 * (fx**2 + fy**2))  # (H, W//2+1), real
        self.K_pinv = torch.where(self.K > cutoff, 1 / self.K, torch.zeros_like(self.K))
        self.sigma = sigma
        self.name = f"deblur (Gaussian sigma {sigma:g} px)"

    def _filter(self, x: Tensor, k: Tensor) -> Tensor:
        X = torch.fft.rfft2(x.double())
        return torch.fft.irfft2(X * k, s=x.shape[-2:]).to(x.dtype)

    def A(self, x: Tensor) -> Tensor:
        return self._filter(x, self.K)

    def A_T(self, y: Tensor) -> Tensor:
        return self._filter(y, self.K)  # a real, even kernel: the adjoint is the blur itself

    def pinv(self, y: Tensor) -> Tensor:
        return self._filter(y, self.K_pinv)

    def project(self, x: Tensor, y: Tensor, budget: float | None = None) -> Tensor:
        if budget is None:
            return super().project(x, y)
        lam = torch.clamp(budget * self.K, max=1.0)  # per frequency: the singular values
        return x - self._filter(self.A(x) - y, self.K_pinv * lam)

    def wiener(self, y: Tensor, reg: float) -> Tensor:
        """Wiener / Tikhonov deconvolution K / (K^2 + reg) (the classical baseline)."""
        return self._filter(y, self.K / (self.K**2 + reg))


class CompressedSensing(LinearOperator):
    """m = ratio x n random measurements of the flattened image (n = C H W): the rows of A
    are orthonormal (a Gaussian matrix's QR), so A A_T = I and A⁺ = A_T."""

    baselines = ("zero-fill", "tv")

    def __init__(self, shape: tuple[int, int, int], ratio: float, seed: int = 0) -> None:
        super().__init__(shape)
        n = math.prod(shape)
        if not 0 < ratio < 1:
            raise ConfigError(f"cs ratio must be in (0, 1), got {ratio}")
        m = max(1, round(ratio * n))
        g = torch.Generator().manual_seed(seed)
        q, _ = torch.linalg.qr(torch.randn(n, m, generator=g, dtype=torch.float64))
        self.phi = q.T.contiguous().float()  # (m, n), orthonormal rows
        self.ratio = ratio
        self.name = f"compressed sensing ({m} of {n} numbers, ratio {ratio:g})"

    def A(self, x: Tensor) -> Tensor:
        return x.flatten(1) @ self.phi.to(x).T  # (B, m)

    def A_T(self, y: Tensor) -> Tensor:
        return (y @ self.phi.to(y)).view(-1, *self.shape)

    def pinv(self, y: Tensor) -> Tensor:
        return self.A_T(y)


def random_pixel_mask(shape: tuple[int, int, int], missing: float, seed: int = 0) -> Tensor:
    """(H, W) bool, True = known: each pixel missing with probability `missing`."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape[1:], generator=g) >= missing


Builder = Callable[[tuple[int, int, int], "int | None", "float | None", int], LinearOperator]


@PROBLEMS.register("inpaint")
def _inpaint(shape, factor, value, seed) -> LinearOperator:
    missing = 0.7 if value is None else value
    if not 0 < missing < 1:
        raise ConfigError(f"inpaint: the missing fraction must be in (0, 1), got {missing}")
    return Inpaint(shape, random_pixel_mask(shape, missing, seed))


@PROBLEMS.register("sr")
def _sr(shape, factor, value, seed) -> LinearOperator:
    return Downsample(shape, factor or 4)


@PROBLEMS.register("deblur")
def _deblur(shape, factor, value, seed) -> LinearOperator:
    return Blur(shape, 2.0 if value is None else value)


@PROBLEMS.register("cs")
def _cs(shape, factor, value, seed) -> LinearOperator:
    return CompressedSensing(shape, 0.25 if value is None else value, seed)


def make_operator(spec: str, shape: tuple[int, int, int], seed: int = 0) -> LinearOperator:
    """The operator a spec names: inpaint[:missing], sr2, sr4, deblur[:sigma], cs[:ratio]."""
    m = SPEC.match(spec.strip())
    if m is None:
        raise ConfigError(f"problem {spec!r} is not NAME[FACTOR][:VALUE]; valid names: "
                          f"{', '.join(PROBLEMS.names())} (e.g. sr4, inpaint:0.7, cs:0.25)")
    factor = int(m["factor"]) if m["factor"] else None
    if factor is not None and m["name"] != "sr":
        raise ConfigError(f"problem {spec!r}: only sr takes a factor (sr2, sr4)")
    value = float(m["value"]) if m["value"] else None
    if value is not None and m["name"] == "sr":
        raise ConfigError(f"problem {spec!r}: sr takes its factor as sr2 or sr4, not a value")
    return PROBLEMS.get(m["name"])(tuple(shape), factor, value, seed)
