"""A small KL autoencoder for latent diffusion ("High-Resolution Image Synthesis with Latent
Diffusion Models", 2022; "Auto-Encoding Variational Bayes", 2014): convolutional encoder to a
diagonal Gaussian posterior, decoder back to pixels, L1/L2 reconstruction + weighted KL loss.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from difflab.config import ConfigError, from_dict, to_dict
from difflab.data.shapes_dataset import ShapesConfig, ShapesDataset
from difflab.io import load_tensors, save_tensors
from difflab.limits import check_float
from difflab.models.base import check_choice, check_divisible, check_minimums


@dataclass(frozen=True)
class AutoencoderConfig:
    """Encoder/decoder widths, the spatial downsampling factor and the loss weights."""

    in_channels: int = 3
    latent_channels: int = 4
    downsample_factor: int = 4  # 2, 4 or 8: one strided conv per factor of 2
    base_channels: int = 32
    num_res_blocks: int = 1
    norm_groups: int = 8
    kl_weight: float = 1e-4  # times the KL in nats per pixel value
    recon_loss: Literal["l1", "l2"] = "l1"

    def __post_init__(self) -> None:
        check_minimums(self, {"in_channels": 1, "latent_channels": 1, "base_channels": 1,
                              "num_res_blocks": 1, "norm_groups": 1})
        check_float("kl_weight", self.kl_weight, 0.0)
        check_choice("downsample_factor", self.downsample_factor, (2, 4, 8))
        check_choice("recon_loss", self.recon_loss, ("l1", "l2"))
        for ch in self.channels:
            check_divisible("level channels", ch, "norm_groups", self.norm_groups)

    @property
    def channels(self) -> list[int]:
        levels = int(math.log2(self.downsample_factor)) + 1
        return [self.base_channels * min(2**i, 4) for i in range(levels)]


class DiagonalGaussian(NamedTuple):
    """The posterior q(z | x) = N(mean, exp(logvar)), each (B, z, h, w)."""

    mean: torch.Tensor
    logvar: torch.Tensor

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        noise = torch.randn(self.mean.shape, generator=generator, device=self.mean.device)
        return self.mean + torch.exp(0.5 * self.logvar) * noise.to(self.mean.dtype)

    def kl(self) -> torch.Tensor:
        """KL(q || N(0, I)) summed over latent dims -> (B,)."""
        kl = 0.5 * (self.mean**2 + self.logvar.exp() - 1.0 - self.logvar)
        return kl.flatten(1).sum(dim=1)


class ResnetBlock(nn.Module):
    """GroupNorm-SiLU-conv twice with a residual connection (no time embedding)."""

    def __init__(self, in_ch: int, out_ch: int, groups: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.GroupNorm(groups, in_ch), nn.SiLU(), nn.Conv2d(in_ch, out_ch, 3, padding=1),
            nn.GroupNorm(groups, out_ch), nn.SiLU(), nn.Conv2d(out_ch, out_ch, 3, padding=1),
        )
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.body(x)


class Upsample(nn.Module):
    """Nearest-neighbour x2 then a 3x3 conv."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def _encoder(cfg: AutoencoderConfig) -> nn.Sequential:
    chs, g = cfg.channels, cfg.norm_groups
    layers: list[nn.Module] = [nn.Conv2d(cfg.in_channels, chs[0], 3, padding=1)]
    for i, ch in enumerate(chs):
        for j in range(cfg.num_res_blocks):
            layers.append(ResnetBlock(chs[max(i - 1, 0)] if j == 0 else ch, ch, g))
        if i < len(chs) - 1:
            layers.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
    layers += [ResnetBlock(chs[-1], chs[-1], g), nn.GroupNorm(g, chs[-1]), nn.SiLU(),
               nn.Conv2d(chs[-1], 2 * cfg.latent_channels, 3, padding=1)]
    return nn.Sequential(*layers)


def _decoder(cfg: AutoencoderConfig) -> nn.Sequential:
    chs, g = cfg.channels, cfg.norm_groups
    layers: list[nn.Module] = [nn.Conv2d(cfg.latent_channels, chs[-1], 3, padding=1),
                               ResnetBlock(chs[-1], chs[-1], g)]
    for i in reversed(range(len(chs))):
        for j in range(cfg.num_res_blocks + 1):
            layers.append(ResnetBlock(chs[min(i + 1, len(chs) - 1)] if j == 0 else chs[i],
                                      chs[i], g))
        if i > 0:
            layers.append(Upsample(chs[i]))
    layers += [nn.GroupNorm(g, chs[0]), nn.SiLU(), nn.Conv2d(chs[0], cfg.in_channels, 3, padding=1)]
    return nn.Sequential(*layers)


