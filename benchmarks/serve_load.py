"""`difflab serve` under load on loopback: batching vs one request at a time, then a flood.

Two real servers (`python -m difflab.cli serve`, one with micro-batching, one with
--max-batch 1) answer the same requests from 100 concurrent clients, in interleaved rounds
(which mode goes first alternates), so both see the same machine load. Every request must come
back 200 with its image: none lost, none failed; the two modes' images must be identical
(per-sample seeds). Then a third server with a small queue takes a flood of simultaneous
requests beyond its bound: it must answer only 200 or 429 (with Retry-After), stay up, keep its
memory bounded and answer normally afterwards; SIGINT must stop each server cleanly.

    python benchmarks/serve_load.py --out benchmarks/results/serve/load.json
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from difflab.data.suites import load_suite
from difflab.eval.provenance import provenance
from difflab.eval.stats import format_speedup, speedup_interval
from difflab.io import write_json
from difflab.runtime import read_manifest
from difflab.runtime.artefacts import resolve
from difflab.runtime.machine import configure_threads, run_record

MODES = {"batched": ["--max-batch", "16", "--max-wait-ms", "50"],
         "one_at_a_time": ["--max-batch", "1", "--max-wait-ms", "0"]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`difflab serve` in a subprocess on a free loopback port."""

    def __init__(self, model: str, options: list[str], log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        cmd = [sys.executable, "-m", "difflab.cli", "serve", model, "--port", str(self.port),
               "--precision", "fp32", *options]
        self.command = " ".join(cmd[1:])
        with open(log, "w") as f:
            self.proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT)
        STARTED.append(self)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {log.read_text()[-2000:]}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"server did not start: {log.read_text()[-2000:]}")

    def memory_kib(self) -> dict[str, int]:
        """Resident and peak resident memory of the server process (Linux /proc)."""
        fields = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0])
        return fields

    def stop(self) -> int:
        """SIGINT (graceful shutdown); the exit status."""
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return -9


async def one(client: httpx.AsyncClient, url: str, body: dict[str, Any]) -> dict[str, Any]:
    start = time.perf_counter()
    try:
        r = await client.post(url + "/v1/images", json=body)
    except httpx.HTTPError as e:
        return {"status": None, "error": f"{type(e).__name__}: {e}",
                "seconds": time.perf_counter() - start}
    out = {"status": r.status_code, "seconds": time.perf_counter() - start}
    if r.status_code == 200:
        out["pngs"] = [im["b64_png"] for im in r.json()["images"]]
        out["batch_images"] = r.json()["timing"]["batch_images"]
    else:
        out["error"] = r.text[:200]
        out["retry_after"] = r.headers.get("retry-after")
    return out


async def load_round(url: str, bodies: list[dict[str, Any]], clients: int) -> dict[str, Any]:
    """`clients` concurrent clients work through `bodies` (each takes the next one)."""
    results: list[dict[str, Any] | None] = [None] * len(bodies)
    queue = iter(range(len(bodies)))
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        async def worker() -> None:
            for i in queue:
                results[i] = await one(client, url, bodies[i])

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        wall = time.perf_counter() - start
    return {"wall": wall, "results": results}


