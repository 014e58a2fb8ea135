"""Animation on the embedded model: frames a second per mode beside a single picture made the
usual way, and the weight-free quality figures the tests check (measured, printed side by side).

    python bench/animation.py [--threads 2] [--frames 24]

Speed: each mode renders --frames frames at 64 px through the studio's dispatcher, every frame
saved with its metadata; the baseline is one txt2img picture at the same steps through the same
dispatcher, saved (its seconds a picture, in the same run). Quality (studio/animation/measures.py):
prompt travel red -> blue (rank correlation of blueness with the frame order, and the largest
single step's share of the change) against a hard cut; consecutive-frame change with the noise
slerped between keyframe seeds against one seed a frame; colour drift of a 48-frame loopback with
each coherence mode; a red disc moved 1.5 px a frame in 2D mode (centroid error, colour kept).
Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from studio.animation.measures import (blueness, centroid, colour_drift, consecutive_change,  # noqa: E402
                                       red_mask, spearman)

RED_TO_BLUE = "0: a red circle on a gray background\n{last}: a blue circle on a gray background"
COMMON = dict(seed=11, steps="0:(20)", cfg="0:(5)", formats=[])


def render(studio, raw: dict, start=None, video=None) -> tuple[list[np.ndarray], float]:
    """(frames, seconds for all of them, videos not written)."""
    from studio.animation.start import begin, run
    from studio.serving.sequence import Sequence
    animation = begin(studio, {**COMMON, **raw}, start=start, video=video)
    began = time.perf_counter()
    run(animation, Sequence(studio, user="bench", session="bench", save=False))
    took = time.perf_counter() - began
    return [np.asarray(Image.open(animation.path(t)).convert("RGB")) for t in range(len(animation.plan))], took


def speed(studio, frames: int) -> list[tuple[str, float]]:
    start = np.full((64, 64, 3), 128, np.uint8)
    start[red_mask(_disc(20))] = (230, 30, 30)
    rows = []
    request = studio.make_request("txt2img", prompt="a red circle on a gray background", seed=1, steps=20,
                                  cfg_scale=5, width=64, height=64)
    studio.submit(request, user="bench").result()                            # warm: the model is loaded
    began = time.perf_counter()
    for _ in range(5):
        studio.submit(request, user="bench").result()
    rows.append(("baseline: one txt2img picture, 20 steps, saved", (time.perf_counter() - began) / 5))
    cases = {"travel (txt2img, 20 steps)": dict(mode="travel", prompts=RED_TO_BLUE.format(last=frames - 1)),
             "2d (img2img, denoise 0.45: 9 steps)": dict(mode="2d", zoom="0:(1.02)"),
             "2d, cadence 3": dict(mode="2d", zoom="0:(1.02)", cadence=3),
             "preview (no diffusion)": dict(mode="preview", zoom="0:(1.02)")}
    for name, raw in cases.items():
        _, took = render(studio, {**raw, "frames": frames}, start=start if raw["mode"] == "2d" else None)
        rows.append((name, took / frames))
    return rows


def _disc(cx: float, r: int = 7) -> np.ndarray:
    y, x = np.mgrid[0:64, 0:64]
    img = np.full((64, 64, 3), 128, np.uint8)
    img[(x - cx) ** 2 + (y - 31.5) ** 2 <= r * r] = (230, 30, 30)
    return img


def quality(studio) -> list[tuple[str, str]]:
    rows = []
    travel, _ = render(studio, dict(mode="travel", frames=12, prompts=RED_TO_BLUE.format(last=11)))
    cut, _ = render(studio, dict(mode="travel", frames=12, prompts=RED_TO_BLUE.format(last=11), blend_prompts=False))
    for name, frames in (("travel, blended", travel), ("travel, hard cut (control)", cut)):
        along = [blueness(f) for f in frames]
        jumps = np.abs(np.diff(along))
        rows.append((name, f"rank correlation {spearman(along):.3f}, largest step {jumps.max() / jumps.sum():.0%} "
                           f"of the change"))
    slerped, _ = render(studio, dict(mode="travel", frames=8, seed_mode="iter",
                                     prompts="0: a red circle on a gray background\n7: a blue circle on a gray background"))
    fixed, _ = render(studio, dict(mode="travel", frames=8, prompts=RED_TO_BLUE.format(last=7)))
    naive = render(studio, dict(mode="2d", frames=8, seed_mode="iter", denoise="0:(1)", coherence="none",
                                prompts=RED_TO_BLUE.format(last=7)))[0]
    rows.append(("consecutive change (levels)", f"fixed noise {consecutive_change(fixed):.1f}, slerped between "
                 f"2 keyframe seeds {consecutive_change(slerped):.1f}, a fresh seed each frame "
                 f"{consecutive_change(naive):.1f}"))
    start = np.full((64, 64, 3), (120, 160, 200), np.uint8)
    drift = {}
    for coherence, strength in (("none", 0.0), ("LAB", 1.0), ("LAB", 0.5), ("HSV", 1.0), ("RGB", 1.0)):
        frames, _ = render(studio, dict(mode="2d", frames=48, denoise="0:(0.5)", noise="0:(0.04)", steps="0:(6)",
                                        coherence=coherence, coherence_strength=strength,
                                        prompts="0: a yellow square on a light blue background"), start=start)
        drift[f"{coherence} {strength:g}"] = colour_drift(frames[0], frames[-1])
    rows.append(("colour drift over 48 loopback frames (levels)", ", ".join(f"{k}: {v:.1f}" for k, v in drift.items())))
    start = np.full((64, 64, 3), 128, np.uint8)
    start[red_mask(_disc(18))] = (230, 30, 30)
    frames, _ = render(studio, dict(mode="2d", frames=12, translation_x="0:(1.5)", denoise="0:(0.35)", noise="0:(0)",
                                    steps="0:(10)", prompts="0: a red circle on a gray background"), start=start)
    found = [(t, centroid(red_mask(f))) for t, f in enumerate(frames) if red_mask(f).sum() >= 20]
    errors = [abs(c[0] - (18 + 1.5 * t)) for t, c in found]
    rows.append(("2d path, 1.5 px a frame, denoise 0.35", f"colour kept on {len(found)}/{len(frames)} frames, "
                 f"centroid error mean {statistics.mean(errors):.2f} px, max {max(errors):.2f} px"))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--frames", type=int, default=24)
    args = p.parse_args()
    import torch
    torch.set_num_threads(args.threads)
    from studio.config import Settings
    from studio.serving.studio import Studio
    from embedded.common import machine_name
    studio = Studio.from_settings(Settings(model="", outputs=Path(tempfile.mkdtemp(prefix="bench-animation-"))))
    print(f"embedded model, 64 px, {args.threads} threads, {torch.__version__}, {machine_name()}")
    print(f"\n{'speed':52} {'s/frame':>8} {'frames/s':>9}")
    for name, seconds in speed(studio, args.frames):
        print(f"{name:52} {seconds:8.3f} {1 / seconds:9.1f}")
    print("\nquality (weight-free measures)")
    for name, text in quality(studio):
        print(f"  {name}: {text}")


if __name__ == "__main__":
    main()
