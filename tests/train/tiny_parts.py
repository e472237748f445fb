"""Tiny real components for trainer tests, and a script entry point for subprocess/torchrun runs.

Usage: python tests/train/tiny_parts.py OUT_DIR [--resume] [key=value ...]
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

from difflab.train.config import TrainConfig, apply_override, validate
from difflab.train.parts import Parts
from difflab.train.trainer import run_training

HERE_SCRIPT = Path(__file__).resolve()


class TinyFlow:
    """Rectified flow (Flow Straight and Fast, 2022): x_t = (1 - t) x0 + t noise."""

    def sample_sigma(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.sigmoid(torch.randn(n, generator=generator))  # logit-normal t

    def net_input(self, x0, noise, sigma):
        s = sigma.view(-1, 1, 1, 1)
        return (1 - s) * x0 + s * noise, sigma

    def target(self, x0, noise, sigma):
        return noise - x0

    def loss_weight(self, sigma):
        return torch.ones_like(sigma)


class TinyNet(nn.Module):
    """A conv net conditioned on t and a pooled text vector (enough to exercise every path)."""

    def __init__(self, channels: int = 3, width: int = 16, text_dim: int = 8) -> None:
        super().__init__()
        self.inp = nn.Conv2d(channels, width, 3, padding=1)
        self.t_emb = nn.Linear(1, width)
        self.c_emb = nn.Linear(text_dim, width)
        self.mid = nn.Conv2d(width, width, 3, padding=1)
        self.out = nn.Conv2d(width, channels, 3, padding=1)
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))

    def forward(self, x, t, context=None, context_mask=None, pooled=None, y=None):
        h = self.inp(x) + self.t_emb(t.view(-1, 1).to(x.dtype))[:, :, None, None]
        if pooled is not None:
            h = h + self.c_emb(pooled.to(h.dtype))[:, :, None, None]
        return self.out(torch.nn.functional.silu(self.mid(torch.nn.functional.silu(h))))


class TinyText:
    """A deterministic bag-of-characters encoder with the TextEncoder.encode contract."""

    dim = 8

    def encode(self, prompts: list[str]):
        length = max(1, max(len(p.split()) for p in prompts))
        tokens = torch.zeros(len(prompts), length, self.dim)
        mask = torch.zeros(len(prompts), length, dtype=torch.bool)
        for i, p in enumerate(prompts):
            for j, word in enumerate(p.split()):
                g = torch.Generator().manual_seed(sum(map(ord, word)))
                tokens[i, j] = torch.randn(self.dim, generator=g)
                mask[i, j] = True
        pooled = tokens.sum(1) / mask.sum(1, keepdim=True).clamp_min(1)
        return tokens, mask, pooled


class TinyData(torch.utils.data.Dataset):
    """Deterministic 8x8 images of a coloured square, with captions naming the colour."""

    colours = {"red": (1.0, -1.0, -1.0), "green": (-1.0, 1.0, -1.0), "blue": (-1.0, -1.0, 1.0)}

    def __init__(self, n: int = 48, size: int = 8) -> None:
        self.n, self.size = n, size

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        name = list(self.colours)[i % 3]
        img = torch.full((3, self.size, self.size), -1.0)
        x = i % (self.size - 3)
        img[:, 1:4, x:x + 3] = torch.tensor(self.colours[name]).view(3, 1, 1)
        return {"image": img, "caption": f"a {name} square"}


def tiny_config(out_dir: str, **sections) -> TrainConfig:
    """A seconds-long config: fp32, batch 8, 12 steps, checkpoints every 3 steps."""
    cfg = TrainConfig()
    base = {"schedule.steps": 12, "schedule.batch_size": 8, "schedule.warmup_steps": 2,
            "run.out_dir": out_dir, "run.precision": "fp32", "run.ckpt_every": 3,
            "run.log_every": 1, "run.progress": False, "run.device": "cpu",
            "optim.lr": 1e-2, "ema.decay": 0.9, "text.cond_dropout": 0.25}
    base.update(sections)
    for key, value in base.items():
        cfg = apply_override(cfg, key, value)
    return validate(cfg)


def tiny_parts(seed: int = 0) -> Parts:
    torch.manual_seed(seed)
    return Parts(net=TinyNet(), process=TinyFlow(), dataset=TinyData(), text_encoder=TinyText())


def main(argv: list[str]) -> None:
    from difflab.config import parse_override

    torch.set_num_threads(1)
    out, rest = argv[0], argv[1:]
    resume = "--resume" in rest
    overrides = dict(parse_override(a) for a in rest if a != "--resume")
    cfg = tiny_config(out, **overrides)
    run_training(cfg, tiny_parts(cfg.run.seed), resume=resume)


if __name__ == "__main__":
    main(sys.argv[1:])
