"""difflab's samplers and guidance on wrapped diffusers models against diffusers' own schedulers:
same model, same noise, same noise levels; max |difference| <= 1e-5 of max |sample|."""

import numpy as np
import pytest
import torch
from interop_helpers import FLUX_TOKENS, SKIP_REASON, conditioning, noise_like, tiny_net

pytest.importorskip("diffusers", reason=SKIP_REASON)
# diffusers' schedulers call np.array on tensors, which numpy 2 flags
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

from difflab.config import ConfigError  # noqa: E402
from difflab.core.guidance import cfg  # noqa: E402
from difflab.core.processes import FlowProcess, VPProcess  # noqa: E402
from difflab.core.samplers import sample_ddim, sample_dpmpp_2m, sample_euler  # noqa: E402
from difflab.interop.schedulers import (  # noqa: E402
    build_scheduler,
    difflab_start,
    diffusers_loop,
    dynamic_shift,
    process_from_scheduler,
    scheduler_sigmas,
)
from difflab.interop.tiny import tiny_scheduler_config  # noqa: E402

SD = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}
FLUX = tiny_scheduler_config("flux")
DDPM = {"beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02}
EULER, DPM, DDIM = "EulerDiscreteScheduler", "DPMSolverMultistepScheduler", "DDIMScheduler"
# (model, scheduler config, difflab sampler, CFG scale)
CASES = {
    "unet-euler-leading": ("unet", {"_class_name": EULER, **SD, "timestep_spacing": "leading",
                                    "steps_offset": 1}, sample_euler, 3.0),
    "unet-euler-trailing": ("unet", {"_class_name": EULER, **SD,
                                     "timestep_spacing": "trailing"}, sample_euler, 1.0),
    "unet-euler-linspace": ("unet", {"_class_name": EULER, **SD}, sample_euler, 1.0),
    "unet-euler-karras": ("unet", {"_class_name": EULER, **SD, "use_karras_sigmas": True},
                          sample_euler, 1.0),
    "unet-dpmpp2m": ("unet", {"_class_name": DPM, **SD}, sample_dpmpp_2m, 3.0),
    "unet-ddim": ("unet", {"_class_name": DDIM, **SD, "clip_sample": False,
                           "set_alpha_to_one": True, "steps_offset": 1}, sample_ddim, 1.0),
    "pixart-dpmpp2m": ("pixart", {"_class_name": DPM, **DDPM}, sample_dpmpp_2m, 4.5),
    "pixart-ddim-trailing": ("pixart", {"_class_name": DDIM, **DDPM, "clip_sample": False,
                                        "timestep_spacing": "trailing"}, sample_ddim, 1.0),
    "dit-ddim": ("dit", {"_class_name": DDIM, **DDPM, "clip_sample": False,
                         "set_alpha_to_one": True}, sample_ddim, 4.0),
    "dit-euler-v": ("dit", {"_class_name": EULER, **DDPM, "prediction_type": "v_prediction",
                            "timestep_spacing": "trailing"}, sample_euler, 1.0),
    "sd3-flow-euler": ("sd3", {"_class_name": "FlowMatchEulerDiscreteScheduler", "shift": 3.0},
                       sample_euler, 3.0),
    # diffusers casts this scheduler's timesteps to int64 (floor of 1000 t) while it steps with
    # the exact t; difflab feeds 1000 t, and so does `diffusers_loop`
    "sd3-flow-dpmpp2m": ("sd3", {"_class_name": DPM, "use_flow_sigmas": True,
                                 "prediction_type": "flow_prediction", "flow_shift": 3.0},
                         sample_dpmpp_2m, 1.0),
    "flux-flow-euler": ("flux", FLUX, sample_euler, 1.0),
}
# FLUX.1's pipeline: its own sigmas, shifted by mu for the image's token count
MU = dynamic_shift(FLUX, FLUX_TOKENS)[0]
SET_TIMESTEPS = {"flux": {"sigmas": np.linspace(1.0, 1 / 5, 5).tolist(), "mu": MU}}
STEPS = 5


@pytest.mark.parametrize("case", CASES)
@torch.no_grad()
def test_difflab_sampler_matches_diffusers_scheduler(case):
    name, sched_cfg, sampler, scale = CASES[case]
    _, net = tiny_net(name)
    cond, uncond = conditioning(name)
    noise = noise_like(net)
    scheduler = build_scheduler(sched_cfg)
    extra = SET_TIMESTEPS.get(name, {})
    ref = diffusers_loop(scheduler, net, noise, STEPS, cond, uncond, scale, set_timesteps=extra)

    process = process_from_scheduler(scheduler, image_seq_len=FLUX_TOKENS)
    sigmas = scheduler_sigmas(build_scheduler(sched_cfg), STEPS, **extra)
    x_init = difflab_start(scheduler, noise, sigmas, process)
    model = process.denoiser(net)
    if scale != 1.0:
        model = cfg(model, scale, uncond)
    out = sampler(model, x_init, sigmas, extra_args=cond)
    assert out.shape == ref.shape and torch.isfinite(out).all()
    assert (out - ref).abs().max() <= 1e-5 * ref.abs().max()


def test_process_table_is_the_schedulers():
    scheduler = build_scheduler({"_class_name": EULER, **SD})
    process = process_from_scheduler(scheduler)
    assert process == VPProcess(schedule="scaled_linear")  # SD's betas are the default
    assert process_from_scheduler({"_class_name": EULER, **SD, "beta_end": 0.02}) == \
        VPProcess(schedule="scaled_linear", beta_start=0.00085, beta_end=0.02)
    # diffusers multiplies out its table in float32 (1000 factors), difflab in float64
    abar = 1 / (1 + process.train_sigmas() ** 2)
    torch.testing.assert_close(abar, scheduler.alphas_cumprod.double(), rtol=0, atol=1e-6)
    assert process_from_scheduler({"_class_name": DDIM, "beta_schedule": "squaredcos_cap_v2",
                                   "prediction_type": "sample"}) == \
        VPProcess(prediction="x0", schedule="cosine")
    assert process_from_scheduler({"_class_name": "FlowMatchEulerDiscreteScheduler",
                                   "shift": 3.0}) == FlowProcess(shift=3.0)
    # dynamic shifting: mu from the token count (0.5 at 256 tokens), shift exp(mu)
    assert process_from_scheduler(FLUX, image_seq_len=256).shift == pytest.approx(np.exp(0.5))
    with pytest.raises(ConfigError, match="give image_seq_len"):
        process_from_scheduler(FLUX)


def test_schedules_diffusers_cannot_share_are_refused():
    with pytest.raises(ConfigError, match="not the next timestep"):
        scheduler_sigmas(build_scheduler({"_class_name": DDIM, **DDPM,
                                          "timestep_spacing": "linspace"}), 7)
    with pytest.raises(ConfigError, match="set_alpha_to_one"):
        scheduler_sigmas(build_scheduler({"_class_name": DDIM, **DDPM,
                                          "set_alpha_to_one": False}), 5)
    with pytest.raises(ConfigError, match="final_sigmas_type='zero'"):
        scheduler_sigmas(build_scheduler({"_class_name": EULER, **SD,
                                          "final_sigmas_type": "sigma_min"}), 5)
    with pytest.raises(ConfigError, match="rescale_betas_zero_snr"):
        process_from_scheduler({"_class_name": DDIM, "rescale_betas_zero_snr": True})
    with pytest.raises(ConfigError, match="beta_schedule 'sigmoid'"):
        process_from_scheduler({"_class_name": DDIM, "beta_schedule": "sigmoid"})
