"""Measured convergence orders of the deterministic samplers and the DDIM inversion round trip,
on a 3-component Gaussian mixture whose exact denoiser is known (docs/core.md renders both).

    python benchmarks/core_orders.py --out benchmarks/results/core/orders.json

Order: minus the slope of log(max error) against log(steps), steps 16, 32, 64, 128 (flow
dpmpp_2m: 64, 128, 256), against a 512-step LMS solve between the same endpoints. VE runs Karras
sigmas 10 -> 0.05, flow runs t = 1 -> 0. Inversion: DDIM-encode 8 mixture samples over 100
steps, sample back with DDIM, relative error |back - x0| / |x0|.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from difflab.core.analytic import ExactDenoiser, ExactFlowDenoiser, GaussianMixture
from difflab.core.samplers import get_sampler, invert_ddim, sample_lms
from difflab.core.schedules import get_sigmas_flow, get_sigmas_karras
from difflab.eval.provenance import provenance
from difflab.io import write_json

MIX = GaussianMixture(
    torch.tensor([[1.0, 0.5, 0, 0], [-1.0, 0, 0.5, 0.2], [0.3, -1, 0, 1]], dtype=torch.float64),
    torch.tensor([0.3, 0.5, 0.4]),
    torch.tensor([0.5, 0.3, 0.2]),
)
SAMPLERS = ("euler", "heun", "dpmpp_2m", "lms")
STEPS = [16, 32, 64, 128]


def geometry(flow: bool, n: int) -> tuple:
    """(exact denoiser, sigmas, x_start) of 16 seeded starts, as tests/core/test_samplers.py."""
    z = torch.randn(16, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    if flow:
        return ExactFlowDenoiser(MIX), get_sigmas_flow(n), z
    return ExactDenoiser(MIX), get_sigmas_karras(n + 1, 0.05, 10.0)[:-1], 10.0 * z


def order(name: str, flow: bool) -> tuple[float, list[int], list[float]]:
    """(measured order, steps, max errors) of one sampler in one geometry."""
    steps = [64, 128, 256] if flow and name == "dpmpp_2m" else STEPS
    model, fine, x = geometry(flow, 512)
    ref = sample_lms(model, x, fine)
    errors = []
    for n in steps:
        model, sigmas, x = geometry(flow, n)
        errors.append((get_sampler(name)(model, x, sigmas) - ref).abs().max().item())
    return float(-np.polyfit(np.log(steps), np.log(errors), 1)[0]), steps, errors


def round_trip(flow: bool, iters: int) -> float:
    """Relative error of DDIM inversion then DDIM sampling, 100 steps."""
    model = (ExactFlowDenoiser if flow else ExactDenoiser)(MIX)
    sigmas = get_sigmas_flow(100) if flow else get_sigmas_karras(100, 0.01, 20.0)
    x0 = MIX.sample(8, torch.Generator().manual_seed(3))
    back = get_sampler("ddim")(model, invert_ddim(model, x0, sigmas, fixed_point_iters=iters),
                               sigmas)
    return float((back - x0).norm() / x0.norm())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="benchmarks/results/core/orders.json")
    args = p.parse_args()
    result: dict = {"orders": {}, "inversion": {}}
    for geo, flow in (("ve", False), ("flow", True)):
        result["orders"][geo] = {}
        for name in SAMPLERS:
            slope, steps, errors = order(name, flow)
            result["orders"][geo][name] = {"order": slope, "steps": steps, "errors": errors}
        result["inversion"][geo] = {str(k): round_trip(flow, k) for k in (0, 3)}
        print(geo, {k: round(v["order"], 2) for k, v in result["orders"][geo].items()},
              "inversion", {k: f"{v:.1e}" for k, v in result["inversion"][geo].items()})
    result["provenance"] = provenance("analytic (exact Gaussian-mixture denoiser, no model)",
                                      config={"samplers": SAMPLERS, "steps": STEPS})
    write_json(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
