"""Structured cross-attention (Feng et al., 2023) and GLIGEN's scheduled sampling: what each
hook computes, that one noun phrase changes nothing, that removal restores the base bit for bit,
and that bad input is one error line."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from control_nets import CTX, all_hooks, inputs, tiny_unet

from cli_helpers import difflab
from difflab.config import ConfigError
from difflab.control.gligen import Gligen, apply_gligen, switch_step
from difflab.control.layout import Layout
from difflab.control.structured import (
    StructuredConfig,
    apply_structured,
    generate_structured,
    noun_phrases,
    structured_contexts,
)
from difflab.control.train import apply_control, build_adapter
from difflab.core.context import StepContext, step_context
from difflab.models.dit import DiT, DiTConfig
from difflab.models.layers import CrossAttention, merge_heads, split_heads
from difflab.runtime import SampleConfig, load

CONFIG = SampleConfig(steps=3, cfg=2.0, precision="fp32", batch_size=4)
TWO = "a red circle and a blue square"


@pytest.fixture(scope="module")
def pipe():
    return load("shapes-base")


def test_noun_phrases_come_from_the_scene_parse_as_written():
    assert noun_phrases(TWO) == ("a red circle", "a blue square")
    assert noun_phrases("an orange ring to the left of two green triangles") == (
        "an orange ring", "two green triangles")
    assert noun_phrases("three  Red circles") == ("three  Red circles",)
    for bad in ("a red circle near a blue square", "a dog", ""):
        with pytest.raises(ConfigError, match="suite templates"):
            noun_phrases(bad)


def _reference_forward(values: torch.Tensor):
    """CrossAttention with keys from its context and values from `values` (the paper's
    structured cross-attention, written out directly) for rows [0, len(values))."""
    def forward(self, x, context, mask=None):
        q = split_heads(self.q(x), self.num_heads)
        k = split_heads(self.kv(context).chunk(2, dim=-1)[0], self.num_heads)
        v = split_heads(self.kv(torch.cat([values, context[len(values):]])).chunk(2, -1)[1],
                        self.num_heads)
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        return self.proj(merge_heads(scores.softmax(-1) @ v))
    return forward


def test_the_hook_averages_the_values_and_leaves_other_rows_and_the_maps_alone(monkeypatch):
    net, (x, t, cond) = tiny_unet(), inputs()
    ctx, mask = cond["context"], cond["context_mask"]
    g = torch.Generator().manual_seed(5)
    mean = ctx + torch.randn(ctx.shape, generator=g) * torch.tensor([0, 1, 1, 0, 0.0])[:, None]
    uncond = torch.randn(2, 5, CTX, generator=g)  # rows that hold no prompt: plain values
    batch = {"context": torch.cat([uncond, ctx]), "context_mask": torch.cat([mask, mask])}
    plain = net(x.repeat(2, 1, 1, 1), t.repeat(2), **batch)
    with apply_structured(net) as handle:
        handle.set_contexts(ctx, mean)
        got = net(x.repeat(2, 1, 1, 1), t.repeat(2), **batch)
    assert all_hooks(net) == []
    assert torch.equal(got[:2], plain[:2])  # the unconditional rows are untouched
    assert not torch.allclose(got[2:], plain[2:])
    with monkeypatch.context() as m:
        m.setattr(CrossAttention, "forward", _reference_forward(mean))
        want = net(x, t, **cond)
    assert torch.allclose(got[2:], want, atol=1e-5)


def test_only_the_chosen_blocks_and_steps_are_structured():
    net, (x, t, cond) = tiny_unet(), inputs()
    ctx = cond["context"]
    plain = net(x, t, **cond)
    shifted = ctx + 0.5
    outs = {}
    for blocks in ((), (1,), (2,)):
        with apply_structured(net, StructuredConfig(blocks=blocks)) as handle:
            handle.set_contexts(ctx, shifted)
            outs[blocks] = net(x, t, **cond)
    assert all(not torch.allclose(o, plain) for o in outs.values())
    assert not torch.allclose(outs[(1,)], outs[(2,)]) and not torch.allclose(outs[()], outs[(1,)])
    with apply_structured(net, StructuredConfig(fraction=0.5)) as handle:
        handle.set_contexts(ctx, shifted)
        for step in range(4):  # steps 0, 1 structured; 2, 3 plain
            with step_context(StepContext(step, 4, 1.0)):
                out = net(x, t, **cond)
            assert torch.equal(out, outs[()] if step < 2 else plain)


def test_one_noun_phrase_is_plain_sampling_and_removal_restores_the_base(pipe):
    single = ["a red circle", "three green triangles", "an orange ring", "two blue squares"]
    full, mean = structured_contexts(pipe, single)
    assert torch.equal(full, mean)  # the one phrase is the prompt: W_1 = W_p exactly
    seeds = [0, 1, 2, 3]
    base = pipe.generate(single, seeds, CONFIG)
    dicts = {id(m): dict(m.__dict__) for m in pipe.net.modules()}
    assert np.array_equal(generate_structured(pipe, single, seeds, CONFIG), base)
    two = [TWO, "a red circle to the left of a blue square"]
    full, mean = structured_contexts(pipe, two)
    moved = (mean - full).abs().sum(-1)  # (B, T): only the phrases' tokens move
    assert moved[0, 1:4].min() > 0 and moved[0, 5:8].min() > 0
    assert moved[0, :1].max() == 0 and moved[0, 4:5].max() == 0 and moved[0, 8:].max() == 0
    plain = pipe.generate(two, [0, 1], CONFIG)
    assert not np.array_equal(generate_structured(pipe, two, [0, 1], CONFIG), plain)
    assert all_hooks(pipe.net) == []
    assert all(dict(m.__dict__) == dicts[id(m)] for m in pipe.net.modules())
    assert np.array_equal(pipe.generate(two, [0, 1], CONFIG), plain)
    assert np.array_equal(pipe.generate(single, seeds, CONFIG), base)


def test_bad_input_to_structured_cross_attention_is_refused():
    net, (x, t, cond) = tiny_unet(), inputs()
    with pytest.raises(ConfigError, match="fraction"):
        StructuredConfig(fraction=0.0)
    with pytest.raises(ConfigError, match="out of range"):
        apply_structured(net, StructuredConfig(blocks=(9,)))
    with apply_structured(net) as handle:
        with pytest.raises(ConfigError, match="no prompts"):
            net(x, t, **cond)
        handle.set_contexts(cond["context"] + 1, cond["context"])
        with pytest.raises(ConfigError, match="does not hold every prompt"):
            net(x, t, **cond)
        with pytest.raises(ConfigError, match="need two equal"):
            handle.set_contexts(cond["context"], cond["context"][:1])
    assert all_hooks(net) == [] and torch.equal(net(x, t, **cond), net(x, t, **cond))
    torch.manual_seed(0)  # a DiT projects its text tokens before cross-attention
    dit = DiT(DiTConfig(input_size=8, patch_size=2, hidden_size=16, depth=1, num_heads=2,
                        context_dim=CTX)).eval()
    with apply_structured(dit) as handle:
        handle.set_contexts(cond["context"], cond["context"] + 1)
        with pytest.raises(ConfigError, match="transformed first"):
            dit(x, t, **cond)
    assert all_hooks(dit) == []


def test_gligen_scheduled_sampling_turns_the_gates_off_after_the_switch_step():
    net, (x, t, cond) = tiny_unet(), inputs()
    layouts = [Layout("a red circle", ("red circle",), ((0.0, 0.0, 0.5, 0.5),))] * 2
    ground = Gligen(net)
    with torch.no_grad():
        for g in ground.gated:
            g.gamma.fill_(0.5)

    def encode(phrases):
        return torch.ones(len(phrases), CTX)

    plain = net(x, t, **cond)
    runs = {}
    for tau in (None, 1.0, 0.5):
        calls = []
        extra = {} if tau is None else {"grounding_steps": tau}
        with apply_gligen(net, ground, encode, **extra) as handle:
            handle.set_layouts(layouts)
            hooks = [g.register_forward_hook(lambda *a, c=calls: c.append(1))
                     for g in ground.gated]
            outs = []
            for step in range(4):  # (output, gated layers run) per step
                before = len(calls)
                with step_context(StepContext(step, 4, 1.0)):
                    outs.append((net(x, t, **cond), len(calls) - before))
            for h in hooks:
                h.remove()
        runs[tau] = outs
    assert switch_step(0.5, 4) == 2 and switch_step(1.0, 4) == 4 and switch_step(0.3, 20) == 6
    for (a, na), (b, nb) in zip(runs[None], runs[1.0], strict=True):  # tau = 1: today's
        assert torch.equal(a, b) and na == nb == 3
    for step, (out, n) in enumerate(runs[0.5]):
        if step < 2:
            assert torch.equal(out, runs[1.0][step][0]) and n == 3
        else:  # after the switch step: no gated layer runs, the base alone
            assert torch.equal(out, plain) and n == 0
    assert not torch.allclose(runs[1.0][3][0], plain)
    assert all_hooks(net) == []
    for tau in (0.0, 1.5, float("nan")):
        with pytest.raises(ConfigError, match="grounding-steps"):
            apply_gligen(net, ground, encode, grounding_steps=tau)


def test_grounding_steps_belong_to_gligen_only(pipe):
    with pytest.raises(ConfigError, match="GLIGEN's scheduled sampling"):
        apply_control(pipe, build_adapter("t2i-adapter", pipe), grounding_steps=0.5)
    assert all_hooks(pipe.net) == []


def test_sample_structured_from_the_command_line(tmp_path, capsys, monkeypatch):
    code, text = difflab(capsys, monkeypatch, "sample", "shapes-base", "--structured", "-p", TWO,
                         "-p", "two green triangles", "--n", "2", "--steps", "2", "--cfg", "2",
                         "--out", tmp_path / "s.png")  # auto: fp32, the benchmarks' precision
    assert code == 0 and (tmp_path / "s.png").is_file()
    assert "structured over 2, 1 noun phrases, euler x2, cfg 2.0, fp32)" in text


@pytest.mark.parametrize("args, message", [
    (["-p", "a dog"], "suite templates"),
    ([], "--structured needs --prompt"),
    (["-p", TWO, "--attend-excite"], "does not combine with --attend-excite"),
    (["-p", TWO, "--layout", "x.json", "--quant", "w8a8"], "with --layout, --quant"),
    (["-p", TWO, "--grounding-steps", "0.5"], "with --grounding-steps"),
])
def test_structured_sampling_refuses_bad_input_in_one_line(tmp_path, capsys, monkeypatch, args,
                                                           message):
    code, text = difflab(capsys, monkeypatch, "sample", "shapes-base", "--structured", *args,
                         "--out", tmp_path / "s.png")
    assert code == 2 and message in text
    assert len([line for line in text.splitlines() if line.startswith("error")]) == 1
    assert not (tmp_path / "s.png").exists()


def test_grounding_steps_need_a_gligen_control(tmp_path, capsys, monkeypatch):
    code, text = difflab(capsys, monkeypatch, "sample", "shapes-base", "-p", TWO,
                         "--grounding-steps", "0.5", "--out", tmp_path / "g.png")
    assert code == 2 and "give --layout layout.json and --control DIR" in text
