"""Inference: load any artefact difflab writes into a ready `Pipeline`, and sample it.

`load(path_or_name)` reads a run folder (its latest checkpoint), a checkpoint folder, a
quantized folder or a shipped model's name. Nothing here imports `difflab.train`.
`difflab.runtime.machine` chooses precision, int8 kernels and threads by capability.
"""

from difflab.distill import student as _student  # noqa: F401, E402  (registers "student")
from difflab.interop import folders as _diffusers_folders  # noqa: F401, E402  ("diffusers")
from difflab.runtime import loaders, quantized  # noqa: F401  (register the built-in kinds)
from difflab.runtime.artefacts import (
    ARTEFACTS,
    MANIFEST,
    Manifest,
    export_model,
    load,
    read_manifest,
    register_artefact,
    write_manifest,
)
from difflab.runtime.pipeline import Pipeline, SampleConfig, sample_config
from difflab.runtime.plan import Plan, load_plan, read_plans, write_plans
from difflab.runtime.quantized import quantize_pipeline
from difflab.tune import adapters as _adapters  # noqa: F401, E402  (registers "adapter")

__all__ = ["ARTEFACTS", "MANIFEST", "Manifest", "Pipeline", "Plan", "SampleConfig", "export_model",
           "load", "load_plan", "quantize_pipeline", "read_manifest", "read_plans",
           "register_artefact", "sample_config", "write_manifest", "write_plans"]
