"""GLIGEN grounding ("GLIGEN: Open-Set Grounded Text-to-Image Generation", Li et al. 2023) on a
frozen UNet, attached through hooks on its declared blocks.

Each object of a layout becomes one grounding token, MLP([phrase embedding; Fourier embedding of
its box]), the phrase embedding being the base's own text encoder's pooled output for the
phrase. In every transformer block of the declared blocks that holds cross-attention (on
unet-tiny: level 1 down, mid, level 1 up, all 16x16), a gated self-attention reads the visual
tokens and the grounding tokens together and adds tanh(gamma) times its visual outputs to the
block's residual stream, beside the cross-attention's (a post-forward hook on the
CrossAttention module, whose input is the block's normalised visual tokens). gamma starts at 0,
so a fresh adapter leaves the base bit-identical; `remove()` detaches it all. With scheduled
sampling (`grounding_steps` tau < 1) the gated layers are off after the first tau of the steps.

Departure from the paper (`GligenConfig.positions`, on by default): each visual token's
normalised centre (x, y) is Fourier-embedded like the boxes and projected into the block width,
then added to the visual tokens of the gated self-attention's input sequence only (not to the
residual stream). The paper's large UNets locate a pixel from deep convolutional features; the
tiny base's 16x16 tokens carry no positional embedding, so without this a visual token cannot
attend to "the grounding token whose box holds me". Folders saved before the field existed
load with it off, exactly as they were trained.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from difflab.accel.hooks import AccelHandle, ModelHook, StepState, attach
from difflab.config import ConfigError
from difflab.control.layout import MAX_BOXES
from difflab.control.probe import cross_attention_modules
from difflab.core.context import current_context
from difflab.limits import check_float


@dataclass(frozen=True)
class GligenConfig:
    """The grounding tokens' width, the box's Fourier frequencies, the MLP's hidden width and
    whether the gated self-attention sees each visual token's position (not in the paper)."""

    token_dim: int = 64
    fourier_freqs: int = 8
    hidden: int = 64
    positions: bool = True

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, saved: dict) -> GligenConfig:
        """The config a control folder saved; one saved before `positions` existed has it off
        (the adapter it holds was trained without positions)."""
        return cls(**{"positions": False, **saved})


def fourier_embedding(boxes: Tensor, freqs: int) -> Tensor:
    """(..., d) coordinates in [0, 1] (boxes: d = 4) -> (..., d * 2 * freqs): sin and cos of
    2^k * pi * coordinate (the Fourier embedding GLIGEN gives its boxes)."""
    scales = (2.0 ** torch.arange(freqs, dtype=boxes.dtype, device=boxes.device)) * math.pi
    angles = boxes[..., None] * scales  # (..., 4, freqs)
    return torch.cat([angles.sin(), angles.cos()], dim=-1).flatten(-2)


def token_centres(n: int) -> Tensor:
    """(n, 2) normalised centres (x, y; y down, as the layouts' boxes) of a square grid's tokens
    in row-major order (how the UNet flattens its feature maps)."""
    side = math.isqrt(n)
    if side * side != n:
        raise ConfigError(f"GLIGEN positions need a square token grid; got {n} visual tokens "
                          f"(not h * h)")
    centres = (torch.arange(side, dtype=torch.float32) + 0.5) / side
    y, x = torch.meshgrid(centres, centres, indexing="ij")  # rows top to bottom
    return torch.stack([x.flatten(), y.flatten()], dim=-1)


