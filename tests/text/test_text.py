"""Text encoders: shapes, masks, padding/truncation, by-path loading, training, cache hits."""

from __future__ import annotations

import shutil

import pytest
import torch

from difflab.config import from_dict, to_dict
from difflab.registry import UnknownNameError
from difflab.text import TEXT_ENCODERS, TextConfig, build_text_encoder
from difflab.text.cache import EmbeddingCache
from difflab.text.hf import minilm_path
from difflab.text.learned import LearnedTextEncoder, world_vocabulary

PROMPTS = ["a red circle to the left of a blue square", "", "two green triangles"]


@pytest.fixture(scope="module")
def minilm():
    return build_text_encoder("minilm", max_length=16)


def _check_encoding(enc, batch, max_length, dim):
    tokens, mask, pooled = enc
    assert tokens.shape == (batch, max_length, dim) and mask.shape == (batch, max_length)
    assert pooled.shape == (batch, dim) and mask.dtype == torch.bool
    assert torch.isfinite(tokens).all() and torch.isfinite(pooled).all()
    assert (tokens[~mask] == 0).all()  # padding positions are zero
    # Real tokens come first, then padding only.
    assert (mask.int().diff(dim=1) <= 0).all()
    return tokens, mask, pooled


def test_minilm_shapes_masks_and_padding(minilm):
    assert minilm.dim == 384 and minilm.max_length == 16 and not minilm.trainable
    tokens, mask, pooled = _check_encoding(minilm.encode(PROMPTS), 3, 16, 384)
    assert mask[1].sum() == 2  # "" is [CLS] [SEP]
    assert mask[0].sum() > mask[2].sum() > 2
    long = minilm.encode([" ".join(["red"] * 100)])
    assert long.mask.all()  # truncated to exactly max_length
    # Mean pooling over real tokens only: padding does not change the pooled vector.
    assert torch.allclose(pooled[2], tokens[2][mask[2]].mean(0), atol=1e-5)
    # A batch does not change a prompt's encoding.
    alone = minilm.encode([PROMPTS[2]])
    assert torch.allclose(alone.tokens[0], tokens[2], atol=1e-5)
    assert all(not p.requires_grad for p in minilm.parameters())
    minilm.train()
    assert not minilm.model.training


def test_minilm_tells_prompts_apart(minilm):
    pooled = minilm.encode(["a red circle", "a red circle", "two blue squares"]).pooled
    assert torch.equal(pooled[0], pooled[1]) and not torch.allclose(pooled[0], pooled[2])


def test_local_folder_encoder_by_path(tmp_path):
    from transformers import BertConfig, BertModel

    src = minilm_path()
    for f in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(src / f, tmp_path / f)
    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1,
                     num_attention_heads=2, intermediate_size=64)
    torch.manual_seed(0)
    BertModel(cfg).save_pretrained(tmp_path)
    enc = build_text_encoder(str(tmp_path), max_length=8)
    assert enc.dim == 32 and enc.name == tmp_path.name
    _check_encoding(enc.encode(PROMPTS), 3, 8, 32)


def test_unknown_encoder_names_valid_ones(tmp_path):
    with pytest.raises(UnknownNameError, match="minilm"):
        build_text_encoder("clip-giant")
    with pytest.raises(FileNotFoundError, match="config.json"):
        build_text_encoder(str(tmp_path))
    assert {"minilm", "learned"} <= set(TEXT_ENCODERS.names())


def test_learned_encoder_tokenizes_the_world_and_trains():
    enc = LearnedTextEncoder(max_length=6, dim=32, depth=1, heads=2)
    assert enc.trainable and enc.name == "learned"
    ids, mask = enc.tokenizer(["left: red circle; right: zebra", ""])
    vocab = world_vocabulary()
    words = [vocab[i] for i in ids[0].tolist()]
    assert words == ["<bos>", "left", ":", "red", "circle", ";"]  # truncated to 6
    assert mask[1].tolist() == [True] + [False] * 5
    assert enc.tokenizer(["zebra"])[0][0, 1] == vocab.index("<unk>")
    _check_encoding(enc.encode(PROMPTS), 3, 6, 32)
    # Jointly trainable: a loss on the pooled vector reaches the embeddings.
    opt = torch.optim.SGD(enc.parameters(), lr=0.1)
    before = enc.embed.weight.detach().clone()
    enc.encode(["a red circle"]).pooled.pow(2).sum().backward()
    opt.step()
    assert not torch.equal(before, enc.embed.weight)
    with pytest.raises(ValueError, match="divisible"):
        LearnedTextEncoder(dim=30, heads=4)


def test_learned_encoder_is_seeded():
    a, b = LearnedTextEncoder(dim=16, heads=2, seed=1), LearnedTextEncoder(dim=16, heads=2, seed=1)
    c = LearnedTextEncoder(dim=16, heads=2, seed=2)
    assert torch.equal(a.encode(PROMPTS).tokens, b.encode(PROMPTS).tokens)
    assert not torch.equal(a.encode(PROMPTS).tokens, c.encode(PROMPTS).tokens)


def test_text_config_round_trips_and_builds():
    cfg = TextConfig(name="learned", max_length=8, options={"dim": 16, "heads": 2, "depth": 1})
    assert from_dict(TextConfig, to_dict(cfg)) == cfg
    enc = cfg.build()
    assert enc.dim == 16 and enc.max_length == 8


def test_cache_hits_and_matches_encoder(minilm, tmp_path):
    cache = EmbeddingCache(minilm)
    first = cache.encode(PROMPTS + [PROMPTS[0]])
    assert (cache.misses, cache.hits, len(cache)) == (4, 0, 3)
    second = cache.encode([PROMPTS[2], PROMPTS[0]])
    assert (cache.misses, cache.hits) == (4, 2)
    assert torch.equal(second.tokens[0], first.tokens[2])
    assert torch.equal(second.mask[1], first.mask[0])
    direct = minilm.encode(PROMPTS)
    assert torch.allclose(first.tokens[:3], direct.tokens, atol=1e-5)
    path = cache.save(tmp_path / "cache.safetensors")
    other = EmbeddingCache(minilm)
    other.load(path)
    assert len(other) == 3 and torch.equal(other.encode(PROMPTS).pooled, first.pooled[:3])
    assert other.misses == 0
    with pytest.raises(ValueError, match="trainable"):
        EmbeddingCache(LearnedTextEncoder(dim=16, heads=2))


def test_cache_lru_bound(minilm):
    cache = EmbeddingCache(minilm, max_entries=2)
    out = cache.encode(PROMPTS)
    assert len(cache) == 2 and PROMPTS[0] not in cache and out.tokens.shape[0] == 3
