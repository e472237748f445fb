"""Malformed invocations of every `difflab` command: each must end in exactly one `error:` line,
exit status 2, no traceback, without hanging (a 60 s guard, not a speed test). Run in-process
through `difflab.cli.main` (a few through a real subprocess too), against bad files, bad
checkpoints and bad values."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from tiny_checkpoint import tiny_checkpoint

from difflab import cli

ROOT = Path(__file__).resolve().parents[2]
TIME_LIMIT_S = 60.0  # a hang guard: bad input must fail before any long work

GOOD_GRID = """baseline = "e"
suite = "single"
max_prompts = 1
seeds_per_prompt = 1
metrics = ["accuracy"]

[[points]]
name = "e"
sampler = "euler"
steps = 2
"""

GOOD_TRAIN = (ROOT / "configs" / "tiny.toml").read_text()

# ---- bad files: (name, bytes) -----------------------------------------------------------------

BAD_TEXT_FILES = {
    "binary.toml": bytes(range(256)) * 4,
    "utf16.toml": "[schedule]\nsteps = 3\n".encode("utf-16"),
    "latin1.toml": "[run]\nout_dir = \"caf\xe9\"\n".encode("latin-1"),
    "nul.toml": b"[schedule]\x00\nsteps = 3\n",
    "invalid.toml": b"[schedule\nsteps = = 3\n",
    "empty.toml": b"",
    "unknown_section.toml": b"[nope]\nx = 1\n",
    "unknown_key.toml": b"[schedule]\nstepz = 3\n",
    "wrong_type.toml": b"[schedule]\nsteps = \"many\"\n",
    "nan.toml": b"[optim]\nlr = nan\n",
    "list_for_table.toml": b"model = [1, 2]\n",
}

# TrainConfig files that parse but hold nonsense (each is also tried with `demo --config`).
BAD_TRAIN_TOMLS = {
    "depth0.toml": GOOD_TRAIN.replace("depth = 2", "depth = 0"),
    "lr_neg.toml": GOOD_TRAIN.replace("lr = 1e-3", "lr = -1e-3"),
    "lr_inf.toml": GOOD_TRAIN.replace("lr = 1e-3", "lr = inf"),
    "steps0.toml": GOOD_TRAIN.replace("steps = 20", "steps = 0"),
    "batch0.toml": GOOD_TRAIN.replace("batch_size = 16", "batch_size = 0"),
    "seed_neg.toml": GOOD_TRAIN.replace("seed = 0", "seed = -5"),
    "maxlen0.toml": GOOD_TRAIN.replace("max_length = 16", "max_length = 0"),
    "dropout2.toml": GOOD_TRAIN.replace("cond_dropout = 0.1", "cond_dropout = 2.0"),
    "preset.toml": GOOD_TRAIN.replace('preset = "pixart-tiny"', 'preset = "pixart-huge"'),
    "process.toml": GOOD_TRAIN.replace('name = "flow"', 'name = "teleport"'),
    "data.toml": GOOD_TRAIN.replace('name = "shapes"', 'name = "cats"'),
    "encoder.toml": GOOD_TRAIN.replace('encoder = "minilm"', 'encoder = "gpt9"'),
    "precision.toml": re.sub(r'(?m)^precision = "\w+"', 'precision = "fp64"', GOOD_TRAIN),
    "keep0.toml": GOOD_TRAIN.replace("keep_last = 2", "keep_last = 0"),
}

BAD_GRIDS = {
    "grid_nopoints.toml": 'baseline = "e"\n',
    "grid_dup.toml": GOOD_GRID + '\n[[points]]\nname = "e"\n',
    "grid_baseline.toml": GOOD_GRID.replace('baseline = "e"', 'baseline = "zz"'),
    "grid_unknown.toml": GOOD_GRID + 'colour = "red"\n',
    "grid_point_key.toml": GOOD_GRID + 'stepz = 3\n',
    "grid_sampler.toml": GOOD_GRID.replace('sampler = "euler"', 'sampler = "eulr"'),
    "grid_steps0.toml": GOOD_GRID.replace("steps = 2", "steps = 0"),
    "grid_cfg_nan.toml": GOOD_GRID + "cfg_scale = nan\n",
    "grid_cfg_huge.toml": GOOD_GRID + "cfg_scale = -1e30\n",
    "grid_seeds0.toml": GOOD_GRID.replace("seeds_per_prompt = 1", "seeds_per_prompt = 0"),
    "grid_suite.toml": GOOD_GRID.replace('suite = "single"', 'suite = "nope"'),
    "grid_metric.toml": GOOD_GRID.replace('["accuracy"]', '["vibes"]'),
    "grid_many.toml": GOOD_GRID.replace("max_prompts = 1", "max_prompts = 0").replace(
        "seeds_per_prompt = 1", "seeds_per_prompt = 100000"),
    "grid_batch0.toml": GOOD_GRID.replace('suite = "single"', 'suite = "single"\nbatch_size = 0'),
    "grid_accel.toml": GOOD_GRID + 'accel = {method = "x"}\n',
    "grid_accel_opt.toml": GOOD_GRID + 'accel = {method = "teacache", nope = 1}\n',
    "grid_quant.toml": GOOD_GRID + 'quant = {bits = 3}\n',
    "grid_table.toml": GOOD_GRID + 'weird = {a = 1}\n',
    "grid_seed_neg.toml": GOOD_GRID.replace('suite = "single"', 'suite = "single"\n'
                                            'seed_offset = -3'),
}

BAD_QUANT = {
    "q_groups.toml": b"timestep_groups = 0\n",
    "q_alpha.toml": b"smooth_alpha = 2.0\n",
    "q_rank.toml": b"lowrank_rank = -1\n",
    "q_format.toml": b'weight_format = "int77"\n',
    "q_key.toml": b"bits = 4\n",
    "q_nan.toml": b"smooth_alpha = nan\n",
    "q_gran.toml": b'weight_granularity = "row"\n',
    "q_group_size.toml": b"weight_group_size = 0\n",
}


def _make_world(root: Path) -> dict[str, str]:
    """Files and folders the cases refer to as {name}."""
    world = {"run": str(tiny_checkpoint(root / "run")), "dir": str(root / "adir"),
             "file": str(root / "afile.txt"), "missing": str(root / "nowhere"),
             "good_grid": str(root / "good_grid.toml"), "good_cfg": str(root / "good.toml")}
    (root / "adir").mkdir()
    (root / "afile.txt").write_text("not a folder\n")
    (root / "good_grid.toml").write_text(GOOD_GRID)
    (root / "good.toml").write_text(GOOD_TRAIN)
    files = {**BAD_TEXT_FILES, **{k: v.encode() for k, v in BAD_TRAIN_TOMLS.items()},
             **{k: v.encode() for k, v in BAD_GRIDS.items()}, **BAD_QUANT}
    for name, data in files.items():
        (root / name).write_bytes(data)
        world[name] = str(root / name)
    world.update(_bad_checkpoints(root, Path(world["run"])))
    world.update(_images_and_layouts(root))
    return world


def _images_and_layouts(root: Path) -> dict[str, str]:
    """Images for edit/restore (the tiny run draws 16 px RGB) and layout files, good and bad."""
    from PIL import Image

    files = {"img16": Image.new("RGB", (16, 16), (200, 30, 30)),
             "img17": Image.new("RGB", (17, 16)), "img_gray": Image.new("L", (16, 16)),
             "img_rgba": Image.new("RGBA", (16, 16)), "mask8": Image.new("L", (8, 8), 255)}
    out = {}
    for name, image in files.items():
        image.save(root / f"{name}.png")
        out[name] = str(root / f"{name}.png")
    (root / "garbage.png").write_bytes(b"\x89PNG not really")
    out["garbage_png"] = str(root / "garbage.png")
    layouts = {"layout_bad_json": "{not json",
               "layout_no_objects": json.dumps({"prompt": "a red circle"}),
               "layout_box": json.dumps({"prompt": "a red circle", "objects": [
                   {"phrase": "red circle", "box": [0.5, 0.5, 0.2, 0.9]}]}),
               "layout_phrase": json.dumps({"prompt": "a red circle", "objects": [
                   {"phrase": "blue square", "box": [0, 0, 0.5, 0.5]}]}),
               "layout_nan": '{"prompt": "a red circle", "objects": [{"phrase": "red circle", '
                             '"box": [NaN, 0, 0.5, 0.5]}]}'}
    for name, text in layouts.items():
        (root / f"{name}.json").write_text(text)
        out[name] = str(root / f"{name}.json")
    return out


def _copy_ckpt(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst / "step_000001"


def _bad_checkpoints(root: Path, run: Path) -> dict[str, str]:
    """Damaged copies of the tiny run: each name maps to a folder `load` must refuse."""
    out = {}

    def make(name: str, damage) -> None:
        step = _copy_ckpt(run, root / name)
        damage(step)
        out[name] = str(root / name)

    make("ck_no_state", lambda s: (s / "state.json").unlink())
    make("ck_no_model", lambda s: (s / "model.safetensors").unlink())
    make("ck_garbage_st", lambda s: (s / "model.safetensors").write_bytes(b"\x00garbage" * 64))
    make("ck_truncated_st", lambda s: (s / "model.safetensors").write_bytes(
        (s / "model.safetensors").read_bytes()[:200]))
    make("ck_bad_json", lambda s: (s / "config.json").write_text("{not json"))
    make("ck_binary_json", lambda s: (s / "config.json").write_bytes(bytes(range(256))))
    make("ck_list_json", lambda s: (s / "config.json").write_text("[1, 2]"))

    def edit_config(key: str, value) -> Callable[[Path], None]:
        def damage(s: Path) -> None:
            cfg = json.loads((s / "config.json").read_text())
            sec, _, field = key.partition(".")
            cfg[sec][field] = value
            (s / "config.json").write_text(json.dumps(cfg))
        return damage

    make("ck_unknown_key", edit_config("run.colour", "red"))
    make("ck_nan_lr", edit_config("optim.lr", float("nan")))
    make("ck_preset", edit_config("model.preset", "nope"))
    make("ck_shapes", edit_config("model.overrides", {"input_size": 16, "patch_size": 4,
                                                      "hidden_size": 64, "depth": 1,
                                                      "num_heads": 2}))
    make("ck_format", lambda s: (s / "state.json").write_text('{"format": 99, "step": 1}'))
    make("ck_no_step", lambda s: (s / "state.json").write_text('{"format": 1}'))
    make("ck_dangling", lambda s: [(s.parent / "latest").write_text("step_000009\n"),
                                   _rmtree(s)])
    (root / "ck_plain_file").write_text("I am not a checkpoint\n")
    out["ck_plain_file"] = str(root / "ck_plain_file")
    (root / "ck_empty").mkdir()
    out["ck_empty"] = str(root / "ck_empty")
    return out


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path)


# (a checkpoint without state.json samples: inference reads the manifest, weights and config)
BAD_CHECKPOINTS = ("missing", "ck_no_model", "ck_garbage_st", "ck_truncated_st",
                   "ck_bad_json", "ck_binary_json", "ck_list_json", "ck_unknown_key",
                   "ck_nan_lr", "ck_preset", "ck_shapes", "ck_format", "ck_no_step",
                   "ck_dangling", "ck_plain_file", "ck_empty")

def ref(name: str) -> str:
    """The reference to world entry `name` in a case's argv template."""
    return "{" + name + "}"


