"""Post-training quantization: number formats, calibration, outlier handling, mixed precision,
simulated and real (int8) quantized modules, and quantized checkpoints.

    handle = quantize(model, QuantConfig(weight_format="int4", act_format="int8"))
    ...
    handle.remove()  # the original modules, bit for bit

Every handle says whether it is `simulated` (fake quantization in float: accuracy only) or
`real` (int8 kernels: the only kind that may claim speed).
"""

from difflab.quant.calibrate import RANGE_METHODS, ActivationObserver, unet_skip_splits
from difflab.quant.config import QUANTIZERS, QuantConfig, register_quantizer
from difflab.quant.formats import (
    FORMATS,
    FloatFormat,
    IntFormat,
    compute_qparams,
    fake_quantize,
    fake_quantize_minmax,
    get_format,
)
from difflab.quant.kernels import Int8Linear, compile_for_inference, int8_mm
from difflab.quant.mixed import allocate_formats, layer_sensitivity, mixed_config
from difflab.quant.modules import ActQuantizer, QuantConv2d, QuantLinear
from difflab.quant.outliers import lowrank_split, smooth_scales
from difflab.quant.storage import (
    float_bytes,
    load_quantized,
    model_bytes,
    save_quantized,
    size_report,
)
from difflab.quant.transform import QuantHandle, dequantize, quantize, select_layers

__all__ = [
    "FORMATS",
    "QUANTIZERS",
    "RANGE_METHODS",
    "ActQuantizer",
    "ActivationObserver",
    "FloatFormat",
    "Int8Linear",
    "IntFormat",
    "QuantConfig",
    "QuantConv2d",
    "QuantHandle",
    "QuantLinear",
    "allocate_formats",
    "unet_skip_splits",
    "compile_for_inference",
    "compute_qparams",
    "dequantize",
    "fake_quantize",
    "fake_quantize_minmax",
    "float_bytes",
    "get_format",
    "int8_mm",
    "layer_sensitivity",
    "load_quantized",
    "lowrank_split",
    "mixed_config",
    "model_bytes",
    "quantize",
    "register_quantizer",
    "save_quantized",
    "select_layers",
    "size_report",
    "smooth_scales",
]
