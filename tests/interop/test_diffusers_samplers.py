"""difflab's samplers on tiny diffusers models against diffusers' own schedulers.

Relative difference = max |difflab - diffusers| / max |diffusers| over the final samples, both
runs in float64 from the same initial noise and the same timesteps ("trailing" spacing, 8 steps,
so every timestep is an integer training index; see difflab.interop.denoisers). diffusers' Euler
schedulers step in float32, which bounds the agreement near 1e-7.
"""

import pytest
import torch

pytest.importorskip("diffusers", reason="diffusers is an optional extra: difflab[diffusers]")

from diffusers import (  # noqa: E402
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
)

from difflab.core.denoisers import FlowDenoiser  # noqa: E402
from difflab.core.samplers import get_sampler  # noqa: E402
from difflab.core.schedules import get_sigmas_flow  # noqa: E402
from difflab.interop import (  # noqa: E402
    diffusers_denoiser,
    tiny_dit,
    tiny_pixart,
    tiny_sd3,
    tiny_unet,
    vp_sigmas,
)

STEPS = 8  # divides 1000, so DDIM's fixed step ratio meets every trailing timestep
TOL = 1e-5
F64 = torch.float64
SD_BETAS = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}
VP_SCHEDULERS = {
    "euler": lambda betas: EulerDiscreteScheduler(timestep_spacing="trailing", **betas),
    "ddim": lambda betas: DDIMScheduler(timestep_spacing="trailing", clip_sample=False,
                                        set_alpha_to_one=True, **betas),
    "dpmpp_2m": lambda betas: DPMSolverMultistepScheduler(
        timestep_spacing="trailing", algorithm_type="dpmsolver++", solver_order=2,
        final_sigmas_type="zero", **betas),
}


def _inputs(seed: int = 0) -> tuple[torch.Tensor, dict]:
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(2, 4, 8, 8, generator=g, dtype=F64)
    cond = {"context": torch.randn(2, 5, 16, generator=g, dtype=F64),
            "pooled": torch.randn(2, 8, generator=g, dtype=F64),
            "y": torch.tensor([1, 7])}  # class labels, read by DiT only
    return noise, cond


@torch.no_grad()
def _diffusers_run(net, scheduler, x: torch.Tensor, cond: dict) -> torch.Tensor:
    """diffusers' own loop: scale_model_input (where the scheduler has one), the network,
    scheduler.step."""
    scale = getattr(scheduler, "scale_model_input", lambda x, t: x)
    for t in scheduler.timesteps:
        inp = scale(x, t)
        out = net(inp, t.to(F64).expand(x.shape[0]), **cond)
        x = scheduler.step(out, t, x).prev_sample
    return x


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    rel = float((a - b).abs().max() / b.abs().max())
    print(f"relative difference {rel:.2e}")  # shown with pytest -s
    return rel


@pytest.mark.parametrize("build,betas", [(tiny_unet, SD_BETAS), (tiny_pixart, {}),
                                         (tiny_dit, {})], ids=["unet", "pixart", "dit"])
@pytest.mark.parametrize("sampler", list(VP_SCHEDULERS))
def test_vp_samplers_match_diffusers(build, betas, sampler):
    net = build(seed=1).double()
    scheduler = VP_SCHEDULERS[sampler](betas)
    scheduler.set_timesteps(STEPS)
    sigmas = vp_sigmas(scheduler, STEPS, "trailing")
    ref_sigmas = scheduler.sigmas if hasattr(scheduler, "sigmas") else None
    if ref_sigmas is not None:  # the same noise levels, up to diffusers' float32 table
        torch.testing.assert_close(sigmas, ref_sigmas.to(F64), rtol=1e-6, atol=0)
    noise, cond = _inputs()
    # diffusers' start: Euler in VE-form (x = noise * sigma_max); DDIM and DPM-Solver in VP
    # form (x = noise), which is noise * sqrt(1 + sigma_max^2) in difflab's VE-form
    x_ref = noise * float(scheduler.init_noise_sigma)
    x_ve = x_ref if sampler == "euler" else noise * float((1 + sigmas[0] ** 2).sqrt())
    ref = _diffusers_run(net, scheduler, x_ref, cond)
    with torch.no_grad():
        out = get_sampler(sampler)(diffusers_denoiser(net, scheduler), x_ve, sigmas,
                                   extra_args=cond)
    assert _relative(out, ref) <= TOL


def test_flow_euler_matches_flow_match_euler():
    net = tiny_sd3(seed=1).double()
    scheduler = FlowMatchEulerDiscreteScheduler()
    sigmas = get_sigmas_flow(STEPS)  # k / 8: exact in float32, so both see the same timesteps
    scheduler.set_timesteps(sigmas=sigmas[:-1].numpy())
    noise, cond = _inputs()
    ref = _diffusers_run(net, scheduler, noise, cond)
    with torch.no_grad():
        out = get_sampler("euler")(diffusers_denoiser(net, scheduler), noise, sigmas,
                                   extra_args=cond)
    assert _relative(out, ref) <= TOL


def test_flow_dpmpp_2m_matches_dpm_solver_flow():
    net = tiny_sd3(seed=2).double()
    scheduler = DPMSolverMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=1.0,
        algorithm_type="dpmsolver++", solver_order=2, final_sigmas_type="zero")
    scheduler.set_timesteps(STEPS)
    sigmas = scheduler.sigmas.to(F64)  # diffusers' flow sigmas start at 1 - 1/1000
    noise, cond = _inputs(1)
    x = noise * sigmas[0]  # pure noise scaled as difflab's samplers start; same for both
    ref = _diffusers_run(net, scheduler, x, cond)
    # this scheduler casts its timesteps to int64 (sigma 0.8741 -> t 874, not 874.1), so the
    # difflab side truncates likewise; the sampler math is what is compared
    denoiser = FlowDenoiser(net, lambda sigma: (1000 * sigma).floor())
    assert torch.equal(denoiser.sigma_to_t(sigmas[:-1]).long(), scheduler.timesteps)
    with torch.no_grad():
        out = get_sampler("dpmpp_2m")(denoiser, x, sigmas, extra_args=cond)
    assert _relative(out, ref) <= TOL


def test_bad_input_errors_name_the_value(monkeypatch):
    from difflab.config import ConfigError
    from difflab.interop import networks

    with pytest.raises(ConfigError, match="'bogus'.*valid: epsilon"):
        diffusers_denoiser(tiny_pixart(), DDIMScheduler(prediction_type="bogus"))
    noise, cond = _inputs()
    with pytest.raises(ConfigError, match="no text attention mask"):
        tiny_sd3().double()(noise, torch.ones(2, dtype=F64), **cond,
                            context_mask=torch.zeros(2, 5, dtype=torch.bool))
    monkeypatch.setattr(networks.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match=r"pip install difflab\[diffusers\]"):
        tiny_unet()
