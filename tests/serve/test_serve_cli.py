"""`difflab serve`: options and plan files checked before any model loads, and a real server
process that answers and stops cleanly on SIGINT."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from difflab.cli import run
from difflab.config import ConfigError
from difflab.serve import load_catalog, read_plans

SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.mark.parametrize(("args", "message"), [
    (["--max-batch", "0"], "max_batch = 0 is out of range"),
    (["--max-images", "20"], "max_images = 20 is out of range; valid: 1..16"),
    (["--api-key", "short"], "api key must be at least 16"),
    (["--cors-origin", "ftp://x"], "CORS origin 'ftp://x' must be scheme://host"),
    (["--precision", "fp8"], "--precision 'fp8'; valid:"),
    (["--plan", "no-such-plans.json"], "plan file not found: no-such-plans.json"),
    (["--adapter", "dir:heavy"], "the weight after ':' must be a number"),
    (["--timeout", "0"], "timeout_s = 0.0 is out of range"),
])
def test_bad_options_are_one_error_line(args, message, capsys):
    assert run(["serve", "shapes-base", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_plan_files_are_checked(tmp_path):
    path = tmp_path / "plans.json"
    path.write_text(json.dumps({"deepcache-n2": {"accel": "deepcache:interval=2"},
                                "bottleneck": {"bottleneck": {"scales": [1.0, 0.5, 1.0]}}}))
    plans = read_plans(path)
    assert list(plans) == ["none", "deepcache-n2", "bottleneck"]
    assert plans["deepcache-n2"].describe() == "deepcache:interval=2"
    for bad, message in [({"x": {"accel": "fastcache"}}, "unknown accelerator 'fastcache'"),
                         ({"x": {"acel": "deepcache"}}, "plan 'x' has unknown key 'acel'"),
                         ({"none": {}}, "'none' is the built-in plan"),
                         ({"../x": {}}, "plan name '../x' must be"),
                         ({"x": {"bottleneck": {"scale": [1]}}},
                          "unknown key bottleneck.'scale' for BottleneckConfig"),
                         ([], "must hold an object of plans")]:
        path.write_text(json.dumps(bad))
        with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
            read_plans(path)
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="not JSON"):
        read_plans(path)


def test_a_plan_the_model_cannot_run_fails_at_start(tmp_path, catalog, monkeypatch):
    monkeypatch.setattr("difflab.serve.service.load", lambda model: catalog.base)  # loaded
    path = tmp_path / "plans.json"
    path.write_text(json.dumps({"fora": {"accel": "block_cache:interval=2"}}))
    with pytest.raises(ConfigError, match="UNet is not a transformer"):
        load_catalog("shapes-base", plans=read_plans(path))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_server_process_answers_and_stops_on_sigint():
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(SRC), "DIFFLAB_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "difflab.cli", "serve", "shapes-base",
                             "--port", str(port), "--max-steps", "8"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.communicate()[0]
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.2)
        r = httpx.post(url + "/v1/images", json={"prompt": "a red circle", "steps": 2},
                       timeout=60)
        assert r.status_code == 200 and len(r.json()["images"]) == 1
        assert httpx.post(url + "/v1/images", json={"prompt": "a", "steps": 9},
                          timeout=60).status_code == 422
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert f"on http://127.0.0.1:{port}/" in out and out.rstrip().endswith("stopped")