# ---- the table --------------------------------------------------------------------------------

BAD_INTS = ["0", "-1", "abc", "1.5", "", "1e3", "99999999999999999999999999"]
BAD_FLOATS = ["nan", "inf", "-inf", "-1e30", "1e400", "abc", ""]
BAD_PROMPTS = ["   ", "\x01", "\t", "", "\n", "a\x1bb", "x" * 5000]
TRAIN_OVERRIDES = [
    "optim.lr=nan", "optim.lr=-1", "optim.lr=inf", "optim.lr=0", "optim.betas=[0.9]",
    "optim.betas=[1.0, 0.9]", "optim.eps=0", "optim.weight_decay=-1", "optim.grad_clip=-1",
    "schedule.steps=0", "schedule.steps=-5", "schedule.steps=1e3", "schedule.batch_size=0",
    "schedule.batch_size=10000000", "schedule.accumulation=0", "schedule.accumulation=3",
    "schedule.warmup_steps=-1", "schedule.decay=linear", "schedule.min_lr_ratio=2",
    "ema.decay=1.5", "ema.decay=nan", "text.max_length=0", "text.max_length=1000000",
    "text.cond_dropout=-0.1", "text.encoder=nope", "run.seed=-1",
    "run.seed=18446744073709551616", "run.seed=abc", "run.mask_ratio=1", "run.workers=-1",
    "run.log_every=0", "run.ckpt_every=0", "run.keep_last=0", "run.precision=fp64",
    "run.device=tpu", "run.out_dir=", "run.sample_prompts=['   ']", "run.sample_steps=0",
    "run.nonfinite_patience=0", "debug.nan_steps=[-1]", "model.preset=nope",
    "model.overrides.depth=0", "model.overrides.hidden_size=-8", "model.overrides.num_heads=0",
    "model.overrides.patch_size=0", "model.overrides.input_size=100000",
    "model.overrides.mlp_ratio=nan", "model.overrides.nope=1", "model.overrides.depth=deep",
    "process.name=nope", "process.options.nope=1", "data.name=nope", "data.options.size=7",
    "data.options.nope=1", "nokey", "=3", "nope.key=1", "schedule=3", "optim.nope=1",
]


