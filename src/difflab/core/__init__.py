"""The diffusion core (math only): processes, denoisers, schedules, samplers, guidance, context."""

from difflab.core.analytic import ExactDenoiser, ExactFlowDenoiser, GaussianMixture
from difflab.core.context import StepContext, branch_context, current_context, step_context
from difflab.core.denoisers import (
    Denoiser,
    EDMDenoiser,
    EpsDenoiser,
    FlowDenoiser,
    ScaledDenoiser,
    VDenoiser,
    X0Denoiser,
)
from difflab.core.guidance import GuidedDenoiser, cfg, composable
from difflab.core.processes import (
    PROCESSES,
    EDMProcess,
    FlowProcess,
    VPProcess,
    process_from_config,
)
from difflab.core.samplers import (
    SAMPLERS,
    BatchNoise,
    count_nfe,
    ddim_step,
    get_sampler,
    initial_noise,
    invert_ddim,
    register_sampler,
    sample_ddim,
    sample_dpmpp_2m,
    sample_dpmpp_2m_sde,
    sample_euler,
    sample_euler_ancestral,
    sample_heun,
    sample_lms,
)
from difflab.core.schedules import (
    SCHEDULES,
    get_sigmas,
    get_sigmas_exponential,
    get_sigmas_flow,
    get_sigmas_karras,
    get_sigmas_polyexponential,
    get_sigmas_vp_uniform,
)

__all__ = [
    "PROCESSES", "SAMPLERS", "SCHEDULES", "BatchNoise", "Denoiser", "EDMDenoiser", "EDMProcess",
    "EpsDenoiser", "ExactDenoiser", "ExactFlowDenoiser", "FlowDenoiser", "FlowProcess",
    "GaussianMixture", "GuidedDenoiser", "ScaledDenoiser", "StepContext", "VDenoiser",
    "VPProcess", "X0Denoiser", "branch_context", "cfg", "composable", "count_nfe",
    "current_context", "ddim_step", "get_sampler", "get_sigmas", "get_sigmas_exponential",
    "get_sigmas_flow", "get_sigmas_karras", "get_sigmas_polyexponential", "get_sigmas_vp_uniform",
    "initial_noise",
    "invert_ddim", "process_from_config", "register_sampler", "sample_ddim", "sample_dpmpp_2m",
    "sample_dpmpp_2m_sde", "sample_euler", "sample_euler_ancestral", "sample_heun", "sample_lms",
    "step_context",
]
