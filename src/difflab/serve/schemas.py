"""Request and response bodies of the HTTP API (they make the published OpenAPI schema)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from difflab.limits import MAX_SEED
from difflab.serve.config import NO_PLAN


class ImageRequest(BaseModel):
    """`POST /v1/images`: images for one or more prompts; unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")

    prompt: str | list[str] = Field(..., description="a prompt, or a list of prompts",
                                    examples=["a red circle"])
    n: int = Field(1, ge=1, description="images per prompt")
    seed: int | None = Field(None, ge=0, le=MAX_SEED, description="seed of the first image; "
                             "image i uses seed + i (prompt-major); omitted: the server draws "
                             "one and returns every image's seed")
    sampler: str = Field("euler", description="a sampler name (GET /v1/models lists them)")
    steps: int = Field(20, ge=1, description="sampling steps")
    guidance: float = Field(1.0, ge=0, description="classifier-free guidance scale (1: off)")
    negative_prompt: str = Field("", description="the prompt guidance steers away from")
    size: int | None = Field(None, ge=1, description="image side in pixels: the model's own "
                             "or another size the server allows (GET /v1/models)")
    plan: str = Field(NO_PLAN, description="acceleration plan by name (GET /v1/models)")
    adapter: str = Field("", description="adapter by name ('' = the base model)")
    response_format: Literal["b64_json", "png"] = Field(
        "b64_json", description="b64_json: JSON with base64 PNGs; png: the PNG itself "
        "(one image only)")
    stream: bool = Field(False, description="answer with server-sent events: progress, then "
                         "the JSON result")


class Image(BaseModel):
    prompt: str
    seed: int
    b64_png: str = Field(..., description="the image as a base64-encoded PNG")


class Timing(BaseModel):
    seconds: float = Field(..., description="arrival to answer")
    queue_seconds: float = Field(..., description="waiting for a batch")
    compute_seconds: float = Field(..., description="sampling the batch this request was in")
    batch_images: int = Field(..., description="images in that batch (this request's included)")
    seconds_per_image: float = Field(..., description="compute_seconds / batch_images")
    speedup: float | None = Field(None, description="per-image time of the last batch of the "
                                  "same size and settings without a plan, over this one's "
                                  "(null: none measured yet, or no plan)")


class ImageResponse(BaseModel):
    model: str
    created: int
    images: list[Image]
    settings: dict
    timing: Timing


class ErrorResponse(BaseModel):
    error: str
