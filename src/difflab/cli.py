"""The `difflab` command: a thin layer that builds configs and calls the library.

Every argument is checked before any model loads. A user mistake (a `ConfigError`, or a usage
error from the argument parser) prints one `error: ...` line and exits 2; anything else is a bug:
one line says where its traceback was saved (`difflab.crash`) and the exit status is 1.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from difflab.config import ConfigError
from difflab.limits import check_images, check_int, check_prompt, check_seed, image_format

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="difflab: train, sample, accelerate, quantize and measure diffusion models.",
)

EXIT_USER_ERROR, EXIT_BUG, EXIT_INTERRUPTED = 2, 1, 130


def _parser_errors(name: str) -> tuple[type, ...]:
    """Exception class `name` of typer's click (vendored in newer typer) and of click itself."""
    import importlib

    found = []
    for module in ("typer._click.exceptions", "typer.exceptions", "click.exceptions"):
        try:
            cls = getattr(importlib.import_module(module), name, None)
        except ImportError:
            continue
        if cls is not None and cls not in found:
            found.append(cls)
    return tuple(found)


_NO_ARGS = _parser_errors("NoArgsIsHelpError")  # `difflab` or a group alone: show its help
_USAGE = _parser_errors("UsageError")  # unknown option, bad type, missing argument
_CLICK = _parser_errors("ClickException")
_ABORTS = (*_parser_errors("Abort"), KeyboardInterrupt)


def _add_subcommands() -> None:
    from difflab.accel.commands import accel_app
    from difflab.align.commands import align_command
    from difflab.autotune.commands import accelerate_command
    from difflab.control.commands import control_app
    from difflab.data.commands import data_app
    from difflab.distill.commands import distill_command
    from difflab.edit.commands import edit_command, restore_command
    from difflab.eval.commands import bench
    from difflab.interop.commands import diffusers_app
    from difflab.serve.commands import serve_command
    from difflab.train.commands import train_ae_command, train_command
    from difflab.tune.commands import tune_command

    app.add_typer(data_app, name="data", help="Data sets: preview the shapes world and digits.")
    app.add_typer(accel_app, name="accel", help="Training-free acceleration: list, calibrate.")
    app.add_typer(diffusers_app, name="diffusers",
                  help="diffusers folders: export a native checkpoint, import one.")
    app.add_typer(control_app, name="control",
                  help="Layout control: train a ControlNet, T2I-Adapter or GLIGEN grounding.")
    app.command("train")(train_command)
    app.command("train-ae")(train_ae_command)
    app.command("bench")(bench)
    app.command("tune")(tune_command)
    app.command("align")(align_command)
    app.command("edit")(edit_command)
    app.command("restore")(restore_command)
    app.command("serve")(serve_command)
    app.command("distill")(distill_command)
    app.command("accelerate")(accelerate_command)


@app.command()
def version() -> None:
    """Print difflab's version."""
    from difflab import __version__

    typer.echo(__version__)


def _sample_config(sampler: str, steps: int, cfg: float, batch_size: int = 32,
                   precision: str = "auto", bottleneck: str = ""):
    from difflab.accel.api import parse_options
    from difflab.runtime import SampleConfig

    if bottleneck == "default":  # BottleneckConfig's own defaults
        bottleneck = "scales=[1.0,0.5,1.0]"
    stages = parse_options(bottleneck) if bottleneck not in ("", "off") else {}
    return SampleConfig(sampler=sampler, steps=steps, cfg=cfg, batch_size=batch_size,
                        precision=precision, bottleneck=stages)


def _own_defaults(pipe, config, sampler: str | None, steps: int | None, cfg: float | None):
    """`config` with the options not given taken from the artefact's own defaults (a student's
    sampler and steps), where it has them."""
    if not pipe.sample_defaults:
        return config
    from dataclasses import replace

    own = pipe.default_config(sampler=sampler, steps=steps, cfg=cfg)
    return replace(config, sampler=own.sampler, steps=own.steps, cfg=own.cfg)