class GatedSelfAttention(nn.Module):
    """tanh(gamma) * SelfAttention(LayerNorm([visual (+ position); grounding]))[visual],
    gamma = 0 at init; `pos_freqs` > 0 adds each visual token's Fourier-embedded centre."""

    def __init__(self, dim: int, token_dim: int, num_heads: int, pos_freqs: int = 0) -> None:
        super().__init__()
        self.num_heads, self.pos_freqs = num_heads, pos_freqs
        self.proj_tokens = nn.Linear(token_dim, dim)
        # (x, y) -> 2 * 2 * freqs Fourier features -> the block width
        self.proj_pos = nn.Linear(4 * pos_freqs, dim) if pos_freqs else None
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.gamma = nn.Parameter(torch.zeros(()))

    def forward(self, x: Tensor, tokens: Tensor, valid: Tensor) -> Tensor:
        N = x.shape[1]
        q, k, v, keep = self._attention_inputs(x, tokens, valid)
        out = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=keep[:, None, None])
        out = self.out(out.transpose(1, 2).flatten(-2))[:, :N]  # the visual tokens' outputs
        return torch.tanh(self.gamma) * out

    @torch.no_grad()
    def attention(self, x: Tensor, tokens: Tensor, valid: Tensor) -> Tensor:
        """(B, H, N, N + K): each visual token's attention over [visual; grounding] tokens (a
        probe, for diagnostics)."""
        q, k, _, keep = self._attention_inputs(x, tokens, valid)
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])  # (B, H, N + K, N + K)
        scores = scores.masked_fill(~keep[:, None, None], float("-inf"))
        return scores.softmax(-1)[:, :, : x.shape[1]]

    def _attention_inputs(self, x: Tensor, tokens: Tensor, valid: Tensor):
        """q, k, v (B, H, N + K, Dh) of [visual (+ position); grounding] and which keys to
        attend to (B, N + K)."""
        B, N, C = x.shape
        visual = x
        if self.proj_pos is not None:  # the attention's input only, not the residual stream
            centres = token_centres(N).to(device=x.device, dtype=x.dtype)  # (N, 2)
            visual = x + self.proj_pos(fourier_embedding(centres, self.pos_freqs))
        seq = self.norm(torch.cat([visual, self.proj_tokens(tokens)], dim=1))  # (B, N + K, C)
        q, k, v = (t.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)
                   for t in self.qkv(seq).chunk(3, dim=-1))  # each (B, H, N + K, Dh)
        keep = torch.cat([valid.new_ones(B, N), valid], dim=1)  # (B, N + K) keys to attend to
        return q, k, v, keep


