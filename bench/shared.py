"""A shared link under load: N logins at once, each mixing the tabs' API (gradio_client), A1111's
REST API (txt2img and a two-picture img2img) and Live, against `python app.py --auth ...`. Prints
the jobs done, errors, the server's memory (resident set before, peak) and whether any login saw
or got another's pictures (every picture in its owner's space; each login's history only its own).

    python bench/shared.py [--logins 8] [--rounds 3] [--steps 8]
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _rss_kb(pid: int, key: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def _png(colour: tuple[int, int, int]) -> str:
    from PIL import Image
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), colour).save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _rest(url: str, login: tuple[str, str], path: str, body: dict) -> dict:
    auth = base64.b64encode(":".join(login).encode()).decode()
    request = urllib.request.Request(url + "sdapi/v1/" + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json", "Authorization": f"Basic {auth}"})
    with urllib.request.urlopen(request, timeout=600) as answer:
        return json.loads(answer.read())


def one_login(url: str, login: tuple[str, str], rounds: int, steps: int, done: list, errors: list) -> None:
    from gradio_client import Client
    client = Client(url, auth=login, verbose=False)
    small = {"steps": steps, "width": 64, "height": 64}
    for r in range(rounds):
        calls = [
            lambda: client.predict(prompt=f"{login[0]} tab picture {r}", seed=r, api_name="/txt2img", **small),
            lambda: _rest(url, login, "txt2img", {"prompt": f"{login[0]} rest picture {r}", "seed": r, **small}),
            lambda: _rest(url, login, "img2img", {"prompt": f"{login[0]} rest img2img {r}", "seed": r,
                                                   "init_images": [_png((200, 40, 40)), _png((40, 40, 200))],
                                                   "denoising_strength": 0.6, **small}),
            lambda: client.predict(prompt=f"{login[0]} live {r}", seed=r, api_name="/live", **small),
        ]
        for call in calls:
            try:
                call()
                done.append(login[0])
            except Exception as exc:  # noqa: BLE001 - counted and shown
                errors.append(f"{login[0]}: {type(exc).__name__}: {str(exc)[:120]}")


def isolation(url: str, outputs: Path, logins: list[tuple[str, str]]) -> list[str]:
    """Pictures outside their owner's space, and history answers that list another's."""
    from gradio_client import Client

    from studio.outputs.metadata import read_metadata
    wrong = []
    for picture in outputs.rglob("*.png"):
        rel = picture.relative_to(outputs)
        owner = rel.parts[0]
        prompt = (read_metadata(picture)[1] or {}).get("request", {}).get("prompt", "")
        if not prompt.startswith(owner + " "):
            wrong.append(f"{rel} holds {prompt!r}")
    for login in logins:
        found = Client(url, auth=login, verbose=False).predict(page_size=1000, api_name="/history_search")
        wrong += [f"{login[0]} sees {p['file']}" for p in found["pictures"] if f"/{login[0]}/" not in p["file"]]
    return wrong


def run(logins: int, rounds: int, steps: int, port: int) -> dict:
    users = [(f"user{i}", f"pw{i}") for i in range(logins)]
    outputs = Path(tempfile.mkdtemp(prefix="studio-shared-"))
    cmd = [sys.executable, str(ROOT / "app.py"), "--port", str(port), "--outputs", str(outputs),
           "--queue-size", "64", *[a for u in users for a in ("--auth", ":".join(u))]]
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(url, timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        _rest(url, users[0], "txt2img", {"prompt": "user0 warm up", "steps": 2, "width": 64, "height": 64})
        before = _rss_kb(proc.pid)
        done: list = []
        errors: list = []
        began = time.perf_counter()
        threads = [threading.Thread(target=one_login, args=(url, u, rounds, steps, done, errors)) for u in users]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - began
        peak = _rss_kb(proc.pid, "VmHWM")
        return {"logins": logins, "calls": logins * rounds * 4, "done": len(done), "errors": errors,
                "wall_s": wall, "rss_before_mb": before / 1024, "rss_peak_mb": peak / 1024,
                "isolation": isolation(url, outputs, users)}
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--logins", type=int, default=8)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--port", type=int, default=7899)
    args = p.parse_args()
    r = run(args.logins, args.rounds, args.steps, args.port)
    print(f"{r['logins']} logins x {args.rounds} rounds of (tab txt2img, REST txt2img, REST img2img of 2 pictures, "
          f"Live), {args.steps} steps, embedded model: {r['done']}/{r['calls']} calls done in {r['wall_s']:.1f} s")
    print(f"server memory: {r['rss_before_mb']:.0f} MB resident before, {r['rss_peak_mb']:.0f} MB peak")
    print(f"errors: {len(r['errors'])}; pictures or history answers crossing logins: {len(r['isolation'])}")
    for line in (r["errors"] + r["isolation"])[:8]:
        print("  ", line)


if __name__ == "__main__":
    main()