Add = Callable[..., None]


def _sample_cases(add: Add) -> None:
    """`sample`: counts, seeds, guidance, prompts, names, output, checkpoints."""
    sample = ["sample", "{run}", "-p", "a red circle"]
    for v in BAD_INTS:
        add([*sample, "--n", v])
        add([*sample, "--steps", v])
    for v in ["-1", "abc", "1.5", "", str(2**64), str(2**63)]:
        add([*sample, "--seed", v])
    for v in BAD_FLOATS:
        add([*sample, "--cfg", v])
    add([*sample, "--n", "100000000"])
    add(["sample", "{run}", "-p", "a", "-p", "b", "--n", "6000"])
    add([*sample, "--steps", "100000"])
    for v in BAD_PROMPTS:
        if v:  # '' is the unconditional prompt (CFG's negative), valid for a text model
            add(["sample", "{run}", "-p", v])
    for v in ["nope", "", "EULER", "euler;rm -rf"]:
        add([*sample, "--sampler", v])
    for v in ["fp16", "fp64", "", "nope"]:
        add([*sample, "--precision", v])
    for v in ["x.xyz", "noext", "{dir}", "grid.PNGX", "a.txt"]:
        add([*sample, "--out", v])
    for v in ["nope", "W8A8"]:
        add([*sample, "--quant", v])
    for v in ["nope", "teacache:threshold=-1", "teacache:nope=1", "block_cache:interval=0",
              ":", "teacache:threshold=nan", "teacache:threshold"]:
        add([*sample, "--accel", v])
    for v in ["scales=[0.5]", "scales=[1.0,0.5]", "nope=1", "scales=abc", "scales=[0,1]"]:
        add([*sample, "--bottleneck", v])
    for ck in BAD_CHECKPOINTS:
        add(["sample", ref(ck), "-p", "a red circle", "--n", "1", "--steps", "1"])
    add(["sample", "{run}"])
    add(["sample", "-p", "a"])
    add([*sample, "--nope"])
    add([*sample, "extra"])
    add([*sample], {"DIFFLAB_MAX_IMAGES": "abc"})
    add([*sample, "--n", "5"], {"DIFFLAB_MAX_IMAGES": "4"})
    add([*sample, "--steps", "30"], {"DIFFLAB_MAX_SAMPLE_STEPS": "20"})
    add([*sample], {"DIFFLAB_MAX_IMAGES": "-1"})


