"""The history index over many pictures: how long a search and a rebuild take, beside the way
the History tab worked before the index (list the files, read each one's metadata, filter).

    python bench/history.py [--pictures 10000] [--repeat 20]

Writes N small PNGs with studio metadata (prompts from the embedded model's world) into a
temporary outputs folder, then prints: the rebuild from nothing, a sync with nothing new, the
search times (median and p95 over --repeat runs) of a few queries, and the baseline scan for the
same query. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from PIL import Image  # noqa: E402
from PIL.PngImagePlugin import PngInfo  # noqa: E402

from studio.outputs.index import HistoryIndex, Query  # noqa: E402
from studio.outputs.metadata import JSON_KEY, PARAMETERS_KEY, read_metadata  # noqa: E402

COLOURS = ("red", "green", "blue", "yellow", "purple", "orange", "white", "black", "grey")
SHAPES = ("circle", "square", "triangle", "star", "hexagon")
MODELS = ("embedded-shapes", "sd15-dreamy", "sdxl-base")
SAMPLERS = ("DPM++ 2M Karras", "Euler a", "DDIM")


def write_pictures(root: Path, count: int, seed: int = 0) -> None:
    import json
    rng = random.Random(seed)
    pixels = Image.new("RGB", (8, 8))
    for i in range(count):
        day = root / f"2026-{1 + i * 12 // count:02d}-{1 + i % 28:02d}"
        day.mkdir(parents=True, exist_ok=True)
        prompt = f"a {rng.choice(COLOURS)} {rng.choice(SHAPES)} on a {rng.choice(COLOURS)} background"
        model, sampler, s = rng.choice(MODELS), rng.choice(SAMPLERS), rng.randrange(2**32)
        chunk = PngInfo()
        chunk.add_text(PARAMETERS_KEY, f"{prompt}\nNegative prompt: \nSteps: 20, Sampler: {sampler}, Seed: {s}, "
                                       f"Size: 512x512, Model: {model}")
        chunk.add_text(JSON_KEY, json.dumps({"format": 1, "mode": "txt2img", "prompt": prompt, "seed": s,
                                             "width": 512, "height": 512, "model": {"name": model},
                                             "request": {"scheduler": sampler}}))
        pixels.save(day / f"{i + 1:05d}-{s}.png", pnginfo=chunk)


def timed(fn, repeat: int) -> tuple[float, float, object]:
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(len(times) * 0.95))], out


def baseline(root: Path, words: list[str]) -> int:
    """What the History tab did before the index: every file listed and read, filtered in Python."""
    found = 0
    for path in root.glob("*/*.png"):
        prompt = (read_metadata(path)[1] or {}).get("prompt", "")
        found += all(w in prompt.lower() for w in words)
    return found


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--pictures", type=int, default=10_000)
    p.add_argument("--repeat", type=int, default=20)
    args = p.parse_args()
    root = Path(tempfile.mkdtemp(prefix="studio-history-"))
    t0 = time.perf_counter()
    write_pictures(root, args.pictures)
    print(f"{args.pictures} pictures written in {time.perf_counter() - t0:.1f} s ({root})")

    index = HistoryIndex(root)
    t0 = time.perf_counter()
    counts = index.sync()
    rebuild = time.perf_counter() - t0
    t0 = time.perf_counter()
    index.sync()
    resync = time.perf_counter() - t0
    print(f"rebuild from nothing: {rebuild:.2f} s ({counts['added']} read); sync with nothing new: {resync * 1000:.0f} ms")

    queries = {"one word (red)": Query(words="red"), "three words (red circle blue)": Query(words="red circle blue"),
               "a model and a sampler": Query(model="sdxl-base", sampler="Euler a"),
               "a seed": Query(seed=12345), "page 100 of everything": Query(page=100),
               "word + model, sorted by prompt": Query(words="star", model="sd15-dreamy", sort="prompt")}
    print(f"\n{'query':<34} {'matches':>8} {'median ms':>10} {'p95 ms':>8}")
    for name, query in queries.items():
        median, p95, (total, _) = timed(lambda q=query: index.search(q), args.repeat)
        print(f"{name:<34} {total:>8} {median * 1000:>10.2f} {p95 * 1000:>8.2f}")
    median, _, found = timed(lambda: baseline(root, ["red", "circle", "blue"]), 1)
    print(f"\nbaseline, no index (list + read every file + filter), three words: {found} matches in {median:.2f} s")


if __name__ == "__main__":
    main()
