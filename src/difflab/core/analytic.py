"""Data distributions whose exact denoiser is known in closed form, for tests and baselines.

An isotropic Gaussian mixture p(x0) = sum_k w_k N(mu_k, s_k^2 I): under x = alpha x0 + sigma n
the marginal is sum_k w_k N(alpha mu_k, (alpha^2 s_k^2 + sigma^2) I) and
E[x0 | x] = sum_k p(k | x) (mu_k + alpha s_k^2 / (alpha^2 s_k^2 + sigma^2) (x - alpha mu_k))
(Bayes for linear-Gaussian models; used as a test oracle in "Elucidating the Design Space...",
2022).
"""

from __future__ import annotations

import torch
from torch import Tensor

from difflab.core.denoisers import Denoiser, append_dims


class GaussianMixture:
    """Isotropic Gaussian mixture on R^D: means (K, D), stds (K,), weights (K,)."""

    def __init__(self, means: Tensor, stds: Tensor, weights: Tensor | None = None) -> None:
        self.means = means.double()
        self.stds = stds.double()
        k = means.shape[0]
        w = torch.full((k,), 1.0 / k, dtype=torch.float64) if weights is None else weights
        self.weights = w.double() / w.sum()

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """(n, D) samples."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.means.shape[1], generator=generator, dtype=torch.float64)
        return self.means[k] + self.stds[k, None] * z

    def posterior_mean(self, x: Tensor, sigma: Tensor, alpha: Tensor) -> Tensor:
        """E[x0 | alpha x0 + sigma noise = x] for x (B, D), sigma and alpha (B,)."""
        xd = x.double()
        s2 = self.stds**2  # (K,)
        a, sg = alpha.double()[:, None], sigma.double()[:, None]  # (B, 1)
        var = a**2 * s2 + sg**2  # (B, K) marginal variance of each component
        diff = xd[:, None, :] - a[..., None] * self.means  # (B, K, D)
        dim = x.shape[1]
        log_p = (self.weights.log() - 0.5 * dim * var.log()
                 - 0.5 * (diff**2).sum(-1) / var)  # (B, K)
        resp = (log_p - log_p.logsumexp(1, keepdim=True)).exp()  # p(k | x)
        gain = (a * s2 / var)[..., None]  # (B, K, 1)
        mean_k = self.means + gain * diff  # (B, K, D)
        return (resp[..., None] * mean_k).sum(1).to(x.dtype)


class ExactDenoiser(Denoiser):
    """The optimal denoiser of a GaussianMixture in VE-form (x = x0 + sigma noise)."""

    def __init__(self, data: GaussianMixture) -> None:
        super().__init__()
        self.data = data
        self.calls = 0  # model evaluations, for NFE checks

    def forward(self, x: Tensor, sigma: Tensor, **cond: Tensor) -> Tensor:
        self.calls += 1
        sigma = sigma.expand(x.shape[0])
        flat = x.reshape(x.shape[0], -1)
        return self.data.posterior_mean(flat, sigma, self.alpha(sigma)).reshape(x.shape)


class ExactFlowDenoiser(ExactDenoiser):
    """The optimal denoiser of a GaussianMixture in the flow geometry x = (1 - t) x0 + t noise."""

    def alpha(self, sigma: Tensor) -> Tensor:
        return 1 - sigma


def gaussian_ode_solution(data: GaussianMixture, x: Tensor, alpha: Tensor, sigma: Tensor,
                          alpha_to: Tensor, sigma_to: Tensor) -> Tensor:
    """Exact probability-flow ODE map from level (alpha, sigma) to (alpha_to, sigma_to) for a
    single Gaussian: the standardised coordinate (x - alpha mu) / sqrt(alpha^2 s^2 + sigma^2) is
    invariant along the flow. Scalars are (B,)."""
    if data.means.shape[0] != 1:
        raise ValueError(f"closed-form ODE map needs one component, got {data.means.shape[0]}")
    mu, s2 = data.means[0], data.stds[0] ** 2
    a, sg = append_dims(alpha.double(), x.ndim), append_dims(sigma.double(), x.ndim)
    a2, sg2 = append_dims(alpha_to.double(), x.ndim), append_dims(sigma_to.double(), x.ndim)
    z = (x.double() - a * mu) / (a**2 * s2 + sg**2).sqrt()
    return (a2 * mu + (a2**2 * s2 + sg2**2).sqrt() * z).to(x.dtype)
