"""The real pieces end to end: configs/tiny.toml through `train`, patch masking, load_checkpoint."""

import json
from pathlib import Path

import pytest
import torch

from difflab.train import load_checkpoint
from difflab.train.commands import train
from difflab.train.config import load_train_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_shipped_configs_load():
    for path in sorted(CONFIGS.glob("*.toml")):
        load_train_config(path)


def test_tiny_config_trains_resumes_and_loads(tmp_path):
    quick = ["schedule.steps=2", "schedule.batch_size=4", "run.ckpt_every=2",
             "data.options.length=16"]
    run = train(str(CONFIGS / "tiny.toml"), quick, resume=False, out=str(tmp_path / "t"))
    run = train(str(CONFIGS / "tiny.toml"), [*quick[1:], "schedule.steps=3"], resume=True,
                out=str(tmp_path / "t"))
    loaded = load_checkpoint(run)
    assert loaded.step == 3 and loaded.config.model.preset == "pixart-tiny"
    x = torch.zeros(1, 3, 16, 16)
    ctx = torch.zeros(1, 16, 384)
    out = loaded.model(x, torch.tensor([500.0]), context=ctx, pooled=None)
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_class_conditional_patch_masked_dit(tmp_path):
    # The DiT's deferred patch masking (loss on kept patches) with class labels and null class,
    # and the periodic sample grid.
    over = ["model.preset=dit-tiny", "model.overrides={}", "model.overrides.input_size=16",
            "model.overrides.hidden_size=32", "model.overrides.depth=1",
            "model.overrides.num_heads=2", "model.overrides.num_classes=48",
            "model.overrides.patch_mixer_depth=1", "text.encoder=none", "text.max_length=16",
            "data.options.conditioning=class", "data.options.length=16",
            "run.mask_ratio=0.5", "schedule.steps=2", "schedule.batch_size=4",
            "run.ckpt_every=2", "run.log_every=1", "run.sample_every=2", "run.sample_steps=2",
            'run.sample_prompts=["a red circle", "a blue square"]']
    run = train(str(CONFIGS / "tiny.toml"), over, resume=False, out=str(tmp_path / "m"))
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 2 and all(not m["skipped"] for m in lines)
    assert (run / "samples" / "step_000002.png").is_file()  # the periodic EMA sample grid


def test_demo_reuses_only_a_run_of_the_same_settings(tmp_path):
    from difflab.config import ConfigError
    from difflab.demo import train_or_resume

    quick = ["schedule.steps=2", "schedule.batch_size=4", "run.ckpt_every=2",
             "data.options.length=16", "run.progress=false"]
    out = tmp_path / "demo"
    assert train_or_resume(CONFIGS / "tiny.toml", out, quick) > 0
    assert train_or_resume(CONFIGS / "tiny.toml", out, [*quick, "run.log_every=5"]) == 0.0
    with pytest.raises(ConfigError, match=r"schedule.batch_size: checkpoint 4 vs config 8"):
        train_or_resume(CONFIGS / "tiny.toml", out, [*quick, "schedule.batch_size=8"])


LEARNED = ["text.encoder=learned", "text.options.dim=32", "text.options.heads=2",
           "text.options.depth=1", "model.overrides.context_dim=32", "schedule.steps=3",
           "schedule.batch_size=4", "run.ckpt_every=3", "data.options.length=16",
           "run.precision=fp32"]


def test_learned_text_encoder_trains_with_the_model_and_loads(tmp_path):
    from difflab.runtime import load
    from difflab.text.learned import LearnedTextEncoder

    init = LearnedTextEncoder(max_length=16, dim=32, heads=2, depth=1)  # the run's seeded init
    run = train(str(CONFIGS / "tiny.toml"), LEARNED, resume=False, out=str(tmp_path / "l"))
    pipe = load(run)
    enc = pipe.net.text_encoder  # saved and loaded with the network (EMA weights)
    assert pipe.conditioner.encoder is enc
    moved = {k: float((v - init.state_dict()[k]).abs().max()) for k, v in enc.state_dict().items()}
    assert moved["embed.weight"] > 0 and moved["blocks.layers.0.linear1.weight"] > 0
    # the prompt reaches the image through the learned states
    a = pipe.generate(["a red circle"], [0])
    assert (a == pipe.generate(["a red circle"], [0])).all()
    assert not (a == pipe.generate(["three blue squares"], [0])).all()


def test_learned_encoder_gets_gradients_inside_the_training_forward():
    from difflab.train.parts import build_parts
    from difflab.train.trainer import _TrainForward

    parts = build_parts(load_train_config(CONFIGS / "tiny.toml", LEARNED))
    enc = parts.net.text_encoder
    assert parts.text_encoder is enc
    with torch.no_grad():  # DiT's zero-initialised (adaLN-zero) layers would stop every gradient
        for p in parts.net.parameters():
            if not p.any():
                p.normal_(0.0, 0.02, generator=torch.Generator().manual_seed(0))
    ids, mask = enc.tokenizer(["a red circle", ""])
    out = _TrainForward(parts.net)(torch.randn(2, 3, 16, 16), torch.tensor([0.3, 0.7]),
                                   {"token_ids": ids, "token_mask": mask})
    out.square().mean().backward()
    assert enc.embed.weight.grad is not None and enc.embed.weight.grad.abs().sum() > 0


def test_text_width_that_does_not_fit_the_model_is_one_clear_error(tmp_path):
    from difflab.config import ConfigError

    wrong = [o for o in LEARNED if not o.startswith("model.overrides.context_dim")]
    with pytest.raises(ConfigError, match="context_dim is 384; set text.options.dim = 384"):
        train(str(CONFIGS / "tiny.toml"), wrong, resume=False, out=str(tmp_path / "w"))
