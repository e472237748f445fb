import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from difflab.config import ConfigError
from difflab.eval.commands import bench, checkpoint_identity


def test_checkpoint_identity_follows_content(tmp_path):
    a = tmp_path / "a.safetensors"
    a.write_bytes(b"weights-1")
    first = checkpoint_identity(a)
    a.write_bytes(b"weights-2")
    assert checkpoint_identity(a) != first
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"w")
    (folder / "config.json").write_text("{}")
    assert checkpoint_identity(folder) == checkpoint_identity(folder)
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        checkpoint_identity(tmp_path / "missing")


def test_bench_command_checks_grid_before_loading_the_model(tmp_path):
    grid = tmp_path / "grid.toml"
    grid.write_text('baseline = "b"\n[[points]]\nname = "a"\n')
    with pytest.raises(ConfigError, match="unknown point 'b'; valid: a"):
        bench(str(tmp_path / "missing.ckpt"), str(grid), str(tmp_path / "out"))


def test_bench_registers_as_a_typer_command(tmp_path):
    app = typer.Typer()
    app.command("bench")(bench)
    app.command("noop")(lambda: None)  # two commands, so "bench" is a sub-command
    result = CliRunner().invoke(app, ["bench", "--help"])
    assert result.exit_code == 0
    assert "--grid" in result.output and "CHECKPOINT" in result.output
    missing = CliRunner().invoke(app, ["bench", "ckpt", "--grid", str(tmp_path / "g.toml"),
                                       "--out", str(tmp_path)])
    assert isinstance(missing.exception, FileNotFoundError)


def test_points_translate_to_the_pipelines_sample_config():
    from difflab.eval.commands import PipelineTarget, sample_config_of

    point = {"name": "p", "sampler": "heun", "steps": 7, "cfg_scale": 2.5,
             "sample": {"precision": "fp32", "negative_prompt": "blurry"}}
    config = sample_config_of(point, batch_size=4)
    assert (config.sampler, config.steps, config.cfg, config.precision) == ("heun", 7, 2.5, "fp32")
    assert config.negative_prompt == "blurry" and config.batch_size == 4
    with pytest.raises(ConfigError, match=r"does not apply \[lora\] yet"):
        sample_config_of({**point, "lora": {"rank": 4}}, batch_size=4)
    with pytest.raises(ConfigError, match="unknown key"):
        sample_config_of({**point, "sample": {"precison": "fp32"}}, batch_size=4)

    class RecordingPipe:  # stands in for difflab.runtime.Pipeline: records what it is given
        net = torch.nn.Identity()

        def generate(self, prompts, seeds, config):
            self.args = (prompts, seeds, config)
            return np.zeros((len(prompts), 4, 4, 3), np.uint8)

    pipe = RecordingPipe()
    target = PipelineTarget(pipe, "id")
    assert target.generate(point, ["a", "b"], [0, 1]).shape == (2, 4, 4, 3)
    assert pipe.args[:2] == (["a", "b"], [0, 1]) and pipe.args[2].batch_size == 2
    assert target.network(point) is pipe.net


def test_quant_table_recipe_fields_can_be_overridden(tiny_pipeline):
    from difflab.eval.commands import PipelineTarget
    from difflab.quant.modules import ActQuantizer

    target = PipelineTarget(tiny_pipeline, "id")
    base = {"sampler": "euler", "steps": 4, "cfg_scale": 1.0}
    last = {"recipe": "w4a8_static", "calib_steps": 4, "timestep_aware": False}
    points = {"float": {"name": "float", **base},
              "all": {"name": "all", **base, "quant": {**last, "timestep_aware": True}},
              "last": {"name": "last", **base, "quant": last}}
    images = {k: target.generate(p, ["a red circle"] * 2, [0, 1]) for k, p in points.items()}
    q_all, q_last = target.network(points["all"]), target.network(points["last"])
    assert target.network(points["float"]) is tiny_pipeline.net  # the float net is untouched
    scales = [[m.scale for m in q.modules() if isinstance(m, ActQuantizer)]
              for q in (q_all, q_last)]
    assert scales[0] and any(not torch.equal(a, b) for a, b in zip(*scales, strict=True))
    assert not np.array_equal(images["all"], images["float"])
    with pytest.raises(ConfigError, match="unknown QuantConfig fields"):
        target.generate({"name": "bad", **base, "quant": {"recipe": "w8a8", "bits": 3}}, ["a"], [0])


def test_compile_table_is_refused_beside_accel_hooks(tiny_pipeline):
    from difflab.eval.commands import PipelineTarget, sample_config_of

    point = {"name": "c", "sampler": "euler", "steps": 2, "compile": {},
             "accel": {"method": "deepcache", "interval": 2}}
    assert sample_config_of(point, 2).steps == 2  # compile is a known table
    with pytest.raises(ConfigError, match="cannot be combined with compile"):
        PipelineTarget(tiny_pipeline, "id").generate(point, ["a"], [0])
