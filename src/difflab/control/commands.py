"""`difflab control train`: train a control adapter on a frozen base, write its folder."""

from __future__ import annotations

from pathlib import Path

import typer

from difflab.config import ConfigError
from difflab.control.train import METHODS

control_app = typer.Typer(no_args_is_help=True)


@control_app.command("train")
def train_command(
    base: str = typer.Argument(..., help="base model: a shipped name (shapes-base), run or "
                               "checkpoint folder"),
    method: str = typer.Option("controlnet", help=", ".join(METHODS)),
    steps: int = typer.Option(1500, help="optimisation steps (at most)"),
    batch_size: int = typer.Option(16, help="scenes per step"),
    lr: float = typer.Option(1e-3, help="learning rate"),
    layout_dropout: float = typer.Option(0.0, help="share of training scenes given an empty "
                                         "layout (the caption kept), so the adapter learns to "
                                         "leave the base alone without boxes"),
    max_minutes: float = typer.Option(20.0, help="stop after this much wall time"),
    seed: int = typer.Option(0, help="seed of the scene draws and initialisation"),
    positions: bool = typer.Option(True, help="GLIGEN: give its gated self-attention each "
                                   "visual token's position (--no-positions: the paper's form)"),
    out: str = typer.Option(..., help="new control folder"),
) -> None:
    """Train a control adapter on BASE with the shapes world's layouts: `difflab control train
    shapes-base --method t2i-adapter --out runs/t2i-adapter`."""
    from difflab.control.controlnet import parameter_count
    from difflab.control.train import ControlTrainConfig, save_control, train_control
    from difflab.runtime import load
    from difflab.tune.adapters import base_reference

    cfg = ControlTrainConfig(method=method, steps=steps, batch_size=batch_size, lr=lr,
                             max_seconds=max_minutes * 60, seed=seed,
                             layout_dropout=layout_dropout)
    if not positions and method != "gligen":
        raise ConfigError(f"--no-positions is a GLIGEN setting; --method is {method}")
    options = {"positions": positions} if method == "gligen" else None
    if Path(out).exists() and (not Path(out).is_dir() or any(Path(out).iterdir())):
        raise ConfigError(f"{out} exists and is not an empty folder; choose a new --out")
    reference = base_reference(base)
    pipe = load(base)
    net, metrics = train_control(pipe, cfg, options=options)
    metrics |= {"parameters": parameter_count(net), "base_parameters": parameter_count(pipe.net)}
    save_control(net, out, reference, cfg, metrics)
    typer.echo(f"wrote {out} ({metrics['steps_done']} steps in {metrics['seconds']} s, "
               f"{metrics['parameters']:,} parameters = "
               f"{metrics['parameters'] / metrics['base_parameters']:.0%} of the base)")
    if metrics.get("gates"):
        typer.echo("gates |tanh(gamma)|: " + ", ".join(f"{name} {v:.3f}"
                                                      for name, v in metrics["gates"].items()))


