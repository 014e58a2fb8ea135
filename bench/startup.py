"""Figures for the foundation: `python app.py` to a ready page, and the time of one image.

    python bench/startup.py [--model PATH] [--steps 20] [--runs 5]

Without --model it writes a tiny random-weight SD-layout model (64 px) to a temporary folder.
Prints the figures; asserts nothing (speed targets live here, not in tests).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--port", type=int, default=7899)
    args = p.parse_args()
    os.environ.update(GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1")
    tmp = Path(tempfile.mkdtemp(prefix="studio-bench-"))
    model = args.model
    if not model:
        from studio.models.tiny import write_tiny_model
        model = str(write_tiny_model(tmp / "tiny"))

    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--model", model, "--port",
                             str(args.port), "--outputs", str(tmp / "outputs")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ)
    url = f"http://127.0.0.1:{args.port}/"
    try:
        while True:
            try:
                with urllib.request.urlopen(url, timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                if proc.poll() is not None:
                    sys.exit("the server exited")
                time.sleep(0.05)
        ready = time.perf_counter() - t0
        from gradio_client import Client
        client = Client(url, verbose=False)
        t = time.perf_counter()
        client.predict(prompt="a red circle on a blue background", steps=args.steps, seed=1,
                       api_name="/txt2img")
        first = time.perf_counter() - t
        times = []
        for i in range(args.runs):
            t = time.perf_counter()
            client.predict(prompt="a red circle on a blue background", steps=args.steps, seed=i,
                           api_name="/txt2img")
            times.append(time.perf_counter() - t)
    finally:
        proc.terminate()
        proc.wait(10)
    print(f"model: {model}")
    print(f"python app.py -> page ready:           {ready:6.2f} s")
    print(f"first image (model load included):     {first:6.2f} s")
    print(f"one image, {args.steps} steps, API round trip: median {statistics.median(times):.3f} s "
          f"(min {min(times):.3f}, max {max(times):.3f}, n={len(times)})")


if __name__ == "__main__":
    main()
