"""difflab on small diffusers models: caches and quantizers through `difflab bench`, and how
closely difflab's samplers reproduce diffusers' schedulers.

    python benchmarks/interop_bench.py [--rounds 7] [--threads 1] [--out benchmarks/results/interop]

The models are diffusers' PixArtTransformer2DModel, SD3Transformer2DModel and an SD-style
UNet2DConditionModel at 16x16 pixels, built from configs with seeded RANDOM weights and never
trained (so there is nothing to download). Their images are noise-like: only the agreement with
the uncached float model from the same noise (PSNR, SSIM) and the cost mean anything; the shapes
evaluator's accuracy is not measured. Each model is written as a diffusers folder under
runs/interop-bench/ and benched through `difflab.runtime.load` like any folder. Times are
interleaved round by round against the uncached baseline; simulated quantization is not timed.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from difflab.core.guidance import cfg
from difflab.core.samplers import get_sampler
from difflab.eval.bench import run_bench
from difflab.eval.commands import PipelineTarget, checkpoint_identity
from difflab.eval.provenance import provenance
from difflab.interop.folders import KIND
from difflab.interop.schedulers import (
    build_scheduler,
    difflab_start,
    diffusers_loop,
    process_from_scheduler,
    scheduler_sigmas,
)
from difflab.io import write_json
from difflab.runtime import load, write_manifest
from difflab.runtime.machine import configure_threads, int8_kernels, run_record

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = "random initialisation (torch seed 0), untrained"
TEXT = {"encoder": "minilm", "max_length": 16}  # 384-d states; pooled = their masked mean
TRANSFORMER = {"sample_size": 16, "patch_size": 2, "in_channels": 3, "num_layers": 6,
               "num_attention_heads": 4, "attention_head_dim": 16}
MODELS: dict[str, dict[str, Any]] = {
    "pixart": {"class": "PixArtTransformer2DModel", "folder": "transformer",
               "config": {**TRANSFORMER, "out_channels": 6, "cross_attention_dim": 64,
                          "caption_channels": 384},
               "scheduler": {"_class_name": "DPMSolverMultistepScheduler",
                             "beta_schedule": "linear", "prediction_type": "epsilon"},
               "sampler": "dpmpp_2m"},
    "sd3": {"class": "SD3Transformer2DModel", "folder": "transformer",
            "config": {**TRANSFORMER, "out_channels": 3, "joint_attention_dim": 384,
                       "caption_projection_dim": 64, "pooled_projection_dim": 384,
                       "pos_embed_max_size": 8},
            "scheduler": {"_class_name": "FlowMatchEulerDiscreteScheduler", "shift": 3.0},
            "sampler": "euler"},
    "unet": {"class": "UNet2DConditionModel", "folder": "unet",
             "config": {"sample_size": 16, "in_channels": 3, "out_channels": 3,
                        "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                             "DownBlock2D"],
                        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D",
                                           "CrossAttnUpBlock2D"],
                        "block_out_channels": [32, 64, 64], "layers_per_block": 1,
                        "cross_attention_dim": 384, "attention_head_dim": 8,
                        "norm_num_groups": 16},
             "scheduler": {"_class_name": "EulerDiscreteScheduler",
                           "beta_schedule": "scaled_linear", "beta_start": 0.00085,
                           "beta_end": 0.012, "prediction_type": "epsilon",
                           "timestep_spacing": "leading", "steps_offset": 1},
             "sampler": "euler"},
}
TRANSFORMER_CACHES = [("block_cache-n2", {"method": "block_cache", "interval": 2}),
                      ("block_cache-n3", {"method": "block_cache", "interval": 3}),
                      ("teacache-0.1", {"method": "teacache", "threshold": 0.1}),
                      ("fbcache-0.1", {"method": "first_block_cache", "threshold": 0.1})]
UNET_CACHES = [("deepcache-n2", {"method": "deepcache", "interval": 2}),
               ("deepcache-n3", {"method": "deepcache", "interval": 3}),
               ("encprop-n3", {"method": "encoder_propagation", "interval": 3})]
STEPS, CFG = 20, 3.0


def write_folder(name: str, root: Path) -> Path:
    """The model as a diffusers folder (model, scheduler, difflab.json naming the text
    encoder and recording that the weights are random)."""
    import diffusers

    spec = MODELS[name]
    folder = root / name
    if folder.exists():
        import shutil

        shutil.rmtree(folder)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = getattr(diffusers, spec["class"])(**spec["config"])
    model.save_pretrained(folder / spec["folder"])
    build_scheduler(spec["scheduler"]).save_pretrained(folder / "scheduler")
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    write_manifest(folder, KIND, {"text": TEXT, "weights": WEIGHTS,
                                  "model": {"diffusers": spec["class"], **spec["config"]}},
                   files=files)
    return folder


def grid(name: str, rounds: int, real_int8: bool) -> dict[str, Any]:
    """Baseline, caches and quantizers of one model; PSNR / SSIM against the uncached run."""
    spec = MODELS[name]
    base = {"sampler": spec["sampler"], "steps": STEPS, "cfg_scale": CFG,
            "sample": {"precision": "fp32"}}
    caches = UNET_CACHES if name == "unet" else TRANSFORMER_CACHES
    points = [{"name": f"{spec['sampler']}-{STEPS}", **base}]
    points += [{"name": n, **base, "accel": a} for n, a in caches]
    points += [{"name": "w8a8 (simulated)", **base, "timed": False,
                "quant": {"recipe": "w8a8", "calib_steps": 4}},
               {"name": "w4a4-svd (simulated)", **base, "timed": False,
                "quant": {"recipe": "w4a4_svd", "calib_steps": 4}}]
    if real_int8:
        points.append({"name": "w8a8 int8 (real)", **base,
                       "quant": {"recipe": "w8a8_real", "calib_steps": 4}})
    return {"baseline": points[0]["name"], "suite": "single", "max_prompts": 8,
            "seeds_per_prompt": 1, "batch_size": 8, "timing_repeats": rounds,
            "timing_warmup": 1, "metrics": ["psnr", "ssim"], "frontier_quality": "psnr",
            "strip_images": 8, "reference": {**points[0], "name": "uncached-reference"},
            "points": points}


FLOW_DPM = {"_class_name": "DPMSolverMultistepScheduler", "use_flow_sigmas": True,
            "prediction_type": "flow_prediction", "flow_shift": 3.0}
# model -> [(label, scheduler config, difflab sampler, diffusers loop options)]
AGREEMENT = {
    "pixart": [("", {"_class_name": "DPMSolverMultistepScheduler", "beta_schedule": "linear"},
                "dpmpp_2m", {}),
               ("", {"_class_name": "DDIMScheduler", "beta_schedule": "linear",
                     "clip_sample": False, "set_alpha_to_one": True}, "ddim", {})],
    "sd3": [("", MODELS["sd3"]["scheduler"], "euler", {}),
            ("model given 1000 t", FLOW_DPM, "dpmpp_2m", {}),
            ("diffusers' int64 timesteps", FLOW_DPM, "dpmpp_2m", {"exact_flow_t": False})],
    "unet": [("leading spacing", MODELS["unet"]["scheduler"], "euler", {}),
             ("linspace: sigma interpolated linearly",
              {**MODELS["unet"]["scheduler"], "timestep_spacing": "linspace",
               "steps_offset": 0}, "euler", {}),
             ("", {**MODELS["unet"]["scheduler"], "_class_name": "DPMSolverMultistepScheduler",
                   "timestep_spacing": "linspace", "steps_offset": 0}, "dpmpp_2m", {}),
             ("", {**MODELS["unet"]["scheduler"], "_class_name": "DDIMScheduler",
                   "clip_sample": False, "set_alpha_to_one": True}, "ddim", {})],
}


@torch.no_grad()
def agreement(name: str, pipe: Any) -> list[dict[str, Any]]:
    """Max |difflab - diffusers| / max |diffusers| of the final samples, CFG 3, 20 steps."""
    prompts = ["a red circle", "two blue squares", "a green triangle", "a white ring"]
    cond = pipe.condition(prompts)
    uncond = pipe.conditioner.null("", len(prompts), pipe.device)
    noise = torch.randn(len(prompts), *pipe.image_shape, generator=torch.Generator().manual_seed(0))
    rows = []
    for label, sched_cfg, sampler, loop in AGREEMENT[name]:
        scheduler = build_scheduler(sched_cfg)
        ref = diffusers_loop(scheduler, pipe.net, noise, STEPS, cond, uncond, CFG, **loop)
        process = process_from_scheduler(scheduler)
        sigmas = scheduler_sigmas(build_scheduler(sched_cfg), STEPS)
        model = cfg(process.denoiser(pipe.net), CFG, uncond)
        out = get_sampler(sampler)(model, difflab_start(scheduler, noise, sigmas, process),
                                   sigmas, extra_args=cond)
        rows.append({"scheduler": sched_cfg["_class_name"], "config": sched_cfg,
                     "label": label, "loop": loop, "sampler": sampler, "steps": STEPS, "cfg": CFG,
                     "max_rel_diff": float((out - ref).abs().max() / ref.abs().max())})
        print(f"  {name}: {sampler} vs {rows[-1]['scheduler']}: "
              f"{rows[-1]['max_rel_diff']:.1e}", flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--models", default="pixart,sd3,unet")
    p.add_argument("--work", default=str(ROOT / "runs" / "interop-bench"))
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "interop"))
    p.add_argument("--agreement-only", action="store_true",
                   help="rewrite agreement.json only (no bench runs)")
    args = p.parse_args()
    if args.rounds < 5:
        raise SystemExit(f"--rounds={args.rounds}: use at least 5 for a median with spread")
    configure_threads(args.threads)
    work, out = Path(args.work), Path(args.out)
    real_int8 = int8_kernels(torch.device("cpu")) == ""
    agree: dict[str, Any] = {}
    t0 = time.perf_counter()
    for name in args.models.split(","):
        folder = write_folder(name, work)
        pipe = load(folder)
        print(f"{name}: {sum(p.numel() for p in pipe.net.parameters()):,} parameters "
              f"({WEIGHTS})", flush=True)
        agree[name] = {"rows": agreement(name, pipe), "folder": str(folder),
                       "sha256": checkpoint_identity(folder),
                       "parameters": sum(p.numel() for p in pipe.net.parameters())}
        if args.agreement_only:
            continue
        target = PipelineTarget(pipe, agree[name]["sha256"])
        result = run_bench(target, grid(name, args.rounds, real_int8), out / name,
                           cache_dir=work / "cache")
        print((out / name / "table.md").read_text(), flush=True)
        del result
    record = provenance("none (random-weight models; agreement on 4 fixed prompts)",
                        str(work), "", {"weights": WEIGHTS, "models": MODELS,
                                        "agreement": AGREEMENT, "text": TEXT},
                        machine=run_record())
    write_json(out / "agreement.json", {"provenance": record, "models": agree,
                                        "seconds": time.perf_counter() - t0})
    print(json.dumps({k: [round(r["max_rel_diff"], 9) for r in v["rows"]]
                      for k, v in agree.items()}))
    print(f"wrote {out}/")


if __name__ == "__main__":
    main()