def sample_with_layout(checkpoint: str, prompts: list[str], n: int, config, seed: int,
                       layout: str, box_guidance: bool, attend_excite: bool, scale: float,
                       control: str, out: str, grounding_steps: float = 1.0) -> None:
    """`difflab sample BASE --layout layout.json|plan [--box-guidance | --attend-excite]
    [--control DIR [--grounding-steps TAU]]`: n images of the layout's prompt, its boxes drawn
    over them; `plan` plans the boxes from --prompt (`layout.plan_layout`)."""
    import numpy as np

    from difflab.control.guidance import DEFAULTS, GuidanceConfig
    from difflab.control.layout import draw_boxes, read_layout
    from difflab.control.sampling import generate_controlled
    from difflab.data.grid import make_grid
    from difflab.io import atomic_write
    from difflab.limits import check_images, check_int, check_seed, image_format
    from difflab.runtime import load

    if not layout:
        raise ConfigError("--box-guidance, --attend-excite and --control need --layout "
                          "layout.json (the prompt's phrases and boxes) or --layout plan")
    if box_guidance and attend_excite:
        raise ConfigError("choose one of --box-guidance and --attend-excite")
    check_int("--n", n, 1)
    check_images("--n (images)", n)
    check_seed("--seed", seed, n)
    fmt = image_format("--out", out)
    method = "box" if box_guidance else "attend-excite" if attend_excite else ""
    guidance = None
    if method:
        default_scale, iterations = DEFAULTS[method]
        guidance = GuidanceConfig(method=method, scale=scale or default_scale,
                                  iterations=iterations)
    if control and not Path(control).is_dir():
        raise ConfigError(f"--control {control!r} is not a folder")
    if grounding_steps != 1.0:
        from difflab.limits import check_float

        if not control:
            raise ConfigError("--grounding-steps is GLIGEN's scheduled sampling; give --control "
                              "DIR (a GLIGEN adapter)")
        check_float("--grounding-steps", grounding_steps, 0.0, 1.0, lo_open=True)
    if layout == "plan":  # one box per object of the prompt, before the model loads
        from difflab.align.rewards import parse_prompt
        from difflab.control.layout import plan_layout

        if len(prompts) != 1:
            raise ConfigError("--layout plan plans the boxes of one --prompt (in the suites' "
                              f"templates); got {len(prompts)}")
        planned = plan_layout(parse_prompt(prompts[0]), seed)
    pipe = load(checkpoint)
    lay = planned if layout == "plan" else read_layout(layout, pipe.image_shape[-1])
    if prompts and prompts != [lay.prompt]:
        raise ConfigError(f"--prompt differs from the layout's prompt {lay.prompt!r}; give one")
    seeds = [seed + i for i in range(n)]
    if control:
        from difflab.control.train import apply_control, load_control

        net = load_control(control, pipe)
        with apply_control(pipe, net, grounding_steps) as handle:
            images = generate_controlled(pipe, [lay] * n, seeds, config, guidance, handle)
    else:
        images = generate_controlled(pipe, [lay] * n, seeds, config, guidance)
    boxes = lay.pixel_boxes(images.shape[1])
    drawn = np.stack([draw_boxes(img, boxes) for img in images])
    grid = make_grid(drawn, labels=[lay.prompt] * n, ncol=n, scale=1)
    atomic_write(out, lambda p: grid.save(p, format=fmt))
    tau = f" grounding {grounding_steps:g} of the steps" if grounding_steps != 1.0 else ""
    what = ", ".join(x for x in (method and f"{method} x{guidance.scale:g}",
                                 control and f"control {control}{tau}") if x) or "plain"
    typer.echo(f"wrote {out} ({n} images of {lay.prompt!r}, {len(boxes)} boxes, {what}, "
               f"{config.sampler} x{config.steps}, cfg {config.cfg})")


def sample_structured(checkpoint: str, prompts: list[str], n: int, config, seed: int, out: str,
                      sampler: str | None, steps: int | None, cfg: float | None) -> None:
    """`difflab sample BASE --structured -p PROMPT`: n images per prompt with structured
    cross-attention (Feng et al., 2023), in fp32 unless --precision says otherwise (the
    benchmarks' precision); the output line names the precision it ran in."""
    from dataclasses import replace

    from difflab.cli import _own_defaults
    from difflab.control.structured import generate_structured, noun_phrases
    from difflab.data.grid import make_grid
    from difflab.io import atomic_write
    from difflab.limits import check_images, check_int, check_seed, image_format
    from difflab.runtime import load
    from difflab.runtime.machine import resolve_precision

    if not prompts:
        raise ConfigError("--structured needs --prompt (repeatable), in the suites' templates")
    check_int("--n", n, 1)
    check_images("--n x prompts (images)", n * len(prompts))
    check_seed("--seed", seed, n * len(prompts))
    fmt = image_format("--out", out)
    phrases = {p: noun_phrases(p) for p in prompts}  # before the model loads
    pipe = load(checkpoint)
    config = _own_defaults(pipe, config, sampler, steps, cfg)
    if config.precision == "auto":  # what the benchmarks measured; --precision bf16 is kept
        config = replace(config, precision="fp32")
    precision = resolve_precision(config.precision, pipe.device).name
    every = [p for p in prompts for _ in range(n)]
    images = generate_structured(pipe, every, [seed + i for i in range(len(every))], config,
                                 progress=True)
    grid = make_grid(images, labels=every, ncol=n)
    atomic_write(out, lambda p: grid.save(p, format=fmt))
    counts = ", ".join(str(len(v)) for v in phrases.values())
    typer.echo(f"wrote {out} ({len(images)} images, structured over {counts} noun phrases, "
               f"{config.sampler} x{config.steps}, cfg {config.cfg}, {precision})")
