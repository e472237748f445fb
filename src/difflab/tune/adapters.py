"""Adapter folders: write, read, apply with weights, compose (task arithmetic, TIES), merge.

An adapter folder holds difflab's manifest (kind "adapter": the tuning config, the base's name
or path and the sha256 of its weights, and of its autoencoder for a latent base, which supplies
the decoder) and either peft's own files (adapter_config.json +
adapter_model.safetensors, loadable by `peft.PeftModel.from_pretrained`) or difflab's delta
file for the native methods, plus the new token embeddings of Textual Inversion. Applying an
adapter adds weight * (its weight change) to the network: for LoRA-family adapters this is
exactly "active with a scale", and it is what merging is; `MergedAdapters.unmerge` subtracts it.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from difflab.config import ConfigError
from difflab.io import load_tensors, save_tensors
from difflab.runtime.artefacts import (
    MANIFEST,
    Manifest,
    autoencoder_of,
    new_folder,
    read_manifest,
    register_artefact,
    resolve,
    sha256_file,
    shipped_models,
    verify,
    write_manifest,
)
from difflab.runtime.latent import AE_WEIGHTS, check_base_autoencoder
from difflab.tune.methods import PEFT_METHODS, Delta

KIND = "adapter"
DELTA_FILE = "delta.safetensors"
TOKENS_FILE = "tokens.safetensors"
PEFT_FILES = ("adapter_config.json", "adapter_model.safetensors")
COMBINES = ("sum", "ties")


def base_reference(source: str | Path) -> dict[str, str]:
    """The manifest's `base`: a shipped model's name (or the folder's absolute path) and the
    sha256 of its model.safetensors, which identifies the base wherever it is copied."""
    folder = resolve(source)
    manifest = read_manifest(folder)
    if manifest.kind != "checkpoint":
        raise ConfigError(f"{folder} is a {manifest.kind!r} artefact; adapters are tuned on and "
                          "applied to a checkpoint (a run, checkpoint or shipped model)")
    verify(folder, manifest, ("model.safetensors",))
    name = str(source) if str(source) in shipped_models() and not Path(source).exists() \
        else str(folder.resolve())
    return {"path": name, "sha256": sha256_file(folder / "model.safetensors"),
            **autoencoder_of(folder)}


def save_adapter(result: Any, out: str | Path, base: dict[str, str],
                 metrics: dict[str, Any] | None = None,
                 sections: dict[str, Any] | None = None) -> Manifest:
    """Write a tuning result as an adapter folder (a new folder, renamed into place);
    `sections` are config sections stored beside "tune" (e.g. the alignment run's)."""
    with new_folder(out) as tmp:
        cfg, delta = result.config, result.delta
        if cfg.method in PEFT_METHODS:
            result.adaptation.peft_model.save_pretrained(str(tmp))
        elif delta.dense or delta.sparse:
            tensors = dict(delta.dense)
            for name, (idx, val) in delta.sparse.items():
                tensors[f"{name}::index"], tensors[f"{name}::value"] = idx, val
            save_tensors(tmp / DELTA_FILE, tensors)
        if delta.tokens:
            save_tensors(tmp / TOKENS_FILE, delta.tokens)
        info = {"trainable": result.trainable, "seconds": round(result.seconds, 2),
                "final_loss": result.losses[-1] if result.losses else None, **(metrics or {})}
        manifest = write_manifest(tmp, KIND, {"tune": asdict(cfg), **(sections or {})},
                                  base=base, metrics=info)
    return manifest


def read_delta(folder: Path, manifest: Manifest, net: nn.Module) -> Delta:
    """An adapter folder's change to `net` (a network built like its base)."""
    method = manifest.config.get("tune", {}).get("method", "")
    delta = Delta()
    if (folder / TOKENS_FILE).is_file():
        verify(folder, manifest, (TOKENS_FILE,))
        delta.tokens = load_tensors(folder / TOKENS_FILE)
    if method in PEFT_METHODS:
        verify(folder, manifest, PEFT_FILES)
        delta.dense = _peft_delta(folder, net)
    elif (folder / DELTA_FILE).is_file():
        verify(folder, manifest, (DELTA_FILE,))
        tensors = load_tensors(folder / DELTA_FILE)
        for key, value in tensors.items():
            if key.endswith("::index"):
                name = key[: -len("::index")]
                delta.sparse[name] = (value, tensors[f"{name}::value"])
            elif not key.endswith("::value"):
                delta.dense[key] = value
    _check_fits(delta, net, folder)
    return delta


def _peft_delta(folder: Path, net: nn.Module) -> dict[str, Tensor]:
    """Merged-minus-base weights of a peft adapter, loaded by peft itself on a copy of `net`."""
    import peft

    base = {k: v for k, v in net.state_dict().items() if v.is_floating_point()}
    try:
        model = peft.PeftModel.from_pretrained(copy.deepcopy(net), str(folder))
    except (ValueError, RuntimeError, KeyError) as e:
        raise ConfigError(f"{folder}: the peft adapter does not fit this base ({e})") from None
    merged = model.merge_and_unload().state_dict()
    return {k: merged[k] - v for k, v in base.items() if not torch.equal(merged[k], v)}


def _check_fits(delta: Delta, net: nn.Module, folder: Path) -> None:
    params = net.state_dict()
    for name, value in delta.dense.items():
        if name not in params:
            raise ConfigError(f"{folder}: the adapter changes {name!r}, which this base "
                              "network does not have")
        if value.shape != params[name].shape:
            raise ConfigError(f"{folder}: {name} is {tuple(value.shape)} in the adapter but "
                              f"{tuple(params[name].shape)} in the base")
    for name, (idx, _) in delta.sparse.items():
        if name not in params or (idx.numel() and int(idx.max()) >= params[name].numel()):
            raise ConfigError(f"{folder}: the adapter's sparse entries of {name!r} do not fit "
                              "this base network")


def check_base(folder: Path, manifest: Manifest, base_folder: Path) -> None:
    """Raise unless the base's weights are the ones the adapter was trained on."""
    want = (manifest.base or {}).get("sha256")
    have = sha256_file(base_folder / "model.safetensors")
    if want and want != have:
        raise ConfigError(f"{folder} was tuned on base {manifest.base.get('path')} (weights "
                          f"sha256 {want[:12]}), but {base_folder} has weights {have[:12]}; "
                          "apply it to the base it was trained on")
    check_base_autoencoder(folder, manifest.base, base_folder / AE_WEIGHTS)


# ----------------------------------------------------------------------------- composition


def ties(deltas: Sequence[dict[str, Tensor]], weights: Sequence[float], density: float = 0.5
         ) -> dict[str, Tensor]:
    """TIES-Merging: Resolving Interference When Merging Models (2023): trim each change to its
    largest `density` fraction, elect each entry's sign by total mass, average the agreeing."""
    out = {}
    for name in sorted({k for d in deltas for k in d}):
        stack = []
        for d, w in zip(deltas, weights, strict=True):
            v = d.get(name)
            if v is None:
                continue
            v = v * w
            k = max(1, int(density * v.numel()))
            cut = v.abs().flatten().kthvalue(v.numel() - k + 1).values
            stack.append(torch.where(v.abs() >= cut, v, torch.zeros_like(v)))
        t = torch.stack(stack)
        sign = torch.sign(t.sum(0))
        agree = (torch.sign(t) == sign) & (t != 0)
        out[name] = (t * agree).sum(0) / agree.sum(0).clamp_min(1)
    return out


def combine(deltas: Sequence[Delta], weights: Sequence[float], params: dict[str, Tensor],
            how: str = "sum") -> dict[str, Tensor]:
    """One weight change from several: sum = task arithmetic ("Editing Models with Task
    Arithmetic", 2023): sum_i w_i * delta_i; ties = TIES-Merging of the weighted changes."""
    if how not in COMBINES:
        raise ConfigError(f"unknown combination {how!r}; valid: {', '.join(COMBINES)}")
    full = [d.full(params) for d in deltas]
    if how == "ties" and len(full) > 1:
        return ties(full, weights)
    out: dict[str, Tensor] = {}
    for d, w in zip(full, weights, strict=True):
        for k, v in d.items():
            out[k] = out[k] + w * v if k in out else w * v
    return out


@dataclass
class MergedAdapters:
    """Adapters merged into a network: `unmerge()` subtracts the same change again."""

    net: nn.Module
    change: dict[str, Tensor]

    @torch.no_grad()
    def unmerge(self) -> None:
        state = self.net.state_dict()
        for k, v in self.change.items():
            state[k].sub_(v.to(state[k].dtype))


@torch.no_grad()
def merge(net: nn.Module, change: dict[str, Tensor]) -> MergedAdapters:
    """Add a weight change to `net` in place."""
    state = net.state_dict()
    for k, v in change.items():
        state[k].add_(v.to(state[k].dtype))
    return MergedAdapters(net, change)


def install_tokens(pipe: Any, tokens: dict[str, Tensor]) -> None:
    """Give the pipeline's text encoder the new tokens (Textual Inversion) and forget cached
    embeddings, which were computed without them."""
    from difflab.text.hf import add_token

    if not tokens:
        return
    for token, vector in tokens.items():
        add_token(pipe.conditioner.encoder, token, vector=vector)
    pipe.conditioner.cache.entries.clear()


def parse_adapter(spec: str) -> tuple[str, float]:
    """'DIR' or 'DIR:WEIGHT' -> (DIR, weight)."""
    path, sep, weight = spec.rpartition(":")
    if not sep or not path:
        return spec, 1.0
    try:
        return path, float(weight)
    except ValueError:
        raise ConfigError(f"--adapter {spec!r}: the weight after ':' must be a number, e.g. "
                          f"{path}:0.8") from None


def apply_adapters(pipe: Any, adapters: Sequence[tuple[str | Path, float]],
                   how: str = "sum") -> MergedAdapters:
    """Merge adapters (folder, weight) into a loaded base pipeline; their bases must match."""
    base_folder = Path(pipe.source)
    params = dict(pipe.net.state_dict())
    deltas, names = [], []
    for path, weight in adapters:
        folder = resolve(path)
        manifest = read_manifest(folder)
        if manifest.kind != KIND:
            raise ConfigError(f"{folder} is a {manifest.kind!r} artefact, not an adapter")
        check_base(folder, manifest, base_folder)
        delta = read_delta(folder, manifest, pipe.net)
        install_tokens(pipe, delta.tokens)
        deltas.append(delta)
        names.append(f"{manifest.config['tune']['method']} {folder.name} x{weight:g}")
    merged = merge(pipe.net, combine(deltas, [w for _, w in adapters], params, how))
    pipe.labels["adapters"] = ", ".join(names) + (f" ({how})" if len(names) > 1 else "")
    return merged


@register_artefact(KIND)
def load_adapter(folder: Path, manifest: Manifest, device: str) -> Any:
    """An adapter folder: its base (by name or path, checked by hash) with the adapter merged."""
    from difflab.runtime.artefacts import load

    base = (manifest.base or {}).get("path")
    if not base:
        raise ConfigError(f"{folder / MANIFEST} names no base model")
    pipe = load(base, device)
    apply_adapters(pipe, [(folder, 1.0)])
    return pipe


# ----------------------------------------------------------------------------- quantized bases


def lora_factors(folder: str | Path) -> dict[str, tuple[Tensor, Tensor]]:
    """A LoRA adapter's factors {module name: (down (r, I[, k, k]), up (O, r[, 1, 1]) * scale)},
    read from peft's files; each layer's scale is its alpha / rank (peft's rank and alpha
    patterns included)."""
    import json

    from peft.utils.other import get_pattern_key

    folder = resolve(folder)
    manifest = read_manifest(folder)
    method = manifest.config.get("tune", {}).get("method", "")
    cfg = json.loads((folder / PEFT_FILES[0]).read_text()) if method == "lora" else {}
    if method != "lora" or cfg.get("use_dora"):
        raise ConfigError(f"{folder}: only plain LoRA adapters (no DoRA) join a quantized "
                          f"base's low-rank branch; this one is {method!r}")
    verify(folder, manifest, PEFT_FILES)
    tensors = load_tensors(folder / PEFT_FILES[1])

    def setting(patterns: dict[str, float], name: str, default: float) -> float:
        # the pattern peft itself applies to this layer, if any
        return patterns.get(get_pattern_key(patterns.keys(), name), default)

    def scale(name: str) -> float:
        return (setting(cfg.get("alpha_pattern") or {}, name, cfg["lora_alpha"])
                / setting(cfg.get("rank_pattern") or {}, name, cfg["r"]))

    prefix, a, b = "base_model.model.", ".lora_A.weight", ".lora_B.weight"
    names = {key: key[len(prefix):-len(a)] for key in tensors if key.endswith(a)}
    return {name: (tensors[key], tensors[key[:-len(a)] + b] * scale(name))
            for key, name in names.items()}


@dataclass
class JoinedAdapters:
    """LoRA adapters joined to quantized layers' low-rank branches; `unjoin()` restores them."""

    before: list[tuple[nn.Module, Any]]

    def unjoin(self) -> None:
        for layer, (L1, L2) in reversed(self.before):
            layer.set_lowrank(L1, L2)


def join_adapters(pipe: Any, adapters: Sequence[tuple[str | Path, float]]) -> JoinedAdapters:
    """LoRA adapters on a quantized base, as SVDQuant runs them ("SVDQuant", 2024): each LoRA
    joins the 16-bit low-rank branch of its layers; the quantized weights stay as they are."""
    from difflab.quant.modules import _QuantLayer

    source = Path(pipe.source)
    manifest = read_manifest(source)
    base_sha = (manifest.base or {}).get("sha256") if manifest.kind != "checkpoint" \
        else sha256_file(source / "model.safetensors")
    modules = dict(pipe.net.named_modules())
    joined = JoinedAdapters([])
    for path, weight in adapters:
        folder = resolve(path)
        want = (read_manifest(folder).base or {}).get("sha256")
        if want and base_sha and want != base_sha:
            raise ConfigError(f"{folder} was tuned on weights sha256 {want[:12]}, but "
                              f"{source} quantizes weights {base_sha[:12]}; join it to a "
                              "quantized copy of the base it was trained on")
        for name, (down, up) in lora_factors(folder).items():
            layer = modules.get(name)
            if not isinstance(layer, _QuantLayer):
                joined.unjoin()
                raise ConfigError(f"{path}: layer {name!r} is not a quantized layer of this "
                                  "network; apply the adapter to the float base instead")
            joined.before.append((layer, layer.join_lowrank(down, up * weight)))
    pipe.labels["adapters"] = ", ".join(f"lora {Path(p).name} x{w:g} (joined)"
                                        for p, w in adapters)
    return joined
