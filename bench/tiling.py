"""Tiling on the embedded model: how well a picture continues across its edges, with and without.

    python bench/tiling.py [--seeds 8] [--steps 12]

For each mode (off, x, y, both) and seed: the mean colour difference across the seam (the last
column against the first, the last row against the first) divided by the mean difference of
neighbouring columns (rows) inside the picture. About 1 or below: the seam is as smooth as the
picture itself; well above 1: a visible edge.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

PROMPTS = ("a red circle on the left on a blue background",
           "a large yellow star in the top left corner on a purple background")


def seam_ratios(image) -> tuple[float, float]:
    """(left-right, top-bottom): the seam's difference over the inside's."""
    a = np.asarray(image.convert("RGB"), dtype=np.float32)
    across = np.abs(a[:, 0] - a[:, -1]).mean() / np.abs(np.diff(a, axis=1)).mean()
    down = np.abs(a[0] - a[-1]).mean() / np.abs(np.diff(a, axis=0)).mean()
    return float(across), float(down)


def measure(studio, seeds: int, steps: int, modes=("off", "x", "y", "both")) -> dict[str, tuple[float, float]]:
    out = {}
    for mode in modes:
        ratios = [seam_ratios(studio.local.run(studio.make_request(
            "txt2img", prompt=prompt, steps=steps, seed=seed, tiling=mode), save=False).images[0].image)
            for prompt in PROMPTS for seed in range(seeds)]
        out[mode] = tuple(float(np.mean(r)) for r in zip(*ratios))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--steps", type=int, default=12)
    args = p.parse_args()
    from studio.config import Settings
    from studio.serving.studio import Studio
    studio = Studio.from_settings(Settings(outputs=Path(tempfile.mkdtemp(prefix="bench-tiling-"))))
    print(f"{len(PROMPTS) * args.seeds} pictures a mode, {args.steps} steps, embedded model, 64 px")
    print("| tiling | left-right seam / inside | top-bottom seam / inside |")
    print("|---|---|---|")
    for mode, (across, down) in measure(studio, args.seeds, args.steps).items():
        print(f"| {mode} | {across:.2f} | {down:.2f} |")


if __name__ == "__main__":
    main()
