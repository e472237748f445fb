"""Shared layers: attention backends, RoPE, embeddings, patches."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from difflab.models.layers import (
    PatchEmbed,
    apply_rope,
    attend,
    choose_attention_backend,
    grid_positions,
    key_padding_mask,
    rope_2d,
    sincos_pos_embed_2d,
    timestep_embedding,
    unpatchify,
)

CPU = torch.device("cpu")


def test_backend_choice_depends_on_device_dtype_length_and_autograd():
    assert choose_attention_backend(CPU, torch.bfloat16, 64, 64, needs_grad=True) == "math"
    assert choose_attention_backend(CPU, torch.bfloat16, 64, 64) == "sdpa"
    assert choose_attention_backend(CPU, torch.bfloat16, 1024, 1024, needs_grad=True) == "sdpa"
    assert choose_attention_backend(CPU, torch.float32, 64, 64, needs_grad=True) == "sdpa"
    cuda = torch.device("cuda")
    assert choose_attention_backend(cuda, torch.bfloat16, 64, 64, needs_grad=True) == "sdpa"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_attention_backends_agree_with_masks(dtype):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 7, 8, generator=g).to(dtype) for _ in range(3))
    mask = key_padding_mask(torch.tensor([[1, 1, 0, 0, 1, 0, 0], [0] * 7]).bool())
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    for m in (None, mask):
        torch.testing.assert_close(attend(q, k, v, m, "math"), attend(q, k, v, m, "sdpa"),
                                   rtol=tol, atol=tol)
    with pytest.raises(ValueError, match="valid"):
        attend(q, k, v, backend="flash")


def test_masked_keys_get_no_weight_and_empty_rows_average_all_keys():
    q = torch.randn(1, 1, 2, 4)
    k = torch.randn(1, 1, 3, 4)
    v = torch.eye(3)[None, None, :, :].expand(1, 1, 3, 3).contiguous().repeat(2, 1, 1, 1)
    q, k = q.repeat(2, 1, 1, 1), k.repeat(2, 1, 1, 1)
    mask = key_padding_mask(torch.tensor([[True, False, True], [False, False, False]]))
    weights = attend(q, k, v, mask, "math")  # (2, 1, 2, 3): v = I exposes the weights
    assert torch.all(weights[0, ..., 1] == 0)
    torch.testing.assert_close(weights[1], torch.softmax(q[1] @ k[1].transpose(-1, -2) / 2, -1))


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 6), st.integers(1, 6), st.sampled_from([4, 8, 16]))
def test_rope_is_a_rotation_and_depends_only_on_offsets(gh, gw, head_dim):
    cos, sin = rope_2d(grid_positions(gh, gw), head_dim)
    x = torch.randn(1, 1, gh * gw, head_dim, dtype=torch.float64)
    y = apply_rope(x, cos.double(), sin.double())
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1))
    # q.k after rotation depends on the position offset only: shift both by one row
    q, k = torch.randn(2, head_dim, dtype=torch.float64)
    at = lambda p: rope_2d(torch.tensor([p], dtype=torch.float32), head_dim)  # noqa: E731
    def dot(pq, pk):
        (cq, sq), (ck, sk) = at(pq), at(pk)
        return (apply_rope(q[None], cq.double(), sq.double())
                * apply_rope(k[None], ck.double(), sk.double())).sum()
    torch.testing.assert_close(dot((0, 1), (2, 3)), dot((5, 4), (7, 6)), rtol=1e-5, atol=1e-5)


def test_patchify_unpatchify_round_trip():
    embed = PatchEmbed(2, 3, 12)
    with torch.no_grad():  # an identity patch embedding: one output per (c, i, j) pixel
        embed.proj.weight.copy_(torch.eye(12).reshape(12, 3, 2, 2))
        embed.proj.bias.zero_()
    x = torch.randn(2, 3, 4, 6)
    tokens = embed(x)  # (2, 6, 12) with values in (c, i, j) order
    tokens = tokens.unflatten(-1, (3, 2, 2)).permute(0, 1, 3, 4, 2).flatten(2)  # -> (i, j, c)
    assert torch.equal(unpatchify(tokens, 2, 3, 2, 3), x)


def test_embeddings_have_the_documented_shapes_and_ranges():
    emb = timestep_embedding(torch.tensor([0.0, 500.0, 999.0]), 33)
    assert emb.shape == (3, 33) and emb.abs().max() <= 1
    assert torch.equal(emb[0, :16], torch.ones(16))  # cos(0) = 1
    pos = sincos_pos_embed_2d(16, 3, 5)
    assert pos.shape == (15, 16) and len({tuple(r.tolist()) for r in pos}) == 15
    assert grid_positions(4, 4, stride=2).tolist() == [[0.5, 0.5], [0.5, 2.5], [2.5, 0.5],
                                                       [2.5, 2.5]]


def test_patch_embed_matches_its_conv_and_is_contiguous():
    torch.manual_seed(0)
    embed = PatchEmbed(patch_size=2, in_channels=3, dim=8)
    x = torch.randn(2, 3, 6, 4)
    out = embed(x)
    reference = embed.proj(x).flatten(2).transpose(1, 2)  # (B, N, D) from the conv itself
    assert out.is_contiguous()
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-6)


def test_math_attention_takes_per_query_masks():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 4, 8, generator=g) for _ in range(3))
    mask = torch.rand(2, 1, 4, 4, generator=g) > 0.3
    mask[..., 0] = True  # every query keeps one key
    expected = torch.softmax((q @ k.transpose(-1, -2) / 8**0.5).masked_fill(~mask, -torch.inf), -1)
    torch.testing.assert_close(attend(q, k, v, mask, "math"), expected @ v)