class Gligen(nn.Module):
    """The grounding tokenizer and one gated self-attention per cross-attention module of the
    base's declared blocks."""

    method = "gligen"

    def __init__(self, base: nn.Module, cfg: GligenConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or GligenConfig()
        found = cross_attention_modules(base)
        self.embed_dim = found[0][1].kv.in_features  # the text encoder's width
        box_dim = 4 * 2 * cfg.fourier_freqs
        self.tokenizer = nn.Sequential(nn.Linear(self.embed_dim + box_dim, cfg.hidden), nn.SiLU(),
                                       nn.Linear(cfg.hidden, cfg.token_dim))
        self.names = [name for name, _ in found]
        pos_freqs = cfg.fourier_freqs if cfg.positions else 0
        self.gated = nn.ModuleList(GatedSelfAttention(m.q.in_features, cfg.token_dim,
                                                      m.num_heads, pos_freqs) for _, m in found)

    def tokens(self, phrases: Tensor, boxes: Tensor) -> Tensor:
        """Grounding tokens (B, K, token_dim) of phrase embeddings (B, K, D) and boxes
        (B, K, 4)."""
        boxes = fourier_embedding(boxes, self.cfg.fourier_freqs)
        return self.tokenizer(torch.cat([phrases, boxes], dim=-1))

    @torch.no_grad()
    def diagnostics(self) -> dict:
        """How far each gated layer has opened: |tanh(gamma)| by cross-attention module name
        (all 0 for a fresh adapter; an adapter whose gates stay near 0 has not learned)."""
        return {"gates": {name: round(abs(math.tanh(g.gamma.item())), 4)
                          for name, g in zip(self.names, self.gated, strict=True)}}


class _Grounding:
    """The grounding of the batch about to run, and its tokens for the model call in progress."""

    def __init__(self) -> None:
        self.phrases: Tensor | None = None  # (B, K, D)
        self.boxes: Tensor | None = None  # (B, K, 4)
        self.valid: Tensor | None = None  # (B, K) bool
        self.tokens: Tensor | None = None  # (model batch, K, token_dim)
        self.keep: Tensor | None = None


class _ComputeTokens(ModelHook):
    """On the base model: this call's grounding tokens, repeated to the model's batch."""

    def __init__(self, net: Gligen, state: _Grounding) -> None:
        self.net, self.state = net, state

    def pre_forward(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        s = self.state
        if s.phrases is None:
            raise ConfigError("GLIGEN is attached but has no grounding; call set_layouts")
        x = args[0] if args else kwargs["x"]
        reps = x.shape[0] // s.phrases.shape[0]
        if reps * s.phrases.shape[0] != x.shape[0]:
            raise ConfigError(f"grounding for {s.phrases.shape[0]} images, model batch of "
                              f"{x.shape[0]}")
        tokens = self.net.tokens(s.phrases.to(x.dtype), s.boxes.to(x.dtype))
        s.tokens, s.keep = tokens.repeat(reps, 1, 1), s.valid.repeat(reps, 1)
        return args, kwargs


class _GatedAfterCross(ModelHook):
    """On one CrossAttention: add the gated self-attention of its input tokens and the
    grounding tokens to its output (both join the block's residual stream), in the first
    `grounding_steps` fraction of the sampling steps only (GLIGEN's scheduled sampling)."""

    def __init__(self, gated: GatedSelfAttention, state: _Grounding,
                 grounding_steps: float = 1.0) -> None:
        self.gated, self.state, self.grounding_steps = gated, state, grounding_steps

    def post_forward(self, module: nn.Module, args: tuple, kwargs: dict, output: Tensor):
        ctx = current_context()  # outside a sampler (training) grounding is always on
        if ctx is not None and ctx.step >= switch_step(self.grounding_steps, ctx.num_steps):
            return output  # beta = 0: the base model alone
        x = args[0] if args else kwargs["x"]
        return output + self.gated(x, self.state.tokens, self.state.keep)


def switch_step(grounding_steps: float, num_steps: int) -> int:
    """The first sampling step without grounding: ceil(tau * steps) (GLIGEN's scheduled
    sampling, Li et al. 2023); tau = 1 grounds every step."""
    return math.ceil(grounding_steps * num_steps)


class GligenHandle(AccelHandle):
    """`apply_gligen`'s handle: `set_layouts(layouts)` before sampling; `remove()` detaches."""

    grounding: _Grounding
    net: Gligen
    encode: Callable[[list[str]], Tensor]

    def set_grounding(self, phrases: Tensor, boxes: Tensor, valid: Tensor) -> None:
        """Phrase embeddings (B, K, D), boxes (B, K, 4) as fractions and which are real (B, K)."""
        g = self.grounding
        g.phrases, g.boxes, g.valid = phrases, boxes, valid.bool()

    def set_layouts(self, layouts: Sequence, device: torch.device | str = "cpu") -> None:
        """The layouts (`layout.Layout`) of the batch about to run; a layout may hold no boxes
        (the adapter then reads no grounding token)."""
        B, K = len(layouts), max([MAX_BOXES, *(len(lay.phrases) for lay in layouts)])
        names = sorted({p for lay in layouts for p in lay.phrases})
        table = dict(zip(names, self.encode(names), strict=True)) if names else {}
        dim = self.net.embed_dim
        phrases, boxes = torch.zeros(B, K, dim), torch.zeros(B, K, 4)
        valid = torch.zeros(B, K, dtype=torch.bool)
        for b, lay in enumerate(layouts):
            for k, (phrase, box) in enumerate(zip(lay.phrases, lay.boxes, strict=True)):
                phrases[b, k], boxes[b, k], valid[b, k] = table[phrase], torch.tensor(box), True
        self.set_grounding(phrases.to(device), boxes.to(device), valid.to(device))


def apply_gligen(model: nn.Module, net: Gligen, encode: Callable[[list[str]], Tensor],
                 grounding_steps: float = 1.0) -> GligenHandle:
    """Attach the grounding `net` to `model` (a UNet, frozen); `encode(phrases)` gives each
    phrase's embedding (N, D) from the base's own text encoder. The gated layers run in the
    first `grounding_steps` (tau, 0 < tau <= 1) fraction of the sampling steps only."""
    check_float("--grounding-steps", grounding_steps, 0.0, 1.0, lo_open=True)
    found = dict(cross_attention_modules(model))
    if list(found) != net.names:
        raise ConfigError(f"this GLIGEN adapter grounds {net.names}; the model's cross-attention "
                          f"is at {list(found)}")
    state = _Grounding()
    compute = _ComputeTokens(net, state)
    hooks = [(model, compute)]
    hooks += [(found[name], _GatedAfterCross(g, state, grounding_steps))
              for name, g in zip(net.names, net.gated, strict=True)]
    handle = attach("gligen", model, StepState(), hooks)
    out = GligenHandle(handle.name, handle.state, handle.hooks)
    out.grounding, out.net, out.encode = state, net, encode
    return out


def phrase_encoder(pipe) -> Callable[[list[str]], Tensor]:
    """Phrases -> (N, D) embeddings: the base's text encoder's pooled output (cached)."""
    cache: dict[str, Tensor] = {}

    def encode(phrases: list[str]) -> Tensor:
        missing = [p for p in phrases if p not in cache]
        if missing:
            with torch.no_grad():
                pooled = pipe.condition(missing).get("pooled")
            if pooled is None:
                raise ConfigError("GLIGEN grounding needs a text encoder with a pooled output "
                                  "(e.g. minilm); this model has none")
            cache.update(zip(missing, pooled.float().cpu(), strict=True))
        return torch.stack([cache[p] for p in phrases])

    return encode


@torch.no_grad()
def is_zero_initialised(net: Gligen) -> bool:
    """Whether every gate is still exactly closed (gamma = 0, what a fresh adapter is)."""
    return all(g.gamma.item() == 0.0 for g in net.gated)