def _eval_cases(add: Add) -> None:
    """`eval`: seeds, suites, sampling values, checkpoints."""
    ev = ["eval", "{run}"]
    for v in BAD_INTS:
        add([*ev, "--seeds", v])
    add([*ev, "--seeds", "100000000"])
    for v in ["nope", "", "ALL"]:
        add([*ev, "--suite", v])
    for v in BAD_FLOATS[:4]:
        add([*ev, "--cfg", v])
    add([*ev, "--steps", "0"])
    add([*ev, "--sampler", "nope"])
    add([*ev, "--out", "{file}"])
    for ck in BAD_CHECKPOINTS:
        add(["eval", ref(ck), "--suite", "single", "--steps", "1"])


def _train_cases(add: Add) -> None:
    """`train` and `demo`: bad files, bad overrides, bad run folders."""
    for f in [*BAD_TEXT_FILES, *BAD_TRAIN_TOMLS, "missing", "dir"]:
        add(["train", ref(f)])
    for o in TRAIN_OVERRIDES:
        add(["train", "{good_cfg}", "-o", o])
    add(["train", "{good_cfg}", "--out", "{file}"])
    add(["train", "{good_cfg}", "--out", "{run}"])
    add(["train"])
    add(["train", "{good_cfg}", "extra"])
    add(["train", "{good_cfg}", "--resum"])

    for f in [*BAD_TEXT_FILES, *list(BAD_TRAIN_TOMLS)[:6], "missing", "dir"]:
        add(["demo", "--config", ref(f)])
    for o in TRAIN_OVERRIDES[::3]:
        add(["demo", "--config", "{good_cfg}", "-o", o])
    for v in ["nope", "", "Single"]:
        add(["demo", "--config", "{good_cfg}", "--suite", v])
    add(["demo", "--config", "{good_cfg}", "--out", "{file}"])


