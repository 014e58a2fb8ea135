"""What the embedded model's evaluations share: the record's settings (sampler, steps, CFG), a
fresh scheduler and seeded generators per run, the held-out draws and the pixel checker's
fidelity on them, shares and their intervals. `evaluate` (the teacher), `evaluate_student` (the
few-step student) and `model_card` (the README written from their figures) all read them here."""

from __future__ import annotations

import numpy as np
import torch

from studio.generation.schedulers import build_scheduler
from studio.samplers import DEFAULT_SCHEDULER

from .checker import Score, check
from .world import Scene, heldout_prompts

CFG = 5.0
STEPS = 20


def fresh(pipe, seed: int = 0, scheduler: str = DEFAULT_SCHEDULER):
    pipe.scheduler = build_scheduler(scheduler, pipe.scheduler.config, seed=seed)
    return pipe


def generators(seeds):
    return [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]


RECORD_DRAWS = 3   # the record: this many draws of --n held-out prompts, pooled (600 at --n 200)


def draw_seeds(draw: int, validation: bool = False) -> tuple[int, int]:
    """(prompt seed, first noise seed) of a draw of held-out prompts.

    The record's draws (the test set): draw 0 is prompt seed 0 with noise seeds 0..n-1 (the
    record's only draw until 2026-12-02), draws d >= 1 prompt seed 100 + d with noise seeds
    100,000 d + i. Validation draws (d >= 1), for choosing settings such as the CFG scale or a
    recipe without looking at the test set: prompt seed 2 + d, noise seeds 10,000 d + i (they
    were `--draws`' further draws until 2026-12-02, when the CFG scale was checked on them).
    All are other prompts of the same held-out (colour, shape) pairs."""
    if validation:
        if draw < 1:
            raise ValueError("validation draws count from 1")
        return 2 + draw, 10_000 * draw
    return (0, 0) if draw == 0 else (100 + draw, 100_000 * draw)


def fidelity_scores(pipe, n: int, size: int, chunk: int = 25, position: bool = True,
                    draw: int = 0, validation: bool = False, steps: int = STEPS, cfg: float = CFG,
                    scheduler: str = DEFAULT_SCHEDULER) -> list[tuple[Scene, Score]]:
    """The checker's verdicts on `n` held-out prompts of one draw (`draw_seeds`); with
    `position=False` they name no position (draw 0 only: prompt seed 2). The same prompts get
    the same starting noise whatever the steps, CFG or sampler (a student beside its teacher)."""
    if position:
        prompt_seed, noise = draw_seeds(draw, validation)
    elif draw == 0 and not validation:
        prompt_seed, noise = 2, 0
    else:
        raise ValueError("prompts without a position word have one draw")
    items = heldout_prompts(n, seed=prompt_seed, position=position)
    out_scores = []
    for start in range(0, n, chunk):
        part = items[start:start + chunk]
        seeds = range(noise + start, noise + start + len(part))
        out = fresh(pipe, seeds[0], scheduler)(
            [p for _, p in part], num_inference_steps=steps, guidance_scale=cfg, height=size,
            width=size, generator=generators(seeds)).images
        out_scores += [(scene, check(img, scene)) for img, (scene, _) in zip(out, part)]
    return out_scores


def shares(results: list[tuple[Scene, Score]], position: bool = True) -> dict:
    """Shares of pictures with the asked colour, background, position, shape, and all of them."""
    keys = ("colour", "background", "position", "shape") if position else ("colour", "background", "shape")
    n = len(results)
    out = {k: sum(bool(getattr(s, k)) for _, s in results) / n for k in keys}
    out["all"] = sum(all(getattr(s, k) for k in keys) for _, s in results) / n
    return out


def colour_by_pair(results: list[tuple[Scene, Score]]) -> dict:
    """Colour share per held-out (colour, shape) pair, weakest first: which unseen composition
    the model gets wrong, and what it paints instead (the checker's colour of the misses)."""
    by: dict[str, list] = {}
    for scene, s in results:
        o = scene.objects[0]
        by.setdefault(f"{o.colour} {o.shape}", []).append(s)
    rows = {}
    for pair, scores in by.items():
        painted: dict[str, int] = {}
        for s in scores:
            if not s.colour:
                got = s.found.get("colour") if s.found.get("object") else "no object"
                painted[str(got)] = painted.get(str(got), 0) + 1
        rows[pair] = {"colour": sum(bool(s.colour) for s in scores) / len(scores), "n": len(scores),
                      "misses painted": dict(sorted(painted.items(), key=lambda kv: -kv[1]))}
    return dict(sorted(rows.items(), key=lambda kv: (kv[1]["colour"], kv[0])))


def wilson(share: float, n: int, z: float = 1.96) -> list[float]:
    """95% (Wilson score) interval of a share measured on `n` pictures: on 200 prompts a
    figure near 90% is known to about +-4 points."""
    if n <= 0:
        return [0.0, 1.0]
    centre = (share + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(share * (1 - share) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [round(float(max(0.0, centre - half)), 4), round(float(min(1.0, centre + half)), 4)]


REFERENCE_COLOUR = "pink"   # not what the model paints for a colourless "a circle" (green)
REFERENCE_KEY = f"reference image ({REFERENCE_COLOUR} circle): {REFERENCE_COLOUR} share of object pixels"
