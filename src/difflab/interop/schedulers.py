"""diffusers schedulers as difflab processes and sigma schedules.

A diffusers scheduler is a stateful `step()` object; difflab splits the same information into a
process (the beta table and parameterisation, which fix the denoiser wrapper and the sigma ->
timestep map) and a schedule (a 1-D tensor of sigmas ending in 0). `process_from_scheduler`
reads the first from a scheduler config, `scheduler_sigmas` the second from a scheduler whose
timesteps were set, so a difflab sampler walks exactly the noise levels diffusers would.

Conventions that differ (each is handled here or named in the error raised):
- diffusers' DDIM and DPM-Solver keep the VP sample alpha x0 + sigma_vp noise and start from
  x = noise; difflab samples in VE form x / alpha. `ve_from_vp` converts a sample (at sigma 0,
  the end of sampling, the two agree). Euler keeps the VE form already.
- difflab's own default schedules (`VPProcess.default_schedule`: trailing spacing;
  `get_sigmas_flow`: t uniform from 1 to 0) are not diffusers' timestep spacings: pass
  `scheduler_sigmas(...)` where the same noise levels are wanted.
- A schedule ends in 0: a scheduler configured to stop at sigma_min (final_sigmas_type
  "sigma_min", DDIM's set_alpha_to_one = false) is refused with the setting to change.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from difflab.config import ConfigError
from difflab.core.processes import FlowProcess, VPProcess

PREDICTIONS = {"epsilon": "eps", "v_prediction": "v", "sample": "x0"}
BETA_SCHEDULES = {"linear": "linear", "scaled_linear": "scaled_linear",
                  "squaredcos_cap_v2": "cosine"}
FLOW_SCHEDULERS = ("FlowMatchEulerDiscreteScheduler",)
# scheduler options that change the noise table or the model input in ways difflab's processes
# do not express (name -> the value that is supported)
UNSUPPORTED = {"trained_betas": None, "rescale_betas_zero_snr": False,
               "timestep_type": "discrete",
               "use_exponential_sigmas": False, "use_beta_sigmas": False,
               "invert_sigmas": False, "shift_terminal": None, "stochastic_sampling": False}


def _config(scheduler_or_config: Any) -> dict[str, Any]:
    config = getattr(scheduler_or_config, "config", scheduler_or_config)
    if not isinstance(config, Mapping):
        raise ConfigError(f"expected a diffusers scheduler or its config dict, got "
                          f"{type(scheduler_or_config).__name__}")
    data = dict(config)
    if "_class_name" not in data and not isinstance(scheduler_or_config, Mapping):
        data["_class_name"] = type(scheduler_or_config).__name__
    return data


def build_scheduler(config: Mapping[str, Any]) -> Any:
    """A diffusers scheduler from a config dict naming its class in `_class_name` (as a
    folder's scheduler_config.json does)."""
    from difflab.interop import require_diffusers

    diffusers = require_diffusers()
    config = dict(config)
    name = str(config.pop("_class_name", ""))
    cls = getattr(diffusers, name, None)
    if not name.endswith("Scheduler") or cls is None:
        raise ConfigError(f"{name!r} is not a diffusers scheduler class (e.g. "
                          "EulerDiscreteScheduler, DPMSolverMultistepScheduler)")
    return cls.from_config(config)


def _check_supported(cfg: dict[str, Any]) -> None:
    for key, ok in UNSUPPORTED.items():
        if key in cfg and cfg[key] != ok and not (ok is False and cfg[key] is None):
            raise ConfigError(f"scheduler option {key}={cfg[key]!r} has no difflab process; "
                              f"valid: {key}={ok!r}")


def dynamic_shift(scheduler_or_config: Any, image_seq_len: int) -> tuple[float, float]:
    """(mu, shift) of a flow scheduler with `use_dynamic_shifting` for `image_seq_len` image
    tokens: mu linear in the token count between (base_image_seq_len, base_shift) and
    (max_image_seq_len, max_shift), as FLUX.1's pipeline computes it; shift = exp(mu)
    ("exponential" time shift) or mu ("linear")."""
    import math

    cfg = _config(scheduler_or_config)
    lo, hi = cfg.get("base_image_seq_len", 256), cfg.get("max_image_seq_len", 4096)
    b0, b1 = cfg.get("base_shift", 0.5), cfg.get("max_shift", 1.15)
    m = (b1 - b0) / (hi - lo)
    mu = image_seq_len * m + (b0 - m * lo)
    kind = cfg.get("time_shift_type", "exponential")
    if kind not in ("exponential", "linear"):
        raise ConfigError(f"time_shift_type {kind!r}; valid: exponential, linear")
    return mu, math.exp(mu) if kind == "exponential" else mu


def process_from_scheduler(scheduler_or_config: Any, image_seq_len: int | None = None
                           ) -> VPProcess | FlowProcess:
    """The difflab process of a diffusers scheduler (object or config dict): VP with its beta
    table and prediction type ("DDPM", 2020), or rectified flow with its shift (SD3, 2024);
    a flow scheduler with dynamic shifting (FLUX.1) needs the image's token count."""
    cfg = _config(scheduler_or_config)
    _check_supported(cfg)
    name = cfg.get("_class_name", "")
    N = int(cfg.get("num_train_timesteps", 1000))
    prediction = cfg.get("prediction_type", "epsilon")
    if name in FLOW_SCHEDULERS or cfg.get("use_flow_sigmas") or prediction == "flow_prediction":
        if N != 1000:  # FlowProcess feeds the network t = 1000 sigma, as diffusers does for N
            raise ConfigError(f"flow scheduler with num_train_timesteps={N}; difflab's flow "
                              "process embeds t = 1000 sigma (valid: 1000)")
        shift = float(cfg.get("shift", cfg.get("flow_shift", 1.0)) or 1.0)
        if cfg.get("use_dynamic_shifting"):
            if image_seq_len is None:
                raise ConfigError("this flow scheduler shifts by the image size "
                                  "(use_dynamic_shifting): give image_seq_len, the image's "
                                  "token count")
            shift = float(dynamic_shift(cfg, image_seq_len)[1])
        return FlowProcess(shift=shift)
    if prediction not in PREDICTIONS:
        raise ConfigError(f"prediction_type {prediction!r} has no difflab denoiser; valid: "
                          f"{', '.join(PREDICTIONS)}")
    beta_schedule = cfg.get("beta_schedule", "linear")
    if beta_schedule not in BETA_SCHEDULES:
        raise ConfigError(f"beta_schedule {beta_schedule!r} has no difflab table; valid: "
                          f"{', '.join(BETA_SCHEDULES)}")
    schedule = BETA_SCHEDULES[beta_schedule]
    process = VPProcess(prediction=PREDICTIONS[prediction], schedule=schedule, num_timesteps=N)
    if schedule == "cosine":
        return process
    betas = (float(cfg.get("beta_start", 0.0001)), float(cfg.get("beta_end", 0.02)))
    if betas == process.beta_range():  # the schedule's own default: leave the fields unset
        return process
    return VPProcess(prediction=process.prediction, schedule=schedule, num_timesteps=N,
                     beta_start=betas[0], beta_end=betas[1])


def _ddim_sigmas(scheduler: Any) -> Tensor:
    """VE sigmas of a DDIM-style scheduler (no `.sigmas`): abar at each timestep, then the
    step's target t - N // n, which must be the next timestep for a sigma list to describe it."""
    cfg, ts = scheduler.config, scheduler.timesteps.long()
    ratio = cfg.num_train_timesteps // scheduler.num_inference_steps
    targets = ts - ratio
    if ts.numel() > 1 and not torch.equal(targets[:-1], ts[1:]):
        raise ConfigError(f"{type(scheduler).__name__} steps from t to t - {ratio}, which is "
                          f"not the next timestep with timestep_spacing="
                          f"{cfg.timestep_spacing!r} and {scheduler.num_inference_steps} steps; "
                          "valid: 'leading', or 'trailing' with steps dividing "
                          f"{cfg.num_train_timesteps}")
    abar = scheduler.alphas_cumprod.double()
    final = float(scheduler.final_alpha_cumprod)
    if targets[-1] >= 0 or final != 1.0:
        raise ConfigError(f"{type(scheduler).__name__} ends at sigma > 0 (set_alpha_to_one="
                          f"{cfg.get('set_alpha_to_one')!r}); difflab schedules end in 0: "
                          "valid: set_alpha_to_one=True")
    a = abar[ts]
    return torch.cat([((1 - a) / a).sqrt(), a.new_zeros(1)])


def scheduler_sigmas(scheduler: Any, steps: int, **set_timesteps: Any) -> Tensor:
    """The (steps + 1,) float64 sigmas, ending in 0, at which `scheduler` evaluates the model
    for `steps` steps (VE sigma for VP schedulers, t for flow matching); `set_timesteps` are
    further arguments of the scheduler's `set_timesteps` (FLUX.1's pipeline: `sigmas`, `mu`)."""
    if not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"steps must be an int >= 1, got {steps!r}")
    _check_supported(_config(scheduler))
    if "sigmas" in set_timesteps or "timesteps" in set_timesteps:
        scheduler.set_timesteps(**set_timesteps)  # diffusers takes these instead of the count
    else:
        scheduler.set_timesteps(steps, **set_timesteps)
    sigmas = getattr(scheduler, "sigmas", None)
    if sigmas is None:
        return _ddim_sigmas(scheduler)
    sigmas = torch.as_tensor(sigmas).double().cpu()
    if sigmas[-1] != 0:
        raise ConfigError(f"{type(scheduler).__name__} ends at sigma {float(sigmas[-1]):.4g}, "
                          "not 0 (final_sigmas_type='sigma_min'); difflab schedules end in 0: "
                          "valid: final_sigmas_type='zero'")
    return sigmas