def _quantize_bench_cases(add: Add) -> None:
    """`quantize` and `bench`: recipes, config and grid files, checkpoints."""
    q = ["quantize", "{run}", "--out", "{dir}/q"]
    for v in ["nope", "", "w8a8 "]:
        add([*q, "--recipe", v])
    add([*q])
    add([*q, "--recipe", "w8a8", "--config", "{q_rank.toml}"])
    for f in [*BAD_QUANT, *list(BAD_TEXT_FILES)[:5], "missing", "dir"]:
        add([*q, "--config", ref(f)])
    for v in BAD_INTS[:5] + ["100000"]:
        add([*q, "--recipe", "w8a8", "--calib-steps", v])
    add(["quantize", "{run}", "--recipe", "w8a8", "--out", "{file}"])
    add(["quantize", "{run}", "--recipe", "w8a8"])
    for ck in BAD_CHECKPOINTS:
        add(["quantize", ref(ck), "--recipe", "w8a8", "--out", "{dir}/q", "--calib-steps",
             "1"])

    b = ["bench", "{run}", "--out", "{dir}/b"]
    for f in [*BAD_GRIDS, *list(BAD_TEXT_FILES)[:6], "missing", "dir"]:
        add([*b, "--grid", ref(f)])
    add(["bench", "{run}", "--grid", "{good_grid}"])
    add(["bench", "{run}", "--grid", "{good_grid}", "--out", "{file}"])
    add([*b, "--grid", "{good_grid}", "--cache-dir", "{file}"])
    for ck in BAD_CHECKPOINTS:
        add(["bench", ref(ck), "--grid", "{good_grid}", "--out", "{dir}/b"])


def _data_accel_cases(add: Add) -> None:
    """`data preview`, `accel calibrate` and `accel list`."""
    pv = ["data", "preview", "--out", "{dir}/p.png"]
    for v in ["nope", "", "Shapes"]:
        add([*pv, "--world", v])
    for v in BAD_INTS:
        add([*pv, "--n", v])
    add([*pv, "--n", "100000000"])
    for v in ["7", "0", "-1", "abc", "100000"]:
        add([*pv, "--size", v])
    add([*pv, "--world", "digits", "--size", "64"])
    for v in ["-1", str(2**64), "abc"]:
        add([*pv, "--seed", v])
    for v in ["0", "100", "-2", "abc"]:
        add([*pv, "--scale", v])
    for v in ["0", "-1"]:
        add([*pv, "--ncol", v])
    for v in ["x.xyz", "{dir}", "noext"]:
        add(["data", "preview", "--out", v])
    add(["data", "nope"])
    add(["data", "preview", "--nope"])

    cal = ["accel", "calibrate", "{run}", "--out", "{dir}/t.json"]
    for v in ["0", "-1", "abc", "100000000"]:
        add([*cal, "--images", v])
    for v in ["0", "-1", "100000"]:
        add([*cal, "--steps", v])
    add([*cal, "--sampler", "nope"])
    for v in ["nan", "inf", "-1"]:
        add([*cal, "--cfg", v])
    for v in ["0", "-1"]:
        add([*cal, "--head-blocks", v])
    for v in ["0", "100"]:
        add([*cal, "--degree", v])
    add([*cal, "--suite", "nope"])
    add(["accel", "calibrate", "{run}", "--out", "{dir}"])
    add(["accel", "calibrate", "{run}"])
    for ck in BAD_CHECKPOINTS[:8]:
        add(["accel", "calibrate", ref(ck), "--out", "{dir}/t.json", "--steps", "2"])
    add(["accel", "list", "extra"])
    add(["accel", "nope"])


