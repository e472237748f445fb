"""What a server holds (`Catalog`: the model, its adapters, plans and sizes, loaded once) and
what it does with a request (`Service`: check it, queue it, sample it, answer it)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from difflab.config import ConfigError
from difflab.data.grid import to_uint8
from difflab.limits import check_prompt, check_seed
from difflab.runtime import Pipeline, SampleConfig, load
from difflab.serve.batcher import Batcher, Job, JobResult, ServeError
from difflab.serve.config import NO_PLAN, Plan, ServeConfig, check_name
from difflab.serve.metrics import ServeMetrics
from difflab.serve.schemas import ImageRequest

# A long-running server sees unbounded distinct prompts and settings: keep the newest only.
PROMPT_CACHE_ENTRIES = 1024  # text embeddings per pipeline, LRU (MiniLM x 16 tokens: 25 MB)
BASELINE_ENTRIES = 256  # per-image times without a plan, for the speed-up column


@dataclass
class Catalog:
    """The loaded pipelines by adapter name ('' = the base), the plans and the image sizes."""

    name: str
    pipelines: dict[str, Pipeline]
    plans: dict[str, Plan]
    sizes: tuple[int, ...]  # the model's own side first
    _sized: dict[tuple[str, int], Pipeline] = field(default_factory=dict)
    # a plan with a quantization recipe samples with its own quantized copy of the base network
    plan_nets: dict[str, Any] = field(default_factory=dict)

    @property
    def base(self) -> Pipeline:
        return self.pipelines[""]

    def pipeline(self, adapter: str, size: int) -> Pipeline:
        """The pipeline of `adapter` sampling `size` x `size` images (the network and a latent
        model's autoencoder are shared; a latent model denoises size / f latents)."""
        pipe = self.pipelines[adapter]
        if size == pipe.pixel_shape[1]:
            return pipe
        if (adapter, size) not in self._sized:
            side = latent_side(pipe, size)
            sized = Pipeline(
                pipe.net, pipe.process, pipe.conditioner, (pipe.image_shape[0], side, side),
                source=pipe.source, config=pipe.config, kind=pipe.kind, labels=pipe.labels,
                autoencoder=pipe.autoencoder)
            sized.sample_defaults = dict(pipe.sample_defaults)
            self._sized[adapter, size] = sized
        return self._sized[adapter, size]

    @contextlib.contextmanager
    def planned(self, plan: str, pipe: Pipeline) -> Iterator[Pipeline]:
        """`pipe` with plan `plan`'s network (quantized copy or its own) and hook, for the
        block."""
        net = self.plan_nets.get(plan, pipe.net)
        original, pipe.net = pipe.net, net
        try:
            with self.plans[plan].applied(net):
                yield pipe
        finally:
            pipe.net = original


def latent_side(pipe: Pipeline, size: int) -> int:
    """The side the network denoises for `size`-pixel images: size, or size / f in latents."""
    if pipe.autoencoder is None:
        return size
    f = pipe.autoencoder.config.downsample_factor
    if size % f:
        raise ConfigError(f"size = {size}: this latent model's autoencoder downsamples by {f}, "
                          f"so sizes must be multiples of {f}")
    return size // f


def load_catalog(model: str, adapters: Sequence[tuple[str, float]] = (),
                 plans: dict[str, Plan] | None = None, sizes: Sequence[int] = (),
                 precision: str = "auto") -> Catalog:
    """Load `model` and one copy per adapter (merged at its weight), and check that every plan
    and size works on it by sampling one image with each (which also warms the model up)."""
    from difflab.tune.adapters import apply_adapters

    names = [check_name("adapter", Path(path).name) for path, _ in adapters]
    if len(set(names)) != len(names):
        raise ConfigError(f"two adapters share a folder name ({', '.join(names)}); requests "
                          "choose adapters by folder name, so rename one")
    pipelines = {"": load(model)}
    for name, (path, weight) in zip(names, adapters, strict=True):
        pipelines[name] = load(model)
        apply_adapters(pipelines[name], [(path, weight)])
    for pipe in pipelines.values():  # text models cache every prompt's embedding: bound it
        cache = getattr(pipe.conditioner, "cache", None)
        if cache is not None:
            cache.max_entries = PROMPT_CACHE_ENTRIES
    own = pipelines[""].pixel_shape[1]  # sizes are image sides in pixels, latent model or not
    catalog = Catalog(Path(model).name, pipelines, plans or {NO_PLAN: Plan()},
                      (own, *sorted(set(sizes) - {own})))
    prompt = catalog.base.conditioner.example_prompts()[0]
    for plan in catalog.plans.values():
        if plan.quant:
            catalog.plan_nets[plan.name] = plan.network(catalog.base)
        config = plan.sample_config(SampleConfig(steps=6, precision=precision))
        for side in catalog.sizes:
            try:
                with catalog.planned(plan.name, catalog.pipeline("", side)) as pipe:
                    pipe.sample([prompt], [0], config)
            except ConfigError:
                raise
            except Exception as e:  # the network refuses this plan or size
                what = f"plan {plan.name!r}" if plan.name != NO_PLAN else "the plain model"
                raise ConfigError(f"{what} cannot sample {side}x{side} images with "
                                  f"{catalog.name}: {type(e).__name__}: {e}") from None
    return catalog


def encode_png(image: np.ndarray) -> bytes:
    """A (H, W, 3) uint8 image as PNG bytes."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


class Service:
    """One server: a catalog, its limits, the batcher and the metrics."""

    def __init__(self, catalog: Catalog, config: ServeConfig | None = None) -> None:
        self.catalog = catalog
        self.config = config or ServeConfig()
        self.metrics = ServeMetrics()
        self.batcher = Batcher(self.compute, max_batch=self.config.max_batch,
                               max_wait_ms=self.config.max_wait_ms,
                               max_queue=self.config.max_queue, metrics=self.metrics)
        # per-image seconds without a plan, by (settings, batch images): the page's speed-up
        self.baseline: OrderedDict[tuple, float] = OrderedDict()

    async def start(self) -> None:
        await self.batcher.start()

    async def stop(self) -> None:
        await self.batcher.stop()

    # ---- requests ------------------------------------------------------------------------

    def job(self, req: ImageRequest) -> Job:
        """Check a request against the model and the limits; a `Job` ready to queue."""
        cfg, cat = self.config, self.catalog
        prompts = [req.prompt] if isinstance(req.prompt, str) else list(req.prompt)
        if not prompts:
            raise ConfigError("prompt is an empty list; give at least one prompt")
        for i, p in enumerate(prompts):
            where = "prompt" if isinstance(req.prompt, str) else f"prompt[{i}]"
            check_prompt(where, p, allow_empty=True)
            if len(p) > cfg.max_prompt_chars:
                raise ConfigError(f"{where} has {len(p)} characters; this server allows "
                                  f"{cfg.max_prompt_chars}")
        check_prompt("negative_prompt", req.negative_prompt, allow_empty=True)
        images = len(prompts) * req.n
        if images > cfg.max_images:
            raise ConfigError(f"{len(prompts)} prompt(s) x n={req.n} = {images} images; this "
                              f"server allows {cfg.max_images} per request")
        if req.steps > cfg.max_steps:
            raise ConfigError(f"steps = {req.steps}; this server allows 1..{cfg.max_steps}")
        if req.plan not in cat.plans:
            raise ConfigError(f"unknown plan {req.plan!r}; valid: {', '.join(cat.plans)}")
        if req.adapter not in cat.pipelines:
            valid = ", ".join(repr(a) for a in cat.pipelines)
            raise ConfigError(f"unknown adapter {req.adapter!r}; valid: {valid}")
        size = cat.sizes[0] if req.size is None else req.size
        if size not in cat.sizes:
            raise ConfigError(f"size = {size}; this server samples "
                              f"{', '.join(map(str, cat.sizes))}")
        if req.response_format == "png" and images != 1:
            raise ConfigError(f"response_format 'png' returns one image; this request makes "
                              f"{images} (use b64_json)")
        plan = cat.plans[req.plan]
        if plan.name in cat.plan_nets and req.adapter:
            raise ConfigError(f"plan {plan.name!r} samples a quantized copy of the base model; "
                              "it cannot be combined with an adapter")
        # a plan's own sampling settings (e.g. an autotuned sampler and steps) win over the
        # request's: they are what the plan was measured with
        config = plan.sample_config(SampleConfig(
            sampler=req.sampler, steps=req.steps, cfg=req.guidance,
            negative_prompt=req.negative_prompt, precision=cfg.precision,
            batch_size=cfg.max_batch))
        seed = secrets.randbelow(2**31) if req.seed is None else req.seed
        check_seed("seed", seed, images)
        settings = {"sampler": config.sampler, "steps": config.steps, "guidance": config.cfg,
                    "negative_prompt": req.negative_prompt, "size": size,
                    "adapter": req.adapter}
        key = (tuple(sorted(settings.items())), req.plan)
        return Job([p for p in prompts for _ in range(req.n)],
                   [seed + i for i in range(images)], config, key,
                   context={"plan": req.plan, "settings": {**settings, "plan": req.plan}})

    def submit(self, job: Job) -> asyncio.Future:
        return self.batcher.submit(job)

    def compute(self, batch: list[Job], step: Callable[[], None]) -> list[list[bytes]]:
        """Sample a batch (worker thread): one PNG per image, grouped by job."""
        lead = batch[0]
        settings = lead.context["settings"]
        pipe = self.catalog.pipeline(settings["adapter"], settings["size"])
        prompts = [p for job in batch for p in job.prompts]
        seeds = [s for job in batch for s in job.seeds]
        with self.catalog.planned(lead.context["plan"], pipe):
            x = pipe.sample(prompts, seeds, lead.config, callback=lambda info: step())
        pngs = [encode_png(image) for image in to_uint8(x)]
        out, start = [], 0
        for job in batch:
            out.append(pngs[start:start + job.images])
            start += job.images
        return out

    # ---- answers -------------------------------------------------------------------------

    def answer(self, job: Job, result: JobResult) -> dict[str, Any]:
        """The JSON body of a finished request (`ImageResponse`)."""
        seconds = time.monotonic() - job.arrived
        per_image = result.compute_seconds / result.batch_images
        key = (job.key[0], result.batch_images)
        speedup = None
        if job.context["plan"] == NO_PLAN:
            self.baseline[key] = per_image
            self.baseline.move_to_end(key)
            if len(self.baseline) > BASELINE_ENTRIES:
                self.baseline.popitem(last=False)
        elif key in self.baseline:
            speedup = round(self.baseline[key] / per_image, 3)
        return {
            "model": self.catalog.name,
            "created": int(time.time()),
            "images": [{"prompt": p, "seed": s, "b64_png": base64.b64encode(png).decode()}
                       for p, s, png in zip(job.prompts, job.seeds, result.pngs, strict=True)],
            "settings": job.context["settings"],
            "timing": {"seconds": round(seconds, 4),
                       "queue_seconds": round(result.queue_seconds, 4),
                       "compute_seconds": round(result.compute_seconds, 4),
                       "batch_images": result.batch_images,
                       "seconds_per_image": round(per_image, 4), "speedup": speedup},
        }

    def describe(self) -> dict[str, Any]:
        """`GET /v1/models`: what requests may choose, and the limits."""
        from difflab.core.samplers import SAMPLERS

        cat, cfg, base = self.catalog, self.config, self.catalog.base
        return {
            "model": cat.name,
            "kind": base.kind,
            "conditioning": base.conditioner.describe(),
            "image": {"channels": base.pixel_shape[0], "sizes": list(cat.sizes)},
            "adapters": [{"name": name, "describe": pipe.labels.get("adapters", "")}
                         for name, pipe in cat.pipelines.items() if name],
            "plans": [{"name": p.name, "describe": p.describe()} for p in cat.plans.values()],
            "samplers": SAMPLERS.names(),
            "defaults": {k: v.default for k, v in ImageRequest.model_fields.items()
                         if k in ("n", "sampler", "steps", "guidance", "plan")},
            "limits": {"max_images": cfg.max_images, "max_steps": cfg.max_steps,
                       "max_prompt_chars": cfg.max_prompt_chars, "max_batch": cfg.max_batch,
                       "max_queue": cfg.max_queue, "timeout_s": cfg.timeout_s},
            "auth": bool(cfg.api_key),
        }


def refuse(error: ConfigError) -> ServeError:
    """A user error in a request as a 422."""
    return ServeError(422, str(error))
