"""A tiny real bench target: the exact denoiser of each prompt's empirical distribution of
K renders (plus a small untrained conv), sampled with Euler or Heun on a Karras schedule
("Elucidating the Design Space of Diffusion-Based Generative Models", 2022).

Run it as a script to bench it: `python tests/eval_bench/tiny_target.py --out DIR`.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from difflab.data.shapes import load_suite, render_spec

SIGMA_MIN, SIGMA_MAX = 0.02, 20.0
RENDERS_PER_PROMPT = 8


class MixtureDenoiser(nn.Module):
    """E[x0 | x] for x0 uniform over a bank of renders, plus a conv term that fades as sigma -> 0.

    Few or stale steps land between renders (blurred, doubled objects), as real models do.
    """

    def __init__(self, seed: int = 0, width: int = 8) -> None:
        super().__init__()
        with torch.random.fork_rng():  # seeded initialisation without touching global state
            torch.manual_seed(seed)
            self.net = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.SiLU(),
                                     nn.Conv2d(width, 3, 3, padding=1))

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
        # x: (B, 3, H, W); bank: (B, K, 3, H, W) renders in [-1, 1]; sigma: scalar tensor.
        b, k = bank.shape[:2]
        flat_x, flat_r = x.reshape(b, 1, -1), bank.reshape(b, k, -1)
        # -|x - r_k|^2 / (2 sigma^2) up to a k-independent term, as a batched matmul: (B, 1, K).
        logits = (flat_x @ flat_r.transpose(1, 2) - 0.5 * (flat_r**2).sum(-1)[:, None]) / sigma**2
        denoised = (logits.softmax(-1) @ flat_r).reshape_as(x)
        c_in = 1 / torch.sqrt(1 + sigma**2)
        return denoised + 0.05 * torch.tanh(self.net(x * c_in)) * sigma / (1 + sigma)


def get_sigmas_karras(n: int, rho: float = 7.0) -> torch.Tensor:
    """Karras et al. 2022 noise levels (n,), followed by a final 0."""
    ramp = torch.linspace(0, 1, n)
    lo, hi = SIGMA_MIN ** (1 / rho), SIGMA_MAX ** (1 / rho)
    return torch.cat([(hi + ramp * (lo - hi)) ** rho, torch.zeros(1)])


def sample(model, x: torch.Tensor, sigmas: torch.Tensor, second_order: bool,
           reuse_every: int) -> torch.Tensor:
    """Euler (or Heun, Algorithm 1 of Karras et al. 2022); reuse_every > 1 skips evaluations."""
    denoised = None
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        if denoised is None or i % reuse_every == 0:  # a toy feature cache: reuse `denoised`
            denoised = model(x, sigma)
        d = (x - denoised) / sigma
        x_next = x + d * (sigma_next - sigma)
        if second_order and sigma_next > 0:
            d_next = (x_next - model(x_next, sigma_next)) / sigma_next
            x_next = x + (d + d_next) / 2 * (sigma_next - sigma)
        x = x_next
    return x


class TinyTarget:
    """BenchTarget over the shapes world's prompts; `points_seen` records what it was given."""

    def __init__(self, size: int = 32, seed: int = 0) -> None:
        self.identity = f"tiny-target-v1-size{size}-seed{seed}"
        self.size = size
        self.denoiser = MixtureDenoiser(seed)
        self.specs = {s.text: s for s in load_suite("all")}
        self._banks: dict[str, torch.Tensor] = {}
        self.points_seen: list[dict[str, Any]] = []

    def network(self, point: Mapping[str, Any]) -> nn.Module:
        return self.denoiser

    def _bank(self, prompt: str) -> torch.Tensor:
        """K renders of the prompt (K, 3, H, W) in [-1, 1]: the distribution the model 'learnt'."""
        if prompt not in self._banks:
            spec = self.specs[prompt]
            renders = [render_spec(spec, self.size, seed=10_000 + 100 * spec.seed + k)[0]
                       for k in range(RENDERS_PER_PROMPT)]
            self._banks[prompt] = torch.from_numpy(np.stack(renders)).permute(0, 3, 1, 2)
        return self._banks[prompt].float() / 127.5 - 1

    @torch.no_grad()
    def generate(self, point: Mapping[str, Any], prompts: Sequence[str],
                 seeds: Sequence[int]) -> np.ndarray:
        self.points_seen.append(dict(point))
        cond = torch.stack([self._bank(p) for p in prompts])  # (B, K, 3, H, W)
        uncond = torch.full_like(cond, -0.84)  # "no prompt": the plain background
        scale = point.get("cfg_scale", 1.0)

        def model(x, sigma):
            # Classifier-free guidance (Ho & Salimans, 2022) only when it changes the result.
            if scale == 1.0:
                return self.denoiser(x, sigma, cond)
            both = self.denoiser(torch.cat([x, x]), sigma, torch.cat([cond, uncond]))
            c, u = both.chunk(2)
            return u + scale * (c - u)

        # One generator per image, so an image does not depend on the rest of the batch.
        noise = torch.stack([torch.randn(3, self.size, self.size,
                                         generator=torch.Generator().manual_seed(s))
                             for s in seeds])
        sigmas = get_sigmas_karras(point["steps"])
        second_order = {"euler": False, "heun": True}[point.get("sampler", "euler")]
        reuse = int(point.get("accel", {}).get("reuse_every", 1))
        x = sample(model, noise * sigmas[0], sigmas, second_order, reuse)
        images = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return images.permute(0, 2, 3, 1).numpy()


GRID_TOML = """
baseline = "euler-12"
suite = "single"
max_prompts = {max_prompts}
seeds_per_prompt = 2
batch_size = 8
timing_repeats = {repeats}
timing_warmup = 1
strip_images = 8

[reference]
name = "heun-100"
sampler = "heun"
steps = 100

[[points]]
name = "euler-12"
sampler = "euler"
steps = 12

[[points]]
name = "euler-4"
sampler = "euler"
steps = 4

[[points]]
name = "heun-6"
sampler = "heun"
steps = 6

[[points]]
name = "euler-12-cfg3"
sampler = "euler"
steps = 12
cfg_scale = 3.0

[[points]]
name = "euler-12-reuse2"
sampler = "euler"
steps = 12
accel = {{ reuse_every = 2 }}
"""


def main() -> None:
    from difflab.eval.bench import run_bench

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--max-prompts", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    grid = out / "grid.toml"
    grid.write_text(GRID_TOML.format(max_prompts=args.max_prompts, repeats=args.repeats))
    result = run_bench(TinyTarget(), grid, out, cache_dir=out / "cache")
    print(Path(result.files["table"]).read_text())
    cached = result.reference["cached"] if result.reference else None
    print(f"reference cached: {cached}; wrote {', '.join(sorted(result.files.values()))}")


if __name__ == "__main__":
    main()
