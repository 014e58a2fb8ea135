"""The studio's own cost per image: plain diffusers and the studio's default path, interleaved.

    python bench/overhead.py                  # the embedded model, 20 steps, 30 pairs
    python bench/overhead.py --pairs 60 --steps 4

bench/speed.py runs each path in a fresh process one after the other, which is right for
first-image and memory figures but lets a shared or throttled CPU drift between the two runs
(on a 2-core cloud machine the same path varied by 40% from one run to the next). Here both paths
live in one process and alternate image by image, so drift hits both alike: the figure is the
median of the per-pair ratios studio / plain, with its interquartile range.

plain  = StableDiffusionPipeline.from_pretrained(model) called as a user writes it (DPM++ 2M
         Karras, a CPU generator per image, its own text encoding every call);
studio = the request submitted to the dispatcher as every tab does (queue, worker thread,
         per-request scheduler and pipeline object, prompt parsing, PNG + metadata saved with
         fsync). Both make the same picture (checked). Prints where the studio's extra time goes,
         from a profile of its path. Asserts nothing.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PROMPT = "a red circle on a blue background"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", type=int, default=30)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = p.parse_args()

    import numpy as np
    import torch
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline

    from studio.config import EMBEDDED_MODEL, Settings
    from studio.requests import make_request
    from studio.serving.studio import Studio

    if args.threads:
        torch.set_num_threads(args.threads)
    studio = Studio.from_settings(Settings(model="", outputs=Path(tempfile.mkdtemp(prefix="overhead-"))))
    request = make_request(prompt=PROMPT, steps=args.steps, cfg_scale=7, seed=0, scheduler="DPM++ 2M Karras")
    submit = getattr(studio, "submit", None)

    def studio_image():
        if submit is None:             # a studio before the dispatcher: its engine call
            return studio.local.run(request).images[0].image
        return submit(request, user="bench").result().images[0].image

    pipe = StableDiffusionPipeline.from_pretrained(EMBEDDED_MODEL, torch_dtype=torch.float32,
                                                   local_files_only=True, safety_checker=None,
                                                   requires_safety_checker=False)
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config, use_karras_sigmas=True)
    pipe.set_progress_bar_config(disable=True)

    def plain_image():
        return pipe(PROMPT, num_inference_steps=args.steps, guidance_scale=7,
                    generator=torch.Generator("cpu").manual_seed(0)).images[0]

    same = np.array_equal(np.asarray(plain_image()), np.asarray(studio_image()))   # also warms up
    plain, own = [], []
    for i in range(args.pairs):
        order = (plain_image, studio_image) if i % 2 == 0 else (studio_image, plain_image)
        times = {}
        for fn in order:
            t = time.perf_counter()
            fn()
            times[fn] = time.perf_counter() - t
        plain.append(times[plain_image])
        own.append(times[studio_image])
    ratios = sorted(s / p for s, p in zip(own, plain))
    q1, q3 = ratios[len(ratios) // 4], ratios[3 * len(ratios) // 4]
    print(f"{args.pairs} pairs, {args.steps} steps, torch threads {torch.get_num_threads()}, "
          f"same picture: {same}")
    print(f"plain diffusers  median {statistics.median(plain):.3f} s/image")
    print(f"studio           median {statistics.median(own):.3f} s/image")
    print(f"studio / plain   median {statistics.median(ratios):.3f} (IQR {q1:.3f}-{q3:.3f})")
    _where(lambda: studio.local.run(request))


def _where(engine_image) -> None:
    """The studio's own functions by cumulative time, from a profile of 10 images through the
    engine on this thread (a profile does not see the dispatcher's worker thread)."""
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(10):
        engine_image()
    profile.disable()
    stats = pstats.Stats(profile)
    rows = []
    for (file, line, name), (_, _, _, cum, _) in stats.stats.items():
        if "/studio/" in file and "/site-packages/" not in file:
            rows.append((cum / 10, f"{Path(file).parent.name}/{Path(file).name}:{name}"))
    print("the studio's own functions (ms per image, cumulative; the pipeline call is the bulk):")
    for ms, where in sorted(rows, reverse=True)[:14]:
        print(f"  {ms * 1000:8.1f}  {where}")


if __name__ == "__main__":
    main()