def _output_folder(path: str, what: str) -> Path:
    """An output folder path that is not an existing file."""
    p = Path(path)
    if not str(path).strip():
        raise ConfigError(f"{what} is empty; name a folder")
    if p.exists() and not p.is_dir():
        raise ConfigError(f"{what} = {path!r} is a file; name a folder")
    return p


@app.command()
def sample(
    checkpoint: str = typer.Argument(..., help="run, checkpoint or quantized folder (any "
                                     "artefact), or a shipped model's name"),
    prompt: list[str] = typer.Option([], "--prompt", "-p", help="prompt (repeatable): text, a "
                                     "class name or index for a class model, '' unconditional"),
    n: int = typer.Option(8, help="images per prompt"),
    sampler: str = typer.Option(None, help="sampler name (see `difflab samplers`; default: "
                                "the artefact's own, e.g. a student's, else euler)"),
    steps: int = typer.Option(None, help="sampling steps (default: the artefact's own, else "
                              "20)"),
    cfg: float = typer.Option(None, help="classifier-free guidance scale (default: the "
                              "artefact's own, else 1)"),
    seed: int = typer.Option(0, help="seed of the first image; image i uses seed + i"),
    precision: str = typer.Option("auto", help="auto (bf16 where native, else fp32), fp32, "
                                  "bf16 or fp16 (CUDA)"),
    quant: str = typer.Option("", help="quantization recipe applied before sampling"),
    accel: str = typer.Option("", help="acceleration hook, NAME[:k=v,...]"),
    bottleneck: str = typer.Option("", help="Bottleneck Sampling: 'default' (1 -> 0.5 -> 1) "
                                   "or scales=[..],fractions=[..],shifts=[..]"),
    plan: str = typer.Option("", help="plan file FILE[:NAME] (e.g. `difflab accelerate`'s "
                             "plan.json): its sampler, steps, guidance, cache and quantization "
                             "replace the options above"),
    adapter: list[str] = typer.Option([], "--adapter", help="adapter folder, DIR[:weight] "
                                      "(repeatable: merged into the base together; LoRA "
                                      "adapters join a quantized folder's low-rank branch)"),
    combine: str = typer.Option("sum", help="how several adapters combine: sum (task "
                                "arithmetic) or ties (TIES merging)"),
    search: str = typer.Option("", help="inference-time search scored by the shapes evaluator: "
                               "bestof:n=8, smc:particles=8[,lam=10,interval=1] or "
                               "reno:iters=4[,lr=5,reg=0.01,shell=3] (prompts in the suite "
                               "templates)"),
    reward_net: str = typer.Option("", help="reward net folder: what --search reno climbs; "
                                   "with bestof/smc, the reward instead of the evaluator"),
    layout: str = typer.Option("", help="layout.json (prompt, phrases and boxes), or 'plan' "
                               "(one box per object of --prompt): sample its prompt with "
                               "--box-guidance, --attend-excite or --control"),
    box_guidance: bool = typer.Option(False, "--box-guidance", help="steer the layout's phrases "
                                      "into their boxes (cross-attention guidance)"),
    attend_excite: bool = typer.Option(False, "--attend-excite", help="Attend-and-Excite on the "
                                       "layout's phrases"),
    guidance_scale: float = typer.Option(0.0, help="latent step of --box-guidance / "
                                         "--attend-excite (0: the method's default)"),
    control: str = typer.Option("", help="control folder (`difflab control train`) that "
                                "conditions on --layout"),
    grounding_steps: float = typer.Option(1.0, help="GLIGEN scheduled sampling: ground only "
                                          "the first TAU fraction of the steps (0 < TAU <= 1; "
                                          "with --control of a GLIGEN adapter)"),
    structured: bool = typer.Option(False, "--structured", help="structured cross-attention: "
                                    "each noun phrase encoded alone, the values averaged "
                                    "(prompts in the suites' templates; fp32 unless "
                                    "--precision is given)"),
    out: str = typer.Option("grid.png", help="output PNG grid"),
) -> None:
    """Sample a grid: `difflab sample runs/demo --prompt "a red circle" --out grid.png`."""
    from difflab.data.grid import make_grid
    from difflab.io import atomic_write
    from difflab.runtime import load, quantize_pipeline

    # checked now with the stock defaults; the artefact's own defaults fill in after loading
    config = _sample_config("euler" if sampler is None else sampler, 20 if steps is None else steps,
                            1.0 if cfg is None else cfg, precision=precision,
                            bottleneck=bottleneck)
    if structured:
        from difflab.control.commands import sample_structured

        others = (("--layout", layout), ("--box-guidance", box_guidance),
                  ("--attend-excite", attend_excite), ("--control", control),
                  ("--grounding-steps", grounding_steps != 1.0), ("--search", search),
                  ("--adapter", adapter), ("--quant", quant), ("--accel", accel),
                  ("--plan", plan), ("--bottleneck", bottleneck))
        ignored = [name for name, value in others if value]
        if ignored:
            raise ConfigError(f"--structured does not combine with {', '.join(ignored)}")
        sample_structured(checkpoint, prompt, n, config, seed, out, sampler, steps, cfg)
        return
    if layout or box_guidance or attend_excite or control:
        ignored = [name for name, value in (("--search", search), ("--adapter", adapter),
                                            ("--quant", quant), ("--accel", accel)) if value]
        if ignored:
            raise ConfigError(f"--layout sampling takes no {', '.join(ignored)}")
        from difflab.control.commands import sample_with_layout

        sample_with_layout(checkpoint, prompt, n, config, seed, layout, box_guidance,
                           attend_excite, guidance_scale, control, out, grounding_steps)
        return
    if grounding_steps != 1.0:
        raise ConfigError("--grounding-steps is GLIGEN's scheduled sampling: give --layout "
                          "layout.json and --control DIR (a GLIGEN adapter)")
    if not prompt:
        raise ConfigError("give --prompt (repeatable), or --layout layout.json")
    for p in prompt:
        check_prompt("--prompt", p, allow_empty=True)  # '': an unconditional model's prompt
    check_int("--n", n, 1)
    check_images("--n x prompts (images)", n * len(prompt))
    check_seed("--seed", seed, n * len(prompt))
    fmt = image_format("--out", out)
    chosen = None
    if plan:
        from difflab.runtime.plan import load_plan

        chosen = load_plan(plan)
        if accel or quant or bottleneck:
            raise ConfigError("--plan sets the acceleration; drop --accel, --quant and "
                              "--bottleneck, or drop --plan")
        config = chosen.sample_config(config)
        accel, quant = chosen.accel, chosen.quant
        mismatch = chosen.machine_mismatch()
        if mismatch:
            typer.echo(f"warning: {mismatch}", err=True)
    spec = None
    if accel:
        from difflab.accel.api import apply_accel, parse_accel_spec

        spec = parse_accel_spec(accel)
    if quant:
        from difflab.quant.config import QUANTIZERS

        QUANTIZERS.get(quant)  # an unknown recipe fails before the model loads
    searching = _check_search(search, prompt, config, accel, reward_net) if search else None
    if reward_net and not search:
        raise ConfigError("--reward-net serves --search; give --search too")
    adapters = []
    if adapter:
        from difflab.tune.adapters import COMBINES, parse_adapter

        adapters = [parse_adapter(a) for a in adapter]
        if combine not in COMBINES:
            raise ConfigError(f"--combine {combine!r}; valid: {', '.join(COMBINES)}")
    pipe = load(checkpoint)
    config = _own_defaults(pipe, config, sampler, steps, cfg)
    if adapters and pipe.kind == "quantized":
        from difflab.tune.adapters import join_adapters

        if combine != "sum":
            raise ConfigError("adapters on a quantized model are joined (summed); "
                              f"--combine {combine} needs the float base")
        join_adapters(pipe, adapters)
    elif adapters:
        from difflab.tune.adapters import apply_adapters

        apply_adapters(pipe, adapters, combine)
    if quant:
        handle = quantize_pipeline(pipe, quant)
        typer.echo(f"quantized {len(handle.layers)} layers with {quant} ({handle.execution})")
    for label, value in pipe.labels.items():
        typer.echo(f"{label}: {value}")
    prompts = [p for p in prompt for _ in range(n)]
    seeds = [seed + i for i in range(len(prompts))]
    if searching is not None:
        images = _search_images(pipe, prompts, seeds, config, search, *searching)
    elif spec is not None:
        with apply_accel(pipe.net, *spec) as handle:
            images = pipe.generate(prompts, seeds, config, progress=True)
        typer.echo(f"accel {accel}: {handle.stats}")
    else:
        images = pipe.generate(prompts, seeds, config, progress=True)
    grid = make_grid(images, labels=prompts, ncol=n)
    atomic_write(out, lambda p: grid.save(p, format=fmt))
    typer.echo(f"wrote {out} ({len(images)} images, {config.sampler} x{config.steps}, "
               f"cfg {config.cfg})")


