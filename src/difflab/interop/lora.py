"""LoRA adapters in diffusers' format on wrapped diffusers models, through peft.

The format is what diffusers writes (`save_lora_adapter`, or a pipeline's `save_lora_weights`):
one `pytorch_lora_weights.safetensors` of peft tensors `<module>.lora_A.weight` /
`<module>.lora_B.weight` (keys optionally prefixed `unet.` or `transformer.`) with the peft
`LoraConfig` as JSON in the file's `lora_adapter_metadata`. Files without it are read with rank
from the tensor shapes and alpha = rank (diffusers' own default). peft injects and removes the
layers ("LoRA: Low-Rank Adaptation of Large Language Models", 2021), on every wrapped class
alike (diffusers' PixArt and DiT have no adapter methods of their own). Other formats (kohya's
`lora_down` / `lora_up`) are refused by name.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from difflab.config import ConfigError, MissingFileError

WEIGHTS = "pytorch_lora_weights.safetensors"
METADATA = "lora_adapter_metadata"
PREFIXES = ("transformer.", "unet.")


def _read(source: str | Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """(tensors, LoraConfig fields or {}) of a LoRA file or a folder holding WEIGHTS."""
    from safetensors import safe_open

    path = Path(source)
    path = path / WEIGHTS if path.is_dir() else path
    if not path.is_file():
        raise MissingFileError(f"no LoRA weights at {path} (diffusers writes {WEIGHTS})")
    with safe_open(str(path), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        meta = f.metadata() or {}
    if any("lora_down" in k or "lora_up" in k for k in tensors):
        raise ConfigError(f"{path} is in kohya's format (lora_down / lora_up); valid: peft's "
                          "lora_A / lora_B keys, as diffusers writes them")
    for prefix in PREFIXES:
        if tensors and all(k.startswith(prefix) for k in tensors):
            tensors = {k[len(prefix):]: v for k, v in tensors.items()}
    return tensors, json.loads(meta[METADATA]) if METADATA in meta else {}


def _config(tensors: dict[str, Tensor], fields: dict[str, Any]) -> Any:
    """The peft LoraConfig stored with the file, or one inferred from the tensor shapes."""
    from peft import LoraConfig

    if fields:
        known = {f.name for f in dataclasses.fields(LoraConfig)}
        return LoraConfig(**{k: v for k, v in fields.items() if k in known})
    ranks = {k.removesuffix(".lora_A.weight"): int(v.shape[0]) for k, v in tensors.items()
             if k.endswith(".lora_A.weight")}
    if not ranks:
        raise ConfigError("the LoRA file holds no lora_A weights")
    r = Counter(ranks.values()).most_common(1)[0][0]
    pattern = {m: rank for m, rank in ranks.items() if rank != r}
    return LoraConfig(r=r, lora_alpha=r, target_modules=sorted(ranks), rank_pattern=pattern,
                      alpha_pattern=pattern)


@dataclasses.dataclass
class LoraHandle:
    """One loaded adapter: `set_scale(w)` reweights it, `remove()` takes it out again (the
    last removal restores the original modules, so outputs are bit-identical)."""

    model: nn.Module
    name: str

    def _layers(self) -> list[Any]:
        from peft.tuners.lora import LoraLayer

        return [m for m in self.model.modules() if isinstance(m, LoraLayer)
                and self.name in m.lora_A]

    def set_scale(self, scale: float) -> None:
        for layer in self._layers():
            layer.set_scale(self.name, scale)  # scaling = scale * alpha / r

    def remove(self) -> None:
        from diffusers.utils import recurse_remove_peft_layers

        layers = self._layers()
        others = {a for m in layers for a in m.lora_A if a != self.name}
        if others:
            for layer in layers:
                layer.delete_adapter(self.name)
        else:
            recurse_remove_peft_layers(self.model)


def load_lora(net: nn.Module, source: str | Path, *, scale: float = 1.0,
              name: str = "lora") -> LoraHandle:
    """Load a diffusers-format LoRA (file, or folder with pytorch_lora_weights.safetensors)
    onto wrapped network `net` (its `net.model`) at `scale`."""
    from peft import inject_adapter_in_model, set_peft_model_state_dict

    model = getattr(net, "model", net)
    tensors, fields = _read(source)
    config = _config(tensors, fields)
    try:
        inject_adapter_in_model(config, model, adapter_name=name)
    except ValueError as e:  # peft: target modules not found in the model
        raise ConfigError(f"LoRA {source} does not fit {type(model).__name__}: {e}") from None
    result = set_peft_model_state_dict(model, tensors, adapter_name=name)
    handle = LoraHandle(model, name)
    unexpected = [k for k in result.unexpected_keys if "lora_" in k]
    missing = [k for k in result.missing_keys if f".{name}." in k and "lora_" in k]
    if unexpected or missing:
        handle.remove()
        raise ConfigError(f"LoRA {source} does not fit {type(model).__name__}: tensors without "
                          f"a layer {unexpected[:3]}, layers without tensors {missing[:3]}")
    if scale != 1.0:
        handle.set_scale(scale)
    return handle
