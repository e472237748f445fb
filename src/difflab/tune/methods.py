"""Adaptation methods: which weights a tuning run trains, and the weight change it produces.

Every method turns a frozen base network into a trainable one (`prepare`) and, after training,
reports what it changed as a `Delta`: per-parameter weight differences (dense, or sparse for
SaRA) plus, for Textual Inversion, a learned token embedding. Composition, merging and loading
(`difflab.tune.adapters`) work on deltas alone, so every method composes with every other.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from difflab.config import ConfigError
from difflab.registry import Registry

PEFT_METHODS: tuple[str, ...] = ("lora", "dora", "loha", "lokr")
NATIVE_METHODS: tuple[str, ...] = ("full", "dreambooth", "difffit", "sara", "custom", "textual")
METHODS: tuple[str, ...] = PEFT_METHODS + NATIVE_METHODS
# Attention projections of every native model (UNet/DiT self- and cross-attention, MMDiT's
# joint attention of both streams) and the UNet's residual-block convolutions: on the dev split
# attention alone learned no new shape (0-6% with or without the prior loss).
# `res\.conv` names the residual blocks of the UNet's down and up levels only: the mid block's
# two (`res1`, `res2`) are left out of the defaults (chosen on the dev split as they are).
DEFAULT_TARGETS = r"(attn\.(qkv|proj)|cross\.(q|kv|proj)|_stream\.(qkv|proj)|res\.conv[12])$"
# Every residual-block convolution of the UNet, the mid block's included (`--targets` for a
# convolution-only LoRA).
RES_CONV_TARGETS = r"res\d?\.conv[12]$"
CUSTOM_TARGETS = r"cross\.kv$"  # Custom Diffusion: the cross-attention key/value projection
# DiffFit's scaled branch outputs: attention and MLP output projections.
DIFFFIT_SCALED = r"(attn\.proj|cross\.proj|_stream\.proj|mlp\.fc2)$"


@dataclass
class Delta:
    """What an adaptation changed: dense weight differences, sparse ones (flat indices and
    values), and new token embeddings {token: (D,) vector} for the text encoder."""

    dense: dict[str, Tensor] = field(default_factory=dict)
    sparse: dict[str, tuple[Tensor, Tensor]] = field(default_factory=dict)
    tokens: dict[str, Tensor] = field(default_factory=dict)

    def full(self, params: dict[str, Tensor]) -> dict[str, Tensor]:
        """Every change as a dense tensor shaped like its parameter."""
        out = {k: v.clone() for k, v in self.dense.items()}
        for name, (idx, val) in self.sparse.items():
            d = out.setdefault(name, torch.zeros_like(params[name]))
            d.view(-1).index_add_(0, idx, val.to(d.dtype))
        return out

    def numel(self) -> int:
        """Stored numbers (what the adapter's size on disk is made of)."""
        return (sum(v.numel() for v in self.dense.values())
                + sum(i.numel() + v.numel() for i, v in self.sparse.values())
                + sum(v.numel() for v in self.tokens.values()))


@dataclass
class Adaptation:
    """A network prepared for tuning: its trainable tensors and how to read the change."""

    net: nn.Module  # what the training loop calls (may wrap the base network)
    params: list[Tensor]  # what the optimiser updates
    delta: Callable[[], Delta]  # the change relative to the base, after training
    peft_model: Any = None  # the PeftModel of peft methods (saved in peft's own format)
    token: str = ""  # Textual Inversion's new token


def matching(net: nn.Module, pattern: str, kinds: tuple[type, ...] = (nn.Linear, nn.Conv2d)
             ) -> list[str]:
    """Names of the modules of `kinds` whose name matches the regular expression `pattern`."""
    try:
        rx = re.compile(pattern)
    except re.error as e:
        raise ConfigError(f"targets = {pattern!r} is not a regular expression ({e})") from None
    names = [n for n, m in net.named_modules() if isinstance(m, kinds) and rx.search(n)]
    if not names:
        raise ConfigError(f"targets = {pattern!r} matches no Linear/Conv2d layer of "
                          f"{type(net).__name__}")
    return names


def trainable_count(adaptation: Adaptation) -> int:
    """Trainable numbers: the masked entries for SaRA, the new row for Textual Inversion."""
    return sum(int(getattr(p, "_difflab_trainable", p.numel())) for p in adaptation.params)


def _frozen(net: nn.Module) -> dict[str, Tensor]:
    net.requires_grad_(False)
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def _dense_delta(net: nn.Module, base: dict[str, Tensor], names: list[str]) -> Delta:
    state = net.state_dict()
    return Delta(dense={n: (state[n] - base[n]).detach().clone() for n in names})


# ----------------------------------------------------------------------------- peft


def layer_ranks(cfg: Any, targets: list[str]) -> dict[str, int]:
    """The targeted layers whose rank `cfg.rank_pattern` ("REGEX=RANK;REGEX=RANK") sets apart
    from `cfg.rank`: {layer name: rank}, the first pattern that a name matches deciding."""
    ranks: dict[str, int] = {}
    for rx, rank in parse_rank_pattern(cfg.rank_pattern):
        hits = [n for n in targets if rx.search(n)]
        if not hits:
            raise ConfigError(f"rank_pattern {rx.pattern!r} matches none of the "
                              f"{len(targets)} targeted layers")
        for n in hits:
            ranks.setdefault(n, rank)
    return ranks


def parse_rank_pattern(text: str) -> list[tuple[re.Pattern[str], int]]:
    """"REGEX=RANK;REGEX=RANK" -> [(compiled regex, rank)]; "" -> []."""
    out = []
    for entry in filter(None, (e.strip() for e in text.split(";"))):
        pattern, sep, rank = entry.rpartition("=")
        if not sep or not pattern or not rank.strip().isdigit() or int(rank) < 1:
            raise ConfigError(f"rank_pattern entry {entry!r} is not REGEX=RANK (a rank >= 1)")
        try:
            out.append((re.compile(pattern), int(rank)))
        except re.error as e:
            raise ConfigError(f"rank_pattern {pattern!r} is not a regular expression ({e})"
                              ) from None
    return out


def _peft_config(method: str, cfg: Any, targets: list[str]) -> Any:
    import peft

    # peft matches pattern keys as name suffixes: each layer is keyed by its exact name, and
    # its alpha keeps the scale alpha / rank of the rest
    ranks = layer_ranks(cfg, targets)
    common = {"target_modules": targets, "r": cfg.rank,
              "rank_pattern": {re.escape(n): r for n, r in ranks.items()},
              "alpha_pattern": {re.escape(n): cfg.alpha * r / cfg.rank
                                for n, r in ranks.items()}}
    if method in ("lora", "dora"):
        # LoRA: Low-Rank Adaptation of Large Language Models (2021); DoRA (2024).
        return peft.LoraConfig(lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                               use_dora=method == "dora", **common)
    if method == "loha":
        # FedPara / LyCORIS LoHa: Hadamard product of two low-rank factors (2022).
        return peft.LoHaConfig(alpha=cfg.alpha, rank_dropout=cfg.dropout, **common)
    # LyCORIS LoKr: Kronecker product factorisation (2023).
    return peft.LoKrConfig(alpha=cfg.alpha, rank_dropout=cfg.dropout, **common)


LORA_INITS: tuple[str, ...] = ("random", "principal", "gradient")


def _start_down(model: nn.Module, matrix: Callable[[nn.Module], Tensor]) -> int:
    """Set every LoRA down-projection to the top right singular vectors of `matrix(base
    layer)` (out x in[xkxk]), rows at the norm of peft's random start (3^-1/2); the
    up-projection stays zero, so the model is unchanged. Returns the layers started."""
    from peft.tuners.lora import LoraLayer

    started = 0
    for module in model.modules():
        if not isinstance(module, LoraLayer):
            continue
        m = matrix(module.get_base_layer()).detach().float()
        _, _, vh = torch.linalg.svd(m.reshape(m.shape[0], -1), full_matrices=False)
        for down in module.lora_A.values():
            with torch.no_grad():
                down.weight.copy_((vh[: down.weight.shape[0]] * 3 ** -0.5)
                                  .reshape(down.weight.shape))
            started += 1
    return started


def principal_start(model: nn.Module) -> int:
    """Start every LoRA down-projection on its base weight's top right singular vectors (the
    directions PiSSA starts from, 2024), at the norm of peft's random start; the up-projection
    stays zero, so the model is unchanged and the start does not depend on the seed. peft's
    own PiSSA covers Linear layers only and rewrites the base weight; this does neither."""
    return _start_down(model, lambda layer: layer.weight)


def gradient_start(model: nn.Module, loss: Callable[[int], Tensor], batches: int) -> int:
    """LoRA-GA: Low-Rank Adaptation with Gradient Approximation (2024), its down-projection:
    each starts on the top right singular vectors of the full weight's gradient of the tuning
    loss (summed over `batches` calls of `loss(k)`), so the up-projection's first steps follow
    the best rank-r part of full fine-tuning's; the up-projection stays zero (LoRA-GA's
    non-zero one would rewrite the base weight) and the model is unchanged."""
    from peft.tuners.lora import LoraLayer

    weights = [m.get_base_layer().weight for m in model.modules() if isinstance(m, LoraLayer)]
    for w in weights:
        w.requires_grad_(True)
    try:
        for k in range(batches):
            loss(k).backward()
        started = _start_down(model, lambda layer: layer.weight.grad)
    finally:
        for w in weights:
            w.requires_grad_(False)
        for p in model.parameters():
            p.grad = None
    return started


def prepare_peft(net: nn.Module, cfg: Any) -> Adaptation:
    """LoRA, DoRA, LoHa or LoKr layers through peft on the layers `cfg.targets` names."""
    import peft

    targets = matching(net, cfg.targets)
    if cfg.lora_init != "random" and cfg.method not in ("lora", "dora"):
        raise ConfigError(f"lora_init {cfg.lora_init!r} is for lora and dora, not {cfg.method}")
    base = _frozen(net)
    model = peft.get_peft_model(net, _peft_config(cfg.method, cfg, targets))
    if cfg.lora_init == "principal":
        principal_start(model)  # "gradient" needs the loss: difflab.tune.fit starts it
    params = [p for p in model.parameters() if p.requires_grad]

    def delta() -> Delta:
        merged = copy.deepcopy(model).merge_and_unload()
        state = merged.state_dict()
        return Delta(dense={k: (state[k] - base[k]).clone() for k in base
                            if base[k].is_floating_point() and not torch.equal(state[k], base[k])})

    return Adaptation(model, params, delta, peft_model=model)


# ----------------------------------------------------------------------------- native


def prepare_full(net: nn.Module, cfg: Any) -> Adaptation:
    """Every weight trains (the baseline adapters are measured against; DreamBooth's default)."""
    base = _frozen(net)
    net.requires_grad_(True)
    names = [n for n, p in net.named_parameters()]
    return Adaptation(net, list(net.parameters()), lambda: _dense_delta(net, base, names))


def prepare_custom(net: nn.Module, cfg: Any) -> Adaptation:
    """Multi-Concept Customization of Text-to-Image Diffusion (Custom Diffusion, 2023): only
    the cross-attention key/value projections train."""
    base = _frozen(net)
    layers = matching(net, CUSTOM_TARGETS, (nn.Linear,))
    modules = dict(net.named_modules())
    names = [f"{n}.{p}" for n in layers for p, _ in modules[n].named_parameters()]
    params = [net.get_parameter(n).requires_grad_(True) for n in names]
    return Adaptation(net, params, lambda: _dense_delta(net, base, names))


class _Scale(nn.Module):
    """DiffFit's per-channel scale on a branch output, initialised to 1."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))


def prepare_difffit(net: nn.Module, cfg: Any) -> Adaptation:
    """DiffFit: Unlocking Transferability of Large Diffusion Models via Simple Parameter-Efficient
    Fine-Tuning (2023): biases, norm affines and a learned scale on each attention/MLP branch."""
    base = _frozen(net)
    modules = dict(net.named_modules())
    scaled = matching(net, DIFFFIT_SCALED, (nn.Linear,))
    scales = {n: _Scale(modules[n].out_features) for n in scaled}
    hooks = [modules[n].register_forward_hook(lambda m, i, o, s=scales[n]: o * s.gamma)
             for n in scaled]
    norms = (nn.LayerNorm, nn.GroupNorm)
    names = [n for n, _ in net.named_parameters()
             if n.endswith(".bias") or isinstance(modules[n.rsplit(".", 1)[0]], norms)]
    params = [net.get_parameter(n).requires_grad_(True) for n in names]
    params += [s.gamma for s in scales.values()]

    def delta() -> Delta:
        out = _dense_delta(net, base, names).dense
        state = net.state_dict()
        for n, s in scales.items():  # fold y * gamma into the layer: W <- diag(gamma) W
            g = s.gamma.detach()
            w = state[f"{n}.weight"] * g[:, None]
            out[f"{n}.weight"] = w - base[f"{n}.weight"]
            b = state[f"{n}.bias"] * g
            out[f"{n}.bias"] = b - base[f"{n}.bias"]
        return Delta(dense=out)

    adaptation = Adaptation(net, params, delta)
    adaptation.remove = lambda: [h.remove() for h in hooks]  # type: ignore[attr-defined]
    return adaptation


def prepare_sara(net: nn.Module, cfg: Any) -> Adaptation:
    """SaRA: High-Efficient Diffusion Model Fine-tuning with Progressive Sparse Low-Rank
    Adaptation (2024), its sparse part: only the smallest-magnitude weights of each targeted
    layer train (`cfg.sparsity` of them); the rest get zero gradients."""
    base = _frozen(net)
    layers = matching(net, cfg.targets)
    masks: dict[str, Tensor] = {}
    for layer in layers:
        w = net.get_parameter(f"{layer}.weight")
        k = max(1, int(cfg.sparsity * w.numel()))
        idx = w.detach().abs().view(-1).topk(k, largest=False).indices
        masks[f"{layer}.weight"] = idx
        mask = torch.zeros(w.numel(), dtype=w.dtype)
        mask[idx] = 1.0
        w.requires_grad_(True)
        w.register_hook(lambda g, m=mask.view_as(w): g * m)
        w._difflab_trainable = k  # type: ignore[attr-defined]
    params = [net.get_parameter(n) for n in masks]

    def delta() -> Delta:
        state = net.state_dict()
        return Delta(sparse={n: (idx, (state[n] - base[n]).view(-1)[idx].clone())
                             for n, idx in masks.items()})

    return Adaptation(net, params, delta)


METHOD_PREPARERS: Registry[Callable[[nn.Module, Any], Adaptation]] = Registry("tuning method")
for _name in PEFT_METHODS:
    METHOD_PREPARERS.register(_name)(prepare_peft)
METHOD_PREPARERS.register("full")(prepare_full)
METHOD_PREPARERS.register("dreambooth")(prepare_full)
METHOD_PREPARERS.register("custom")(prepare_custom)
METHOD_PREPARERS.register("difffit")(prepare_difffit)
METHOD_PREPARERS.register("sara")(prepare_sara)


def named_float_params(net: nn.Module) -> Iterator[tuple[str, Tensor]]:
    """(name, tensor) of every floating-point entry of the state dict."""
    return ((k, v) for k, v in net.state_dict().items() if v.is_floating_point())
