"""Plans carry a configuration across tools: written, read back, loaded by `difflab sample
--plan` and the server, and re-timed (a warning) on another machine."""

import json

import numpy as np
import pytest

from difflab.autotune import Candidate
from difflab.cli import run
from difflab.config import ConfigError
from difflab.runtime.machine import run_record
from difflab.runtime.plan import Plan, load_plan, read_plans, write_plans

WINNER = Candidate(sampler="euler", steps=2, cfg=3.0, shift=2.0, interval=(0.3, 1.0),
                   accel="deepcache:interval=2")


def plan_of(c: Candidate, machine: dict, **kw) -> Plan:
    return Plan(name="autotuned", accel=c.accel, sample=c.sample(), quant=c.quant,
                machine=machine, checkpoint_sha256="ab" * 32, metrics={"speedup": 9.5}, **kw)


def test_plan_round_trip(tmp_path):
    plan = plan_of(WINNER.with_(quant="w8a8"), run_record())
    path = write_plans(tmp_path / "plan.json", [plan])
    back = read_plans(path)
    assert list(back) == ["none", "autotuned"]
    assert back["autotuned"] == plan
    assert load_plan(str(path)) == plan == load_plan(f"{path}:autotuned")
    config = plan.sample_config()
    assert (config.sampler, config.steps, config.cfg, config.schedule) == ("euler", 2, 3.0, "flow")
    assert config.schedule_options == {"shift": 2.0}
    assert config.guidance_interval == (0.3, 1.0)
    # a plain hook plan is written as before: only the keys it has
    write_plans(tmp_path / "old.json", [Plan("dc", accel="deepcache:interval=2")])
    assert json.loads((tmp_path / "old.json").read_text()) == {
        "dc": {"accel": "deepcache:interval=2"}}


def test_loading_a_plan_measured_elsewhere_warns():
    here = run_record()
    assert plan_of(WINNER, here).machine_mismatch(here) == ""
    assert Plan("x").machine_mismatch(here) == ""  # no record: nothing to compare
    there = {**here, "cpu": "Some Other CPU", "capability": "NO AVX"}
    text = plan_of(WINNER, there).machine_mismatch(here)
    assert "measured on another machine" in text and "Some Other CPU" in text
    assert "re-time" in text and "\n" not in text


@pytest.mark.parametrize("spec, message", [
    ({"sample": {"stepz": 3}}, "sample has unknown key 'stepz'"),
    ({"sample": {"sampler": "nope"}}, "unknown sampler 'nope'"),
    ({"quant": "w9a9"}, "unknown quantizer 'w9a9'"),
    ({"machine": "x"}, "expected a table"),
])
def test_bad_plans_fail_when_read(tmp_path, spec, message):
    path = tmp_path / "plans.json"
    path.write_text(json.dumps({"p": spec}))
    with pytest.raises(ConfigError, match=message):
        read_plans(path)


def test_choosing_a_plan_from_a_file_of_several(tmp_path):
    path = write_plans(tmp_path / "p.json", [Plan("a", accel="deepcache:interval=2"),
                                             Plan("b", sample={"steps": 3})])
    with pytest.raises(ConfigError, match="holds 2 plans; choose one"):
        load_plan(str(path))
    with pytest.raises(ConfigError, match="has no plan 'c'; valid: a, b"):
        load_plan(f"{path}:c")
    assert load_plan(f"{path}:b").sample == {"steps": 3}


def test_sample_cli_applies_the_plan_and_warns_about_the_machine(tmp_path, capsys):
    other = {**run_record(), "cpu": "Some Other CPU"}
    path = write_plans(tmp_path / "plan.json", [plan_of(WINNER, other)])
    out = tmp_path / "grid.png"
    rc = run(["sample", "shapes-base", "--plan", str(path), "--prompt", "a red circle",
              "--n", "1", "--out", str(out)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "warning: plan 'autotuned' was measured on another machine" in captured.err
    assert "euler x2, cfg 3.0" in captured.out and out.is_file()
    assert run(["sample", "shapes-base", "--plan", str(path), "--accel", "deepcache",
                "--prompt", "a", "--out", str(out)]) == 2
    assert "--plan sets the acceleration" in capsys.readouterr().err


def test_plan_generate_matches_the_settings_by_hand(tiny_pipeline):
    from difflab.accel import apply_accel

    plan = plan_of(WINNER, {})
    images = plan.generate(tiny_pipeline, ["a", "b"], [0, 1])
    with apply_accel(tiny_pipeline.net, "deepcache", {"interval": 2}):
        by_hand = tiny_pipeline.generate(["a", "b"], [0, 1], plan.sample_config())
    np.testing.assert_array_equal(images, by_hand)


def test_the_server_samples_with_the_plan_settings():
    from difflab.serve import ServeConfig, Service, load_catalog
    from difflab.serve.schemas import ImageRequest

    plan = plan_of(WINNER, run_record())
    catalog = load_catalog("shapes-base", plans={"none": Plan(), "autotuned": plan},
                           precision="fp32")
    service = Service(catalog, ServeConfig())
    job = service.job(ImageRequest(prompt="a red circle", plan="autotuned", steps=20))
    assert (job.config.steps, job.config.schedule) == (2, "flow")  # the plan's, not the request's
    assert job.context["settings"]["steps"] == 2
    plain = service.job(ImageRequest(prompt="a red circle", steps=20))
    assert plain.config.steps == 20


def test_the_cache_axis_fits_the_network():
    from difflab.accel.api import parse_accel_spec
    from difflab.autotune.space import TRANSFORMER_CACHES, UNET_CACHES, caches_for
    from difflab.models import build_model

    assert caches_for(build_model("unet-tiny")) == UNET_CACHES
    assert caches_for(build_model("dit-tiny")) == TRANSFORMER_CACHES
    assert caches_for(object()) == ("",)
    for spec in TRANSFORMER_CACHES[1:]:
        parse_accel_spec(spec)
