"""Load: N concurrent clients x M jobs each, all different (prompts, seeds, samplers, presets),
against a running studio. Checks that every job completes and that every saved image's
metadata is its own request's (no cross-talk between users), then prints throughput and
latency percentiles. Asserts nothing about speed.

    python bench/load.py                       # starts `python app.py` on the embedded model
    python bench/load.py --url http://127.0.0.1:7860/ --clients 8 --jobs 5 --steps 20
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SAMPLERS = ["Euler a", "Euler", "DPM++ 2M Karras", "DDIM", "UniPC", "Heun", "DPM++ SDE Karras", "LMS"]
COLOURS = ["red", "blue", "green", "yellow", "purple", "orange", "pink", "white"]
SHAPES = ["circle", "square", "triangle", "star", "ring"]
PRESETS = [[], ["bad hands"], ["low quality"], ["bad hands", "blurry"]]


def job_requests(client_index: int, jobs: int, steps: int) -> list[dict]:
    rng = random.Random(client_index)
    return [dict(prompt=f"a {rng.choice(COLOURS)} {rng.choice(SHAPES)} (client {client_index} job {j})",
                 seed=client_index * 1000 + j, scheduler=rng.choice(SAMPLERS), steps=steps,
                 negative_presets=rng.choice(PRESETS), cfg_scale=rng.choice([4.0, 5.0, 7.5]))
            for j in range(jobs)]


def mismatches(request: dict, meta: dict) -> list[str]:
    """Where the image's metadata is not its request's."""
    got = meta["request"]
    wrong = [k for k in ("prompt", "seed", "scheduler", "steps", "cfg_scale") if got.get(k) != request[k]]
    if sorted(got.get("negative_presets", [])) != sorted(request["negative_presets"]):
        wrong.append("negative_presets")
    if meta.get("seed") != request["seed"] or meta["scheduler"]["name"] != request["scheduler"]:
        wrong.append("resolved seed/scheduler")
    return wrong


def run_load(url: str, clients: int, jobs: int, steps: int, auth=None) -> dict:
    from gradio_client import Client

    from studio.outputs.metadata import read_metadata

    latencies: list[float] = []
    errors: list[str] = []
    crossed: list[str] = []
    lock = threading.Lock()

    def worker(i: int) -> None:
        client = Client(url, verbose=False, auth=auth)
        for req in job_requests(i, jobs, steps):
            t = time.perf_counter()
            try:
                gallery, _, params, _ = client.predict(api_name="/txt2img", **req)
            except Exception as exc:  # noqa: BLE001 - counted and shown
                with lock:
                    errors.append(f"client {i}: {exc}")
                continue
            elapsed = time.perf_counter() - t
            saved = read_metadata(gallery[0]["image"])[1]     # the PNG as saved (served as is)
            wrong = mismatches(req, params[0]) + mismatches(req, saved)
            with lock:
                latencies.append(elapsed)
                if wrong:
                    crossed.append(f"client {i} seed {req['seed']}: {wrong}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    lat = sorted(latencies)
    pct = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] if lat else float("nan")  # noqa: E731
    return {"jobs": clients * jobs, "completed": len(lat), "errors": errors, "cross_talk": crossed,
            "wall_s": wall, "throughput_jobs_per_s": len(lat) / wall if wall else 0.0,
            "p50_s": pct(0.50), "p95_s": pct(0.95), "mean_s": statistics.fmean(lat) if lat else float("nan")}


def _start(model: str | None, port: int) -> tuple[subprocess.Popen, str]:
    out = tempfile.mkdtemp(prefix="studio-load-")
    cmd = [sys.executable, str(ROOT / "app.py"), "--port", str(port), "--outputs", out,
           "--queue-size", "64"] + (["--model", model] if model else [])
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    for _ in range(300):
        try:
            urllib.request.urlopen(url, timeout=1)
            return proc, url
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("the studio did not start")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", help="a running studio (default: start one)")
    p.add_argument("--model", help="for the studio this starts (default: the embedded model)")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--jobs", type=int, default=5)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--port", type=int, default=7898)
    args = p.parse_args()
    proc = None
    url = args.url
    if not url:
        proc, url = _start(args.model, args.port)
    try:
        r = run_load(url, args.clients, args.jobs, args.steps)
    finally:
        if proc:
            proc.terminate()
    print(f"{args.clients} clients x {args.jobs} jobs, {args.steps} steps, one GPU queue: "
          f"{r['completed']}/{r['jobs']} completed in {r['wall_s']:.1f} s")
    print(f"throughput {r['throughput_jobs_per_s']:.2f} jobs/s; latency p50 {r['p50_s']:.2f} s, "
          f"p95 {r['p95_s']:.2f} s, mean {r['mean_s']:.2f} s (queueing included)")
    print(f"errors: {len(r['errors'])}; images whose metadata is not their own request's: "
          f"{len(r['cross_talk'])}")
    for line in r["errors"][:5] + r["cross_talk"][:5]:
        print("  ", line)


if __name__ == "__main__":
    main()