def _tune_export_cases(add: Add) -> None:
    """`tune`, `export` and `sample --adapter`: methods, numbers, data, folders, adapters."""
    t = ["tune", "{run}", "--generate", "2", "--steps", "1", "--out", "{dir}/a"]
    for v in ["nope", "", "LoRA"]:
        add([*t, "--method", v])
    for v in ["nope", "", "circle"]:
        add(["tune", "{run}", "--concept", v, "--generate", "2", "--out", "{dir}/a"])
    for v in BAD_INTS[:5]:
        add([*t, "--batch-size", v])
        add(["tune", "{run}", "--generate", "2", "--steps", v, "--out", "{dir}/a"])
    for v in BAD_FLOATS:
        add([*t, "--lr", v])
    for v in ["(", "nothing$"]:
        add([*t, "--targets", v])
    add(["tune", "{run}", "--out", "{dir}/a"])
    add([*t, "--images", "{dir}"])
    add(["tune", "{run}", "--images", "missing", "--out", "{dir}/a"])
    add(["tune", "{run}", "--generate", "2", "--out", "{file}"])
    for ck in BAD_CHECKPOINTS[:6]:
        add(["tune", ref(ck), "--generate", "2", "--steps", "1", "--out", "{dir}/a"])
    sample = ["sample", "{run}", "-p", "a red circle", "--n", "1", "--steps", "1"]
    for v in ["missing", "{run}", "{run}:abc", "{dir}", ":0.5"]:
        add([*sample, "--adapter", v])
    add([*sample, "--adapter", "{run}", "--combine", "nope"])
    for ck in BAD_CHECKPOINTS[:6]:
        add(["export", ref(ck), "--out", "{dir}/e"])
    add(["export", "{run}", "--out", "{file}"])
    add(["export", "{run}", "--out", "{dir}/e", "--metrics", "{file}"])
    add(["export", "{run}", "--out", "{dir}/e", "--metrics", "missing"])
    add(["export", "{run}"])


def _serve_cases(add: Add) -> None:
    """`serve`: bad models, plan files, adapters and options, refused before a port opens."""
    for ck in BAD_CHECKPOINTS[:8]:
        add(["serve", ref(ck), "--port", "0"])
    s = ["serve", "{run}", "--port", "0"]
    for f in [*list(BAD_TEXT_FILES)[:6], "missing", "dir"]:
        add([*s, "--plan", ref(f)])
    for opt, v in [("--max-batch", "0"), ("--max-queue", "-1"), ("--port", "70000"),
                   ("--timeout", "nan"), ("--max-wait-ms", "-5"), ("--api-key", "short"),
                   ("--cors-origin", "nope"), ("--size", "0"), ("--precision", "fp7"),
                   ("--max-images", "99"), ("--max-steps", "0")]:
        add([*s, opt, v])
    add([*s, "--adapter", "{dir}"])
    add([*s, "--adapter", "{run}"])  # a checkpoint, not an adapter


