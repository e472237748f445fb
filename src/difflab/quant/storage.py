"""Quantized checkpoints: codes (4-bit formats packed two per byte) and scales in safetensors, the
`QuantConfig` in JSON beside them; `model_bytes` counts what a model takes on disk.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from difflab.config import MissingFileError
from difflab.io import load_tensors, save_tensors, write_json
from difflab.quant.config import QuantConfig
from difflab.quant.formats import pack_codes, unpack_codes
from difflab.quant.kernels import Int8Linear
from difflab.quant.modules import _QuantLayer
from difflab.quant.transform import QuantHandle, apply_layers, plan

QUANT_LAYERS = (_QuantLayer, Int8Linear)
WEIGHTS_FILE, CONFIG_FILE = "model.safetensors", "quant.json"


def _own_bytes(m: nn.Module) -> int:
    """Parameters and persistent buffers of `m` itself (not its children)."""
    total = sum(p.numel() * p.element_size() for p in m.parameters(recurse=False))
    for name, b in m.named_buffers(recurse=False):
        if b is not None and name not in m._non_persistent_buffers_set:
            total += b.numel() * b.element_size()
    return total


def model_bytes(model: nn.Module) -> int:
    """Bytes of weights on disk: quantized layers count their codes at their bit width."""
    if isinstance(model, QUANT_LAYERS):
        return model.storage_bytes()
    return _own_bytes(model) + sum(model_bytes(c) for c in model.children())


def float_bytes(model: nn.Module, dtype: torch.dtype = torch.bfloat16) -> int:
    """Bytes the same model would take with every floating tensor stored in `dtype`."""
    itemsize = torch.empty(0, dtype=dtype).element_size()
    total = 0
    for t in [*model.parameters(), *model.buffers()]:
        total += t.numel() * (itemsize if t.is_floating_point() else t.element_size())
    return total


def size_report(handle: QuantHandle) -> dict[str, int | float]:
    """Quantized size against the same model in fp32 and bf16 (originals counted)."""
    q = model_bytes(handle.model)
    handle_layers = dict(handle.layers)
    originals = dict(handle.originals)
    handle.remove()  # measure the float model exactly, then put the quantized layers back
    try:
        fp32, bf16 = float_bytes(handle.model, torch.float32), float_bytes(handle.model)
    finally:
        for name, layer in handle_layers.items():
            parent, _, child = name.rpartition(".")
            setattr(handle.model.get_submodule(parent) if parent else handle.model, child, layer)
        handle.layers.update(handle_layers)
        handle.originals.update(originals)
    return {"bytes": q, "fp32_bytes": fp32, "bf16_bytes": bf16,
            "vs_fp32": fp32 / q, "vs_bf16": bf16 / q}


def save_quantized(handle: QuantHandle, out_dir: str | Path) -> Path:
    """Write `model.safetensors` (the whole quantized model) and `quant.json` to `out_dir`."""
    out = Path(out_dir)
    state = handle.model.state_dict()
    layers = {}
    for name, m in handle.layers.items():
        info: dict = {"execution": m.execution, "smooth": m.smooth is not None}
        if "codes" in dict(m.named_buffers(recurse=False)):
            codes = state[f"{name}.codes"]
            info.update(bits=m.spec.fmt.bits, codes_shape=list(codes.shape))
            state[f"{name}.codes"] = pack_codes(codes, m.spec.fmt.bits)
        layers[name] = info
    save_tensors(out / WEIGHTS_FILE, state)
    write_json(out / CONFIG_FILE, {"config": handle.config.to_dict(), "layers": layers,
                                   "execution": handle.execution,
                                   "bytes": model_bytes(handle.model)})
    return out


def load_quantized(model: nn.Module, path: str | Path) -> QuantHandle:
    """Quantize a float `model` of the same architecture structurally, then load stored codes
    and scales into it (no calibration run needed)."""
    path = Path(path)
    meta_file = path / CONFIG_FILE
    if not meta_file.is_file():
        raise MissingFileError(f"quantized checkpoint not found: {meta_file}")
    meta = json.loads(meta_file.read_text())
    config = QuantConfig.from_dict(meta["config"])
    state = load_tensors(path / WEIGHTS_FILE)
    handle, layers = plan(model, config)
    smooth = {n: torch.ones(m.weight.shape[1]) for n, m in layers.items()
              if meta["layers"].get(n, {}).get("smooth")}
    apply_layers(handle, layers, {}, smooth)
    for name, info in meta["layers"].items():
        if "codes_shape" in info:
            key = f"{name}.codes"
            state[key] = unpack_codes(state[key], info["bits"], tuple(info["codes_shape"]))
    model.load_state_dict(state, strict=True)
    for m in handle.layers.values():
        if isinstance(m, _QuantLayer):
            m.refresh()
    return handle
