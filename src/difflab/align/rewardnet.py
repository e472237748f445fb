"""A small differentiable reward: a CNN that predicts the evaluator's per-requirement scores.

The evaluator (`difflab.align.rewards`) is exact but has no gradient; gradient methods (reward
backpropagation, "Directly Fine-Tuning Diffusion Models on Differentiable Rewards", DRaFT, 2023)
need one, so `RewardNet` learns it, as learned reward models do ("ImageReward", 2023), from
images the evaluator scored. The prompt enters as its spec (each object's shape, colour and
count, and the relation), by FiLM on every convolution ("FiLM: Visual Reasoning with a General
Conditioning Layer", 2018), so the net can count and locate what the prompt asks for.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from difflab.align.rewards import REQUIREMENTS, score_specs
from difflab.config import ConfigError
from difflab.data.world import COLORS, NUMBERS, RELATIONS, SHAPES, ObjectSpec, PromptSpec
from difflab.limits import check_int

MAX_OBJECTS = 2
_COLORS = tuple(COLORS)
# per object: present flag, shape, colour, count (1-4) one-hots; then the relation one-hot
SPEC_DIM = MAX_OBJECTS * (1 + len(SHAPES) + len(_COLORS) + len(NUMBERS)) + len(RELATIONS)


def encode_spec(spec: PromptSpec) -> Tensor:
    """(SPEC_DIM,) one-hot encoding of a spec's objects and relation."""
    if len(spec.objects) > MAX_OBJECTS:
        raise ConfigError(f"the reward net reads prompts of at most {MAX_OBJECTS} kinds of "
                          f"object; {spec.text!r} has {len(spec.objects)}")
    parts = []
    for k in range(MAX_OBJECTS):
        o = spec.objects[k] if k < len(spec.objects) else None
        v = torch.zeros(1 + len(SHAPES) + len(_COLORS) + len(NUMBERS))
        if o is not None:
            if o.shape not in SHAPES or o.color not in _COLORS or o.count not in NUMBERS:
                raise ConfigError(f"the reward net knows the world's shapes, colours and counts "
                                  f"1-{len(NUMBERS)}; {spec.text!r} asks for {o}")
            v[0] = 1
            v[1 + SHAPES.index(o.shape)] = 1
            v[1 + len(SHAPES) + _COLORS.index(o.color)] = 1
            v[1 + len(SHAPES) + len(_COLORS) + o.count - 1] = 1
        parts.append(v)
    rel = torch.zeros(len(RELATIONS))
    if spec.relation is not None:
        rel[RELATIONS.index(spec.relation)] = 1
    return torch.cat([*parts, rel])


def encode_specs(specs: Sequence[PromptSpec]) -> Tensor:
    """(N, SPEC_DIM) encodings."""
    return torch.stack([encode_spec(s) for s in specs])