def _change_cases(add: Add) -> None:
    """`align`, `distill`, `control train`, `accelerate`, `edit`, `restore`, `diffusers` and
    `sample --search/--layout/--plan`: refused in one line before any model work."""
    align = ["align", "{run}", "--out", "{dir}/al", "--budget-minutes", "0.1"]
    for opt, v in [("--method", "nope"), ("--method", "DPO"), ("--suite", "nope"),
                   ("--suite", ""), ("--images", "1"), ("--budget-minutes", "nan"),
                   ("--steps", "0"), ("--beta", "-1"), ("--lr", "inf"),
                   ("--batch-size", "0"), ("--rank", "0"), ("--seed", "-1")]:
        add([*align, opt, v])
    add(["align", "{run}", "--out", "{file}"])
    distill = ["distill", "{run}", "--out", "{dir}/di", "--budget-minutes", "0.1"]
    for opt, v in [("--method", "nope"), ("--method", "dmd2"), ("--steps", "0"),
                   ("--steps", "abc"), ("--budget-minutes", "-1"), ("--batch-size", "0"),
                   ("--lr", "nan"), ("--guidance", "-inf"),
                   ("--pairs", "0"), ("--ckpt-every", "0"), ("--iterations", "-1")]:
        add([*distill, opt, v])
    add([*distill, "--method", "progressive", "--steps", "4", "--teacher-steps", "6"])
    add(["distill", "{run}", "--out", "{file}"])
    for ck in BAD_CHECKPOINTS[:4]:
        add(["distill", ref(ck), "--out", "{dir}/di", "--budget-minutes", "0.1"])
    control = ["control", "train", "{run}", "--out", "{dir}/co"]
    for opt, v in [("--method", "gligen2"), ("--steps", "0"), ("--batch-size", "-1"),
                   ("--lr", "nan"), ("--max-minutes", "0"), ("--seed", "abc")]:
        add([*control, opt, v])
    acc = ["accelerate", "{run}", "--out", "{dir}/ac"]
    for opt, v in [("--budget", ""), ("--budget", "accuracy>=abc"), ("--budget", "fd<=+nan%"),
                   ("--reference", "steps=0"), ("--reference", "sampler=euler,cfg=nan"),
                   ("--test-images", "0"), ("--seed", "-1"), ("--store", "{dir}")]:
        add([*acc, opt, v])
    edit = ["edit", "{run}", "--image", "{img16}", "--from", "a red circle", "--to",
            "a blue circle", "--out", "{dir}/e.png"]
    for opt, v in [("--method", "nope"), ("--method", "sdedit:1.5"), ("--method", "sdedit:abc"),
                   ("--method", "p2p:tau=2"), ("--method", "masked:0.5"), ("--steps", "0"),
                   ("--cfg", "nan"), ("--inversion", "nope"), ("--seed", "-1"),
                   ("--mask", "{missing}"), ("--out", "{dir}/e.xyz")]:
        add([*edit, opt, v])
    for img in ("img17", "img_gray", "garbage_png", "missing", "dir"):
        add(["edit", "{run}", "--image", ref(img), "--from", "a red circle", "--to",
             "a blue circle", "--out", "{dir}/e.png"])
    add([*edit[:-4], "--to", "a blue square and two green rings", "--method", "p2p",
         "--out", "{dir}/e.png"])  # p2p swaps one word
    add([*edit, "--method", "masked:0.5", "--mask", "{mask8}"])  # mask of the wrong size
    add(["edit", "{run}", "--image", "{img16}", "--to", "", "--out", "{dir}/e.png"])
    restore = ["restore", "{run}", "--image", "{img16}", "--out", "{dir}/r.png"]
    for opt, v in [("--problem", "nope"), ("--problem", "sr3"), ("--problem", "cs:0"),
                   ("--problem", "cs:1.5"), ("--problem", "deblur:-1"),
                   ("--problem", "inpaint:abc"), ("--method", "nope"), ("--steps", "0"),
                   ("--noise", "-0.1"), ("--noise", "nan"), ("--seed", "abc")]:
        add([*restore, opt, v])
    add([*restore, "--problem", "sr4", "--method", "repaint"])  # repaint is inpainting only
    add([*restore, "--problem", "inpaint", "--mask", "{mask8}"])
    for img in ("img17", "img_rgba", "garbage_png", "missing"):
        add(["restore", "{run}", "--problem", "sr2", "--image", ref(img), "--out",
             "{dir}/r.png"])
    add(["diffusers", "export", "{missing}", "--out", "{dir}/d"])
    add(["diffusers", "export", "{run}", "--out", "{file}"])
    add(["diffusers", "import", "{dir}", "--out", "{dir}/n"])
    add(["diffusers", "import", "{run}", "--out", "{dir}/n"])
    add(["diffusers", "nope"])
    sample = ["sample", "{run}", "-p", "a red circle", "--n", "1", "--steps", "1"]
    for v in ["nope", "bestof:n=0", "bestof:n=abc", "smc:particles=0", "smc:lam=nan",
              "bestof:n=2,nope=1"]:
        add([*sample, "--search", v])
    for name in ("layout_bad_json", "layout_no_objects", "layout_box", "layout_phrase",
                 "layout_nan", "missing", "dir"):
        add(["sample", "{run}", "--layout", ref(name), "--box-guidance", "--n", "1",
             "--steps", "1"])
    add([*sample, "--box-guidance"])  # guidance needs a layout
    add(["sample", "{run}", "--layout", "{layout_box}", "--control", "{missing}"])
    for f in ("binary.toml", "empty.toml", "missing", "dir", "garbage_png"):
        add([*sample, "--plan", ref(f)])
    add([*sample, "--plan", "{file}:nope"])


