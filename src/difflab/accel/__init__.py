"""Training-free acceleration as named, removable hooks on a model's declared blocks.

`apply_accel(model, name, options) -> AccelHandle` (or `apply_<method>(model, Config)`);
`handle.remove()` restores the model bit for bit. Methods: deepcache, encoder_propagation
(UNet); block_cache, teacache, first_block_cache (DiT / MMDiT); ras (DiT). Bottleneck sampling
is a sampler-level wrapper (`bottleneck.sample_bottleneck`), not a hook.
"""

from difflab.accel.api import (
    ACCELERATORS,
    accel_config,
    apply_accel,
    full_steps,
    parse_accel_spec,
    register_accel,
)
from difflab.accel.block_cache import (
    BlockCacheConfig,
    FirstBlockCacheConfig,
    TeaCacheConfig,
    apply_block_cache,
    apply_first_block_cache,
    apply_teacache,
    calibrate_teacache,
)
from difflab.accel.hooks import AccelHandle, ModelHook, add_hook, hook_names, remove_hook
from difflab.accel.ras import RegionAdaptiveConfig, apply_ras
from difflab.accel.unet_cache import (
    DeepCacheConfig,
    EncoderPropagationConfig,
    apply_deepcache,
    apply_encoder_propagation,
)

__all__ = [
    "ACCELERATORS",
    "AccelHandle",
    "BlockCacheConfig",
    "DeepCacheConfig",
    "EncoderPropagationConfig",
    "FirstBlockCacheConfig",
    "ModelHook",
    "RegionAdaptiveConfig",
    "TeaCacheConfig",
    "accel_config",
    "add_hook",
    "apply_accel",
    "apply_block_cache",
    "apply_deepcache",
    "apply_encoder_propagation",
    "apply_first_block_cache",
    "apply_ras",
    "apply_teacache",
    "calibrate_teacache",
    "full_steps",
    "hook_names",
    "parse_accel_spec",
    "register_accel",
    "remove_hook",
]