class _FiLMConv(nn.Module):
    """conv -> GroupNorm -> scale and shift from the spec -> SiLU."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, stride, 1)
        self.norm = nn.GroupNorm(8, c_out)
        self.film = nn.Linear(SPEC_DIM, 2 * c_out)

    def forward(self, x: Tensor, s: Tensor) -> Tensor:
        scale, shift = self.film(s)[:, :, None, None].chunk(2, dim=1)  # (B, C, 1, 1) each
        return F.silu(self.norm(self.conv(x)) * (1 + scale) + shift)


class RewardNet(nn.Module):
    """Images (B, 3, 32, 32) in [-1, 1] and spec encodings (B, SPEC_DIM) -> (B, R) logits of
    the REQUIREMENTS scores."""

    def __init__(self, width: int = 32, size: int = 32) -> None:
        super().__init__()
        self.width, self.size = width, size
        w = width
        self.blocks = nn.ModuleList([_FiLMConv(3, w, 1), _FiLMConv(w, 2 * w, 2),
                                     _FiLMConv(2 * w, 2 * w, 2), _FiLMConv(2 * w, 2 * w, 2)])
        flat = 2 * w * (size // 8) ** 2  # positions kept: relations need them
        self.head = nn.Sequential(nn.Linear(flat + SPEC_DIM, 128), nn.SiLU(),
                                  nn.Linear(128, len(REQUIREMENTS)))

    def forward(self, x: Tensor, s: Tensor) -> Tensor:
        h = x
        for block in self.blocks:
            h = block(h, s)
        return self.head(torch.cat([h.flatten(1), s], dim=1))  # (B, R)

    def reward(self, x: Tensor, specs: Sequence[PromptSpec]) -> Tensor:
        """(B,) differentiable reward: the mean predicted score over the requirements each
        prompt states (the evaluator reward's formula on predicted scores)."""
        s = encode_specs(specs).to(x.device)
        p = torch.sigmoid(self.forward(x.float(), s))
        mask = applicable(specs).to(x.device)
        return (p * mask).sum(1) / mask.sum(1)


def applicable(specs: Sequence[PromptSpec]) -> Tensor:
    """(N, R) 1 where a requirement applies to the spec (the relation only with one)."""
    m = torch.ones(len(specs), len(REQUIREMENTS))
    m[:, REQUIREMENTS.index("relation")] = torch.tensor(
        [float(s.relation is not None) for s in specs])
    return m


# ----------------------------------------------------------------------------- data


def perturb(spec: PromptSpec, k: int) -> PromptSpec:
    """A near-miss of `spec` (variant k): another relation, another count, or the two objects'
    colours swapped; images scored against it are the hard negatives of the reward data."""
    objs = list(spec.objects)
    if spec.relation is not None and k % 2 == 0:
        rel = RELATIONS[(RELATIONS.index(spec.relation) + 1 + k // 2) % len(RELATIONS)]
        return replace_spec(spec, objs, rel)
    if len(objs) == 2 and objs[0].color != objs[1].color:
        a, b = objs
        return replace_spec(spec, [ObjectSpec(a.shape, b.color, a.count),
                                   ObjectSpec(b.shape, a.color, b.count)], spec.relation)
    o = objs[0]
    count = 1 + (o.count + k % (len(NUMBERS) - 1)) % len(NUMBERS)
    return replace_spec(spec, [ObjectSpec(o.shape, o.color, count), *objs[1:]], spec.relation)


def replace_spec(spec: PromptSpec, objects: list[ObjectSpec], relation: str | None
                 ) -> PromptSpec:
    return PromptSpec(spec.text, spec.category, tuple(objects), relation, spec.seed)


def label_images(images: np.ndarray, specs: Sequence[PromptSpec], near_misses: int = 1
                 ) -> tuple[np.ndarray, list[PromptSpec], np.ndarray]:
    """Each image scored against its spec and `near_misses` perturbed specs: (image index (M,),
    specs (M), evaluator scores (M, R))."""
    index, out_specs, scores = [], [], []
    for i, (img, spec) in enumerate(zip(images, specs, strict=True)):
        these = [spec] + [perturb(spec, k) for k in range(near_misses)]
        scores.append(score_specs(img, these))
        index += [i] * len(these)
        out_specs += these
    return np.array(index), out_specs, np.concatenate(scores)


@dataclass(frozen=True)
class RewardNetConfig:
    """Training of the reward net."""

    width: int = 32
    steps: int = 3000
    batch_size: int = 64
    lr: float = 2e-3
    seed: int = 0


def _tensor(images: np.ndarray) -> Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1


def train_reward_net(images: np.ndarray, specs: Sequence[PromptSpec], scores: np.ndarray,
                     index: np.ndarray, cfg: RewardNetConfig,
                     log: Any = None) -> tuple[RewardNet, list[float]]:
    """Fit a RewardNet to evaluator scores (M, R) of images[index[m]] against specs[m] by
    masked binary cross-entropy; images get random flips-free pixel noise as augmentation."""
    check_int("steps", cfg.steps, 1)
    torch.manual_seed(cfg.seed)
    net = RewardNet(cfg.width, images.shape[1])
    x_all, s_all = _tensor(images), encode_specs(specs)
    y = torch.from_numpy(np.nan_to_num(scores, nan=0.0))
    m = torch.from_numpy(~np.isnan(scores)).float()
    idx_all = torch.from_numpy(index)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.steps)
    losses, start = [], time.perf_counter()
    for step in range(cfg.steps):
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        b = torch.randint(0, len(s_all), (cfg.batch_size,), generator=gen)
        x = x_all[idx_all[b]]
        x = x + 0.03 * torch.randn(x.shape, generator=gen)  # robustness to sampler noise
        logits = net(x, s_all[b])
        bce = F.binary_cross_entropy_with_logits(logits, y[b], reduction="none")
        loss = (bce * m[b]).sum() / m[b].sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if log is not None and step % 500 == 0:
            log(f"reward net step {step}: loss {loss.item():.4f} "
                f"({time.perf_counter() - start:.0f} s)")
    return net.eval(), losses


@torch.no_grad()
def predict_scores(net: RewardNet, images: np.ndarray, specs: Sequence[PromptSpec],
                   index: np.ndarray | None = None) -> np.ndarray:
    """(M, R) predicted probabilities of images[index[m]] against specs[m]."""
    index = np.arange(len(specs)) if index is None else index
    x = _tensor(images)[torch.from_numpy(index)]
    return torch.sigmoid(net(x, encode_specs(specs))).numpy()


def agreement(pred: np.ndarray, scores: np.ndarray) -> dict[str, Any]:
    """Per requirement: how often the thresholded prediction equals the evaluator's verdict
    (scores rounded at 0.5), with counts; plus the reward's correlation."""
    from difflab.eval.stats import wilson_interval

    out: dict[str, Any] = {}
    for r, name in enumerate(REQUIREMENTS):
        ok = ~np.isnan(scores[:, r])
        same = ((pred[ok, r] >= 0.5) == (scores[ok, r] >= 0.5))
        k, n = int(same.sum()), int(ok.sum())
        if n == 0:  # e.g. the relation, when no prompt states one
            continue
        out[name] = {"agreement": k / n, "interval": list(wilson_interval(k, n)), "n": n,
                     "evaluator_positive_rate": float((scores[ok, r] >= 0.5).mean())}
    masked = np.where(np.isnan(scores), np.nan, pred)
    r_pred, r_eval = np.nanmean(masked, 1), np.nanmean(scores, 1)
    out["reward_pearson"] = float(np.corrcoef(r_pred, r_eval)[0, 1])
    return out


def save_reward_net(net: RewardNet, cfg: RewardNetConfig, out: str | Path,
                    metrics: dict[str, Any]) -> None:
    """A folder with the weights and a manifest (kind "reward-net")."""
    from difflab.io import save_tensors
    from difflab.runtime.artefacts import new_folder, write_manifest

    with new_folder(out) as tmp:
        save_tensors(tmp / "model.safetensors", dict(net.state_dict()))
        write_manifest(tmp, "reward-net", {"reward_net": {**asdict(cfg), "size": net.size}},
                       metrics=metrics)


def load_reward_net(folder: str | Path) -> RewardNet:
    """A RewardNet from a folder written by `save_reward_net`."""
    from difflab.io import load_tensors
    from difflab.runtime.artefacts import read_manifest, verify

    folder = Path(folder)
    manifest = read_manifest(folder)
    if manifest.kind != "reward-net":
        raise ConfigError(f"{folder} is a {manifest.kind!r} artefact, not a reward net")
    verify(folder, manifest, ("model.safetensors",))
    cfg = manifest.config["reward_net"]
    net = RewardNet(cfg["width"], cfg["size"])
    net.load_state_dict(load_tensors(folder / "model.safetensors"))
    return net.eval()