def _other_cases(add: Add) -> None:
    """the listing commands and unknown commands."""
    for cmd in ["models", "samplers", "quant-recipes", "version"]:
        add([cmd, "extra"])
        add([cmd, "--nope"])
    for argv in [["nope"], ["trian", "x"], ["--nope"], ["sample", "--help", "--nope"]]:
        add(argv)


def _cases() -> list[tuple[str, list[str], dict[str, str]]]:
    """(id, argv with {world} references, extra env) for every malformed invocation."""
    cases: list[tuple[str, list[str], dict[str, str]]] = []

    def add(argv: list[str], env: dict[str, str] | None = None) -> None:
        cases.append((f"{len(cases):03d}-" + " ".join(argv)[:60], argv, env or {}))

    for part in (_sample_cases, _eval_cases, _train_cases, _quantize_bench_cases,
                 _data_accel_cases, _tune_export_cases, _serve_cases, _change_cases,
                 _other_cases):
        part(add)
    return cases


CASES = _cases()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return _make_world(tmp_path_factory.mktemp("fuzz"))


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Crash reports (there must be none) go to a private folder; relative outputs too."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    for key in [k for k in os.environ if k.startswith("DIFFLAB_")]:
        monkeypatch.delenv(key)
    return tmp_path / "cache"


def _fill(argv: list[str], world: dict[str, str]) -> list[str]:
    out = []
    for a in argv:
        for key, value in world.items():
            a = a.replace(ref(key), value)
        out.append(a)
    return out


def _alarm(signum, frame):
    raise TimeoutError(f"over {3 * TIME_LIMIT_S:.0f} s: the case is doing real work")


def run_in_process(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> tuple[int, str, str]:
    """`difflab ARGV` through the real entry point: (exit status, stdout, stderr). A case that
    runs far past the limit is stopped by an alarm (it then fails as a crash, not a hang)."""
    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "argv", ["difflab", *argv])
    code = None
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, 3 * TIME_LIMIT_S)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                cli.main()
            except SystemExit as e:
                code = e.code
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    return code, out.getvalue(), err.getvalue()


def assert_one_error(code, out: str, err: str, cache: Path) -> None:
    text = out + err
    error_lines = [ln for ln in text.splitlines() if ln.startswith("error:")]
    assert code == 2, f"exit {code}, expected 2 (user error)\n{text[-2000:]}"
    assert len(error_lines) == 1, text[-2000:]
    assert "Traceback" not in text, text[-2000:]
    assert not cache.exists() or not list(cache.rglob("crash-*")), "a crash report was written"


def test_case_count(capsys: pytest.CaptureFixture) -> None:
    with capsys.disabled():
        print(f"\n[fuzz] {len(CASES)} malformed invocations")
    assert len(CASES) >= 300


@pytest.mark.parametrize(("argv", "env"), [(c[1], c[2]) for c in CASES],
                         ids=[c[0] for c in CASES])
def test_malformed_invocation(argv, env, world, monkeypatch, _private_cache):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    start = time.perf_counter()
    code, out, err = run_in_process(_fill(argv, world), monkeypatch)
    elapsed = time.perf_counter() - start
    assert_one_error(code, out, err, _private_cache)
    assert elapsed <= TIME_LIMIT_S, f"took {elapsed:.1f} s"


SUBPROCESS_CASES = [
    ["sample", "{run}", "-p", "a", "--cfg", "nan"],
    ["train", "{utf16.toml}"],
    ["bench", "{ck_garbage_st}", "--grid", "{good_grid}", "--out", "{dir}/b"],
    ["data", "preview", "--n", "0"],
]


@pytest.mark.parametrize("argv", SUBPROCESS_CASES, ids=[" ".join(a) for a in SUBPROCESS_CASES])
def test_malformed_invocation_subprocess(argv, world, _private_cache):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "difflab.cli", *_fill(argv, world)],
                          capture_output=True, text=True, env=env, timeout=60)
    elapsed = time.perf_counter() - start
    assert_one_error(proc.returncode, proc.stdout, proc.stderr, _private_cache)
    assert elapsed <= TIME_LIMIT_S, f"took {elapsed:.1f} s"
