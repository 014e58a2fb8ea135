"""Pictures a second through the studio: the embedded model (the teacher, at its defaults) beside
its few-step student, end to end as the live mode and the API run them.

    python bench/live.py [--rounds 30] [--threads 2]

Each picture is one request through `Studio` and its dispatcher (prompt parsing, the pipeline,
the VAE, the metadata record; a model switch and one untimed picture come before each model's
rows): `live` pictures are held (what the Live switch draws), `saved` ones
also written as PNG (what Generate makes). Runs are interleaved round by round, so a machine that
drifts weighs on every row alike; the first round is warm-up. Prints median and p95 seconds a
picture and pictures a second. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from studio.models.library import EMBEDDED  # noqa: E402
from studio.models.sources import STUDENT, student_available  # noqa: E402

PROMPT = "a red circle on a blue background"


def cases(studio) -> dict[str, tuple[str, dict, bool]]:
    """name -> (model, request fields, saved)."""
    from embedded.fidelity import CFG
    teacher = dict(scheduler="DPM++ 2M Karras", steps=20, cfg_scale=CFG)
    few = studio.select_model(STUDENT).few_step
    studio.select_model("")
    student = dict(scheduler=few.sampler, cfg_scale=few.cfg)
    return {"teacher, 20 steps (live)": (EMBEDDED, teacher, False),
            "teacher, 20 steps (saved)": (EMBEDDED, teacher, True),
            **{f"student, {n} step{'s' * (n > 1)} (live)": (STUDENT, {**student, "steps": n}, False)
               for n in (1, 2, 4)},
            "student, 4 steps (saved)": (STUDENT, {**student, "steps": 4}, True)}


def picture(studio, model: str, fields: dict, saved: bool, seed: int) -> float:
    request = studio.make_request("txt2img", prompt=PROMPT, seed=seed, model=model, **fields)
    began = time.perf_counter()
    if saved:
        studio.submit(request, user="bench").result()
    else:
        studio.live(request, user="bench", session="bench")
    return time.perf_counter() - began


def measure(studio, rounds: int) -> dict[str, list[float]]:
    """Seconds a picture per row, `rounds` rounds after a warm-up one."""
    table = cases(studio)
    times: dict[str, list[float]] = {name: [] for name in table}
    for r in range(rounds + 1):
        for model in (EMBEDDED, STUDENT):       # a model's rows together, after a switch and an untimed picture
            rows = {name: row for name, row in table.items() if row[0] == model}
            picture(studio, model, next(iter(rows.values()))[1], False, seed=r)
            for name, (m, fields, saved) in rows.items():
                took = picture(studio, m, fields, saved, seed=r)
                if r:
                    times[name].append(took)
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    if not student_available():
        sys.exit("assets/embedded-model/lcm-unet is missing: python -m embedded.distill makes it")
    import torch
    torch.set_num_threads(args.threads)
    from studio.config import Settings
    from studio.serving.studio import Studio
    studio = Studio.from_settings(Settings(model="", outputs=Path(tempfile.mkdtemp(prefix="bench-live-"))))
    times = measure(studio, args.rounds)
    print(f"64 px, batch 1, {args.threads} threads, {args.rounds} rounds after a warm-up; "
          f"{torch.__version__}, {machine()}")
    print(f"{'':34} {'median s':>9} {'p95 s':>8} {'pictures/s':>11}")
    for name, values in times.items():
        values.sort()
        median, p95 = statistics.median(values), values[min(len(values) - 1, int(0.95 * len(values)))]
        print(f"{name:34} {median:9.4f} {p95:8.4f} {1 / median:11.1f}")


def machine() -> str:
    from embedded.common import machine_name
    return machine_name()


if __name__ == "__main__":
    main()