def ve_from_vp(x: Tensor, sigma: float | Tensor) -> Tensor:
    """A VP sample x_vp = alpha x0 + sigma_vp noise (diffusers' DDIM, DPM-Solver) in difflab's
    VE form x_vp / alpha, alpha = 1 / sqrt(1 + sigma^2) for VE sigma `sigma`."""
    return x * (1 + torch.as_tensor(sigma, dtype=torch.float64) ** 2).sqrt().to(x.dtype)


@torch.no_grad()
def diffusers_loop(scheduler: Any, net: Any, noise: Tensor, steps: int,
                   cond: Mapping[str, Tensor], uncond: Mapping[str, Tensor] | None = None,
                   scale: float = 1.0, exact_flow_t: bool = True,
                   set_timesteps: Mapping[str, Any] | None = None) -> Tensor:
    """diffusers' own sampling loop (scale the input, predict with CFG on the raw output,
    `scheduler.step`), on wrapped network `net`, from `noise` (B, C, H, W): the reference that
    difflab's samplers are compared with. DPM-Solver with flow sigmas casts its timesteps to
    int64; with `exact_flow_t` the model is given the exact 1000 t it steps with instead, as
    difflab does; `set_timesteps` as in `scheduler_sigmas`."""
    extra = dict(set_timesteps or {})
    if "sigmas" in extra or "timesteps" in extra:
        scheduler.set_timesteps(**extra)
    else:
        scheduler.set_timesteps(steps, **extra)
    x = noise * getattr(scheduler, "init_noise_sigma", 1.0)
    int_flow = exact_flow_t and scheduler.timesteps.dtype == torch.int64 and \
        scheduler.config.get("use_flow_sigmas", False)
    for i, t in enumerate(scheduler.timesteps):
        x_in = scheduler.scale_model_input(x, t) if hasattr(scheduler, "scale_model_input") else x
        t_net = (scheduler.sigmas[i] * 1000 if int_flow else t).to(x.device)
        if scale == 1.0 or uncond is None:
            out = net(x_in, t_net.expand(x.shape[0]), **cond)
        else:
            both = net(torch.cat([x_in, x_in]), t_net.expand(2 * x.shape[0]),
                       **{k: torch.cat([cond[k], uncond[k]]) for k in cond})
            out_c, out_u = both.chunk(2)
            out = out_u + scale * (out_c - out_u)
        x = scheduler.step(out, t, x).prev_sample
    return x


def difflab_start(scheduler: Any, noise: Tensor, sigmas: Tensor, process: Any) -> Tensor:
    """The VE-form x that difflab's samplers start from for the same start as `diffusers_loop`
    (diffusers keeps the VP scale in DDIM and DPM-Solver, where init_noise_sigma is 1)."""
    x = noise * getattr(scheduler, "init_noise_sigma", 1.0)
    vp_scale = isinstance(process, VPProcess) and getattr(scheduler, "init_noise_sigma", 1.0) == 1
    return ve_from_vp(x, sigmas[0]) if vp_scale else x