class Autoencoder(nn.Module):
    """KL autoencoder: `encode(x) -> DiagonalGaussian`, `decode(z) -> x`; latents for diffusion
    are `encode_latents(x) = z * scale_factor` (unit variance on data, as in LDM)."""

    def __init__(self, config: AutoencoderConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = _encoder(config)
        self.decoder = _decoder(config)
        self.register_buffer("scale_factor", torch.ones(()))

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        if x.dim() != 4 or x.shape[1] != self.config.in_channels:
            raise ValueError(f"expected (B, {self.config.in_channels}, H, W), got {tuple(x.shape)}")
        f = self.config.downsample_factor
        if x.shape[2] % f or x.shape[3] % f:
            raise ValueError(f"H, W must be multiples of downsample_factor={f}, got {x.shape}")
        mean, logvar = self.encoder(x).chunk(2, dim=1)  # (B, z, H/f, W/f) each
        return DiagonalGaussian(mean, logvar.clamp(-30.0, 20.0))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None):
        posterior = self.encode(x)
        return self.decode(posterior.sample(generator)), posterior

    def encode_latents(self, x: torch.Tensor, generator: torch.Generator | None = None):
        """Scaled latents for the diffusion model: a posterior sample times `scale_factor`."""
        return self.encode(x).sample(generator) * self.scale_factor

    def decode_latents(self, z: torch.Tensor) -> torch.Tensor:
        return self.decode(z / self.scale_factor)

    @torch.no_grad()
    def fit_scale_factor(self, images: torch.Tensor) -> float:
        """Set `scale_factor = 1 / std` of the posterior means of `images` (LDM, 2022)."""
        std = self.encode(images).mean.float().std().item()
        self.scale_factor.fill_(1.0 / max(std, 1e-8))
        return float(self.scale_factor)


def autoencoder_loss(model: Autoencoder, x: torch.Tensor, generator=None):
    """Reconstruction (L1 or L2, mean per value) + kl_weight * KL in nats per pixel value."""
    recon, posterior = model(x, generator)
    err = (recon - x).abs() if model.config.recon_loss == "l1" else (recon - x) ** 2
    rec = err.mean()
    kl = posterior.kl().mean() / x[0].numel()
    return rec + model.config.kl_weight * kl, {"recon": rec.item(), "kl": kl.item()}


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB for images in [-1, 1] (peak-to-peak 2)."""
    mse = F.mse_loss(a.float().clamp(-1, 1), b.float().clamp(-1, 1)).item()
    return 10.0 * math.log10(4.0 / max(mse, 1e-12))


@dataclass(frozen=True)
class AutoencoderTrainConfig:
    """What `train_autoencoder` trains on, for how long, and where it saves the result."""

    model: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    data: ShapesConfig = field(default_factory=ShapesConfig)
    steps: int = 1500
    batch_size: int = 32
    lr: float = 1e-3
    seed: int = 0
    eval_images: int = 256  # PSNR on images drawn with seed data.seed + 1 (unseen in training)
    log_every: int = 100
    out: str = ""  # a .safetensors path to save to, or "" for none

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.eval_images < 1:
            raise ConfigError("steps, batch_size and eval_images must be >= 1")


def _images(data: ShapesConfig, start: int, count: int) -> torch.Tensor:
    dataset = ShapesDataset(data)
    return torch.stack([dataset[(start + i) % len(dataset)]["image"] for i in range(count)])


def train_autoencoder(
    config: AutoencoderTrainConfig, log: Callable[[str], None] = print
) -> Autoencoder:
    """Train the KL autoencoder on the shapes world with Adam; fit `scale_factor`; report PSNR."""
    return fit_autoencoder(config, log)[0]


def fit_autoencoder(
    config: AutoencoderTrainConfig, log: Callable[[str], None] = print
) -> tuple[Autoencoder, dict[str, float]]:
    """`train_autoencoder` that also returns its held-out metrics (psnr, scale_factor,
    train_seconds, final recon and kl)."""
    torch.manual_seed(config.seed)
    model = Autoencoder(config.model)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=config.steps)
    gen = torch.Generator().manual_seed(config.seed)
    start = time.perf_counter()
    for step in range(config.steps):
        x = _images(config.data, step * config.batch_size, config.batch_size)  # (B, 3, H, W)
        loss, stats = autoencoder_loss(model, x, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if (step + 1) % config.log_every == 0 or step + 1 == config.steps:
            log(f"step {step + 1}/{config.steps} recon {stats['recon']:.4f} kl {stats['kl']:.3f} "
                f"({time.perf_counter() - start:.0f}s)")
    seconds = time.perf_counter() - start
    model.eval()
    held_out = ShapesConfig(**{**to_dict(config.data), "seed": config.data.seed + 1})
    x = _images(held_out, 0, config.eval_images)
    with torch.no_grad():
        scale = model.fit_scale_factor(x)
        quality = psnr(model.decode(model.encode(x).mean), x)
    log(f"held-out PSNR {quality:.2f} dB (posterior mean), scale_factor {scale:.4f}")
    if config.out:
        save_autoencoder(config.out, model)
        log(f"saved {config.out}")
    return model, {"psnr": quality, "scale_factor": scale, "train_seconds": seconds,
                   "recon": stats["recon"], "kl": stats["kl"]}


def save_autoencoder(path: str | Path, model: Autoencoder) -> Path:
    """Weights (with scale_factor) as safetensors, the config as JSON metadata."""
    meta = {"arch": "autoencoder", "config": json.dumps(to_dict(model.config))}
    return save_tensors(path, model.state_dict(), meta=meta)


def load_autoencoder(path: str | Path) -> Autoencoder:
    """Rebuild an autoencoder saved by `save_autoencoder`."""
    from safetensors import safe_open

    tensors = load_tensors(path)  # a clear FileNotFoundError when missing
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if meta.get("arch") != "autoencoder":
        raise ConfigError(f"{path} is not an autoencoder checkpoint (arch={meta.get('arch')!r})")
    model = Autoencoder(from_dict(AutoencoderConfig, json.loads(meta["config"])))
    model.load_state_dict(tensors)
    return model