def _check_search(search: str, prompts: list[str], config, accel: str,
                  reward_net: str = "") -> tuple:
    """(name, options, reward net or None) of a --search spec, checked with the prompts before
    any model loads."""
    from difflab.align.rewards import parse_prompt
    from difflab.align.search import SMC_SAMPLERS, parse_search

    name, opts = parse_search(search)
    if name == "reno":
        from difflab.align.draft import check_sampling

        check_sampling(config)
        if not reward_net:
            raise ConfigError("--search reno climbs a differentiable reward: give --reward-net "
                              "DIR")
    if accel:
        raise ConfigError("--search does not combine with --accel; drop one")
    if config.bottleneck:
        raise ConfigError("--search does not combine with --bottleneck; drop one")
    if name == "smc" and config.sampler not in SMC_SAMPLERS:
        raise ConfigError(f"--search smc steps one-step samplers only ({', '.join(SMC_SAMPLERS)})"
                          f"; got --sampler {config.sampler}")
    for p in prompts:
        parse_prompt(p)
    net = None
    if reward_net:
        from difflab.align.rewardnet import load_reward_net

        net = load_reward_net(reward_net)
    return name, opts, net


def _search_images(pipe, prompts: list[str], seeds: list[int], config, text: str, name: str,
                   opts, net):
    """Images chosen by the search, with one line on their rewards and cost."""
    from difflab.align.search import net_potential, search

    # reno climbs the net and picks by the evaluator; bestof/smc score with the net if given
    reward = net_potential(net) if net is not None and name != "reno" else None
    images, results = search(pipe, prompts, seeds, config, name, opts, reward=reward,
                             progress=True, reward_net=net)
    passed = sum(r.reward == 1.0 for r in results)
    mean = sum(r.reward for r in results) / len(results)
    backward = f", {results[0].backward} backward passes" if results[0].backward else ""
    what = "reward net" if reward is not None else "evaluator"
    verdict = "pass" if reward is None else "score 1"
    typer.echo(f"search {text}: mean {what} reward {mean:.3f}, {passed}/{len(results)} "
               f"images {verdict}; {results[0].nfe} model evaluations{backward} and "
               f"{sum(r.reward_calls for r in results) / len(results):.0f} reward calls per "
               "image")
    return images