async def flood(url: str, body: dict[str, Any], count: int) -> list[dict[str, Any]]:
    """`count` requests at once, each on its own connection."""
    limits = httpx.Limits(max_connections=count, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        return await asyncio.gather(*(one(client, url, body) for _ in range(count)))


def summary(latencies: list[float]) -> dict[str, float]:
    a = np.asarray(latencies)
    return {"p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99)),
            "max": float(a.max())}


STARTED: list[ServerProcess] = []


def main(argv: list[str]) -> int:
    try:
        return measure(argv)
    finally:  # never leave a server behind
        for server in STARTED:
            if server.proc.poll() is None:
                server.proc.kill()


def measure(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="shapes-base")
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--requests", type=int, default=100, help="requests per mode per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--guidance", type=float, default=3.0)
    ap.add_argument("--flood", type=int, default=500, help="simultaneous flood requests")
    ap.add_argument("--flood-queue", type=int, default=32, help="queue bound of the flooded "
                    "server")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    configure_threads()  # the servers choose threads the same way; the record says how many
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    prompts = [spec.text for spec in load_suite("single")]
    bodies = [{"prompt": prompts[i % len(prompts)], "seed": 1000 + i, "steps": args.steps,
               "guidance": args.guidance} for i in range(args.requests)]
    logs = Path(tempfile.mkdtemp(prefix="serve-load-"))  # server logs, if a server fails
    load_before = os.getloadavg()
    servers = {mode: ServerProcess(args.model, opts, logs / f"{mode}.log")
               for mode, opts in MODES.items()}
    rounds: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
    images: dict[str, list] = {}
    for r in range(args.rounds):
        order = list(MODES) if r % 2 == 0 else list(reversed(MODES))
        for mode in order:
            res = asyncio.run(load_round(servers[mode].url, bodies, args.clients))
            ok = [x for x in res["results"] if x["status"] == 200 and len(x["pngs"]) == 1]
            rounds[mode].append({
                "round": r, "wall_seconds": res["wall"],
                "images_per_second": len(ok) / res["wall"],
                "ok": len(ok), "failed": len(bodies) - len(ok),
                "errors": sorted({str(x.get("error"))[:120] for x in res["results"]
                                  if x["status"] != 200}),
                "latencies": [x["seconds"] for x in res["results"]],
                "mean_batch_images": float(np.mean([x.get("batch_images", 0)
                                                    for x in res["results"]])),
            })
            images.setdefault(mode, [x.get("pngs") for x in res["results"]])
            print(f"round {r} {mode:<14} {len(ok)}/{len(bodies)} ok, "
                  f"{len(ok) / res['wall']:.2f} images/s, wall {res['wall']:.1f} s, mean batch "
                  f"{rounds[mode][-1]['mean_batch_images']:.1f}", flush=True)
    identical = sum(a == b for a, b in zip(images["batched"], images["one_at_a_time"],
                                            strict=True))
    exits = {mode: s.stop() for mode, s in servers.items()}
    load_after = os.getloadavg()

    flooded = ServerProcess(args.model, ["--max-batch", "16", "--max-queue",
                                         str(args.flood_queue)], logs / "flood.log")
    before = flooded.memory_kib()
    answers = asyncio.run(flood(flooded.url, bodies[0], args.flood))
    after = flooded.memory_kib()
    statuses: dict[str, int] = {}
    for a in answers:
        statuses[str(a["status"])] = statuses.get(str(a["status"]), 0) + 1
    rejected = [a for a in answers if a["status"] == 429]
    alive = flooded.proc.poll() is None
    health = httpx.get(flooded.url + "/healthz", timeout=10).status_code if alive else None
    again = asyncio.run(flood(flooded.url, bodies[1], 1))[0]["status"] if alive else None
    flood_exit = flooded.stop()
    print(f"flood: {args.flood} at once against a queue of {args.flood_queue}: {statuses}; "
          f"RSS {before['VmRSS'] // 1024} -> {after['VmRSS'] // 1024} MiB (peak "
          f"{after['VmHWM'] // 1024} MiB); then healthz {health}, a request {again}", flush=True)

    walls = {m: [x["wall_seconds"] for x in rounds[m]] for m in MODES}
    speedup = speedup_interval(walls["batched"], walls["one_at_a_time"])
    result = {
        "provenance": provenance(
            split="-", checkpoint=args.model,
            checkpoint_sha256=read_manifest(resolve(args.model)).files["model.safetensors"],
            config={**vars(args), "modes": MODES, "precision": "fp32"},
            machine=run_record()),
        "server_commands": {m: s.command for m, s in servers.items()},
        # 1-minute load average of the machine (processes besides these servers included)
        "load_average": {"before": load_before[0], "after": load_after[0]},
        "request": {k: v for k, v in bodies[0].items() if k not in ("prompt", "seed")},
        "clients": args.clients,
        "requests_per_round": len(bodies),
        "rounds": rounds,
        "modes": {m: {"images_per_second_median": float(np.median(
                          [x["images_per_second"] for x in rounds[m]])),
                      "latency": summary([t for x in rounds[m] for t in x["latencies"]]),
                      "mean_batch_images": float(np.mean([x["mean_batch_images"]
                                                          for x in rounds[m]])),
                      "ok": sum(x["ok"] for x in rounds[m]),
                      "failed": sum(x["failed"] for x in rounds[m])} for m in MODES},
        "speedup": {"median": speedup.median, "lo": speedup.lo, "hi": speedup.hi,
                    "text": format_speedup(speedup)},
        "identical_images": {"same": identical, "of": len(bodies)},
        "shutdown_exit_codes": {**exits, "flood": flood_exit},
        "flood": {"requests": args.flood, "queue_bound": args.flood_queue,
                  "statuses": statuses,
                  "retry_after_on_every_429": all(a.get("retry_after") for a in rejected),
                  "memory_kib_before": before, "memory_kib_after": after,
                  "alive_after": alive, "healthz_after": health, "request_after": again},
    }
    write_json(out, result)
    print(f"batching {result['speedup']['text']} images/s over one at a time; "
          f"identical images {identical}/{len(bodies)}; wrote {out}")
    failed = sum(result["modes"][m]["failed"] for m in MODES)
    return 0 if failed == 0 and set(statuses) <= {"200", "429"} and alive else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONPATH", str(Path(__file__).resolve().parents[1] / "src"))
    sys.exit(main(sys.argv[1:]))
