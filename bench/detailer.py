"""The detailer on the embedded model: small shapes in a corner (at 64 px a small shape is ~16 px
across and often loses its form), each drawn once and detailed once (the same seed: the plain
picture is the detailer's first pass), the pixel checker (embedded/checker.py) reading the shape,
colour and place of both. The detailer's prompt names the shape as the crop shows it: large, in the
centre (what an ADetailer user writes for the region).

    python bench/detailer.py [--n 120] [--steps 20] [--strength 0.4]

Measures, asserts nothing; prints the rates side by side and the seconds a picture.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CORNERS = ("top left", "top right", "bottom left", "bottom right")


def scenes(n: int, seed: int = 0):
    from embedded.world import COLOURS, SHAPES, Obj, Scene, full_caption
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        colour = rng.choice(list(COLOURS))
        background = rng.choice([c for c in COLOURS if c != colour])
        scene = Scene((Obj(rng.choice(SHAPES), colour, "small", rng.choice(CORNERS)),), background)
        out.append((scene, full_caption(scene)))
    return out


def main() -> None:
    import torch

    from embedded.checker import check
    from studio.config import Settings
    from studio.detailer.detail import run_detailer
    from studio.serving.sequence import Sequence
    from studio.serving.studio import Studio

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=120)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--strength", type=float, default=0.4)       # ADetailer's default
    args = p.parse_args()
    torch.set_num_threads(2)
    studio = Studio.from_settings(Settings(model="", outputs=Path(tempfile.mkdtemp(prefix="bench-detailer-"))))
    counts = {"plain": [0, 0, 0], "detailed": [0, 0, 0]}
    found, started = 0, time.perf_counter()
    for i, (scene, prompt) in enumerate(scenes(args.n)):
        obj = scene.objects[0]
        raw = dict(prompt=prompt, steps=args.steps, seed=i, width=64, height=64, ad_enable=True, ad_model="shapes",
                   ad_prompt=f"a large {obj.colour} {obj.shape} in the center on a {scene.background} background",
                   ad_denoising_strength=args.strength, ad_dilate_erode=2, ad_mask_blur=2, ad_inpaint_padding=8)
        result = run_detailer(studio, raw, Sequence(studio, user="bench", session="bench"))
        found += any("adetailer" in g.data for g in result.images)
        for name, picture in (("plain", result.first_pass[0]), ("detailed", result.images[0])):
            score = check(picture.image, scene)
            counts[name] = [c + int(v) for c, v in zip(counts[name], (score.shape, score.colour, score.position))]
    seconds = (time.perf_counter() - started) / args.n
    print(f"{args.n} small corner shapes, {args.steps} steps, detailer strength {args.strength}; the shapes "
          f"detector found a region in {found}")
    print(f"{'':10} {'shape right':>12} {'colour right':>13} {'place right':>12}")
    for name, (shape, colour, place) in counts.items():
        print(f"{name:10} {shape / args.n:12.1%} {colour / args.n:13.1%} {place / args.n:12.1%}")
    print(f"{seconds:.2f} s a prompt (the picture and its detailing)")


if __name__ == "__main__":
    main()