@app.command("eval")
def eval_command(
    checkpoint: str = typer.Argument(..., help="run, checkpoint or quantized folder"),
    suite: str = typer.Option("all", help="prompt suite: single, binding, counting, spatial, "
                              "heldout, all, reworded (test split only), or novel-shape, "
                              "novel-color, novel-both (novel concepts, extended evaluator)"),
    seeds: int = typer.Option(1, help="images (seeds) per prompt"),
    sampler: str = typer.Option(None, help="sampler name (default: the artefact's own, e.g. "
                                "a student's, else euler)"),
    steps: int = typer.Option(None, help="sampling steps (default: the artefact's own, else "
                              "20)"),
    cfg: float = typer.Option(None, help="classifier-free guidance scale (default: the "
                              "artefact's own, else 1)"),
    out: str = typer.Option("", help="optional folder for images, grid and metrics.json"),
    split: str = typer.Option("dev", help="dev (choose settings here) or test (report only)"),
) -> None:
    """Score a checkpoint on a prompt suite with the shapes evaluator."""
    from difflab.data.suites import check_split, load_suite
    from difflab.evaluate import evaluate_suite, suite_provenance, write_suite_outputs
    from difflab.runtime import load

    config = _sample_config("euler" if sampler is None else sampler,
                            20 if steps is None else steps, 1.0 if cfg is None else cfg)
    check_split(split, suite)
    check_int("--seeds", seeds, 1)
    check_images("--seeds x suite prompts (images)", seeds * len(load_suite(suite)))
    if out:
        _output_folder(out, "--out")
    pipe = load(checkpoint)
    config = _own_defaults(pipe, config, sampler, steps, cfg)
    result = evaluate_suite(pipe, suite, config, seeds, split=split)
    typer.echo(result.table())
    if out:
        write_suite_outputs(result, out, suite_provenance(pipe, split))
        typer.echo(f"wrote {out}/")


@app.command()
def demo(
    config: str = typer.Option("configs/demo.toml", help="training config"),
    out: str = typer.Option("runs/demo", help="run folder"),
    override: list[str] = typer.Option([], "--override", "-o", help="key=value (repeatable)"),
    suite: str = typer.Option("all", help="prompt suite to score"),
) -> None:
    """The main job: train the flagship model, score every suite prompt, write a report."""
    from difflab.data.suites import load_suite
    from difflab.demo import run_demo

    load_suite(suite)  # an unknown suite fails now, not after the training
    _output_folder(out, "--out")

    metrics = run_demo(config, out, override, suite=suite)
    for m in (metrics, metrics["reworded"]):
        for cat, acc in m["per_category"].items():
            lo, hi = m["per_category_interval"][cat]
            typer.echo(f"{cat:<16} {100 * acc:5.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]")
    typer.echo(f"{'overall':<16} {100 * metrics['accuracy']:5.1f}%   FD {metrics['fd']:.2f} "
               f"(real-vs-real floor {metrics['fd_floor']:.2f}); test split")
    run = metrics["run"]
    typer.echo(f"train {run['train_seconds']:.0f} s, eval {run['eval_seconds']:.0f} s; "
               f"wrote {out}/report.html and {out}/metrics.json")


@app.command()
def quantize(
    checkpoint: str = typer.Argument(..., help="checkpoint or run folder"),
    out: str = typer.Option(..., help="output folder (quantized artefact: codes + scales + "
                            "difflab.json); `difflab sample OUT` loads it"),
    recipe: str = typer.Option("", help="named recipe (see `difflab quant-recipes`)"),
    config: str = typer.Option("", help="QuantConfig TOML instead of a recipe"),
    calib_steps: int = typer.Option(10, help="sampling steps of the calibration runs"),
) -> None:
    """Post-training quantization of a checkpoint, calibrated over sampling trajectories."""
    from difflab.quant.commands import (
        check_recipe_or_config,
        format_report,
        quantize_checkpoint,
    )

    check_recipe_or_config(recipe or None, config or None)  # both checked before loading
    _output_folder(out, "--out")
    report = quantize_checkpoint(checkpoint, out, recipe=recipe or None, config=config or None,
                                 calib_steps=calib_steps)
    typer.echo(format_report(report))


@app.command()
def export(
    checkpoint: str = typer.Argument(..., help="training checkpoint or run folder"),
    out: str = typer.Option(..., help="new folder: model.safetensors + difflab.json"),
    metrics: str = typer.Option("", help="a metrics.json of `difflab eval --out` or the "
                                "demo whose headline numbers go into the manifest"),
    reproduce: str = typer.Option("", help="the command that reproduces the checkpoint, "
                                  "recorded in the manifest"),
) -> None:
    """Export a checkpoint's network without its training state, with its metrics."""
    from difflab.runtime import export_model
    from difflab.runtime.artefacts import result_summary

    summary, provenance = result_summary(metrics) if metrics else ({}, {})
    if reproduce:
        check_prompt("--reproduce", reproduce)
        provenance["reproduce"] = reproduce
    manifest = export_model(checkpoint, out, metrics=summary, provenance=provenance)
    typer.echo(f"wrote {out}/ (model.safetensors {manifest.files['model.safetensors'][:12]}, "
               f"{len(summary)} metrics)")


@app.command("quant-recipes")
def quant_recipes() -> None:
    """List the named quantization recipes."""
    from difflab.quant.commands import recipes_table

    typer.echo(recipes_table())


@app.command()
def models() -> None:
    """List the model presets: parameters and forward GFLOPs per image."""
    from difflab.models import presets_table

    typer.echo(presets_table())


@app.command()
def samplers() -> None:
    """List the registered samplers and schedules."""
    from difflab.core.samplers import SAMPLERS
    from difflab.core.schedules import SCHEDULES

    typer.echo("samplers:  " + ", ".join(SAMPLERS.names()))
    typer.echo("schedules: " + ", ".join(SCHEDULES.names()))


@app.command()
def doctor(
    reprobe: bool = typer.Option(False, help="measure the cached speed probe again (run it on "
                                 "an idle machine)"),
) -> None:
    """Machine report for bug reports: device, CPU, threads, measured matmul rates, and the
    precision and int8 kernels difflab chooses here."""
    from difflab.runtime.machine import doctor_report

    typer.echo(doctor_report(reprobe))


@app.callback()
def _root() -> None:
    """difflab: train, sample, accelerate, quantize and measure diffusion models."""
    from difflab.runtime.machine import configure_threads

    configure_threads()


_add_subcommands()


def _close_progress_bars() -> None:
    """End any progress bar an error interrupted, so the error starts on a line of its own."""
    tqdm = sys.modules.get("tqdm")
    for bar in list(getattr(getattr(tqdm, "tqdm", None), "_instances", None) or ()):
        bar.close()


def _error(message: str) -> None:
    """Print a user error as one line on stderr."""
    _close_progress_bars()
    flat = "; ".join(line.strip() for line in message.strip().splitlines() if line.strip())
    typer.echo(f"error: {flat}", err=True)


def run(args: list[str]) -> int:
    """Run the CLI on `args`; returns the exit status (0 ok, 2 user error, 1 bug, 130 ^C)."""
    try:
        rv = app(args=args, prog_name="difflab", standalone_mode=False)
    except _NO_ARGS as e:
        typer.echo(e.ctx.get_help())
        return EXIT_USER_ERROR
    except _USAGE as e:
        ctx = getattr(e, "ctx", None)
        where = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        _error(e.format_message() + where)
        return EXIT_USER_ERROR
    except _CLICK as e:
        _error(e.format_message())
        return EXIT_USER_ERROR
    except _ABORTS:
        typer.echo("interrupted", err=True)
        return EXIT_INTERRUPTED
    except ConfigError as e:
        _error(str(e))
        return EXIT_USER_ERROR
    except Exception as e:  # a bug: one line here, the traceback in a file
        if os.environ.get("DIFFLAB_TRACEBACK"):
            raise
        from difflab.crash import report_bug

        _close_progress_bars()
        typer.echo(report_bug(e, ["difflab", *args]), err=True)
        return EXIT_BUG
    # without standalone mode an Exit (e.g. after --help) comes back as its status
    return rv if isinstance(rv, int) and not isinstance(rv, bool) else 0


def main(argv: list[str] | None = None) -> None:
    """The `difflab` entry point."""
    sys.exit(run(sys.argv[1:] if argv is None else list(argv)))


if __name__ == "__main__":
    main()
