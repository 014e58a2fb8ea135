"""Every frame's values, worked out from the settings before the first frame runs: a bad schedule
is refused at the boundary, never at frame 90, and the plan is data a test can snapshot.

Seeds: in `travel` each prompt keyframe has a seed (fixed: the seed; iter: seed + the keyframe's
number; schedule: the seed schedule at that frame) and the frames between two keyframes start
from the first one's noise slerped toward the next one's, as far as the prompts have blended;
in the other modes each frame has a seed of its own (fixed, iter: seed + frame, or the schedule,
where Deforum's -1 means seed + frame).
"""

from __future__ import annotations

from dataclasses import dataclass

from studio.animation.schedule import PromptBlend, parse_prompts, prompt_blends, values
from studio.animation.settings import AnimationSettings
from studio.errors import InvalidRequest
from studio.requests import CFG_RANGE, MAX_SEED, STEPS_RANGE

RANGES = {   # schedule -> (lowest, highest) any frame may take
    "zoom": (0.1, 10.0), "angle": (-360.0, 360.0), "translation_x": (-4096.0, 4096.0),
    "translation_y": (-4096.0, 4096.0), "center_x": (0.0, 1.0), "center_y": (0.0, 1.0),
    "denoise": (0.0, 1.0), "noise": (0.0, 1.0), "cfg": CFG_RANGE, "steps": STEPS_RANGE,
}


@dataclass(frozen=True)
class FramePlan:
    index: int
    diffuse: bool                 # False: an in-between frame of the cadence, warped and blended
    prompt: PromptBlend
    seed: int
    variation_seed: int           # travel: the next keyframe's seed ...
    variation: float              # ... and how far the noise is slerped toward it
    zoom: float
    angle: float
    tx: float
    ty: float
    cx: float
    cy: float
    denoise: float
    noise: float
    cfg: float
    steps: int
    end_pull: float               # how far the img2img input is pulled toward the end picture


def schedule_values(s: AnimationSettings) -> dict[str, list[float]]:
    """Each schedule's value at every frame, range-checked with the frame named on a mistake."""
    out = {}
    for name, (low, high) in RANGES.items():
        series = values(getattr(s, name), s.frames, s.seed, s.interpolation)
        for t, v in enumerate(series):
            if not low <= v <= high:
                raise InvalidRequest(f"The {name} schedule gives {v:g} at frame {t}; it must be between "
                                     f"{low:g} and {high:g}.")
        out[name] = series
    return out


def frame_seeds(s: AnimationSettings) -> list[int]:
    """The other modes' seed per frame."""
    if s.seed_mode == "fixed":
        return [s.seed] * s.frames
    if s.seed_mode == "iter":
        return [(s.seed + t) % (MAX_SEED + 1) for t in range(s.frames)]
    scheduled = values(s.seed_schedule, s.frames, s.seed, "linear")
    return [(s.seed + t) % (MAX_SEED + 1) if v < 0 else int(round(v)) % (MAX_SEED + 1)
            for t, v in enumerate(scheduled)]


def travel_seeds(s: AnimationSettings) -> tuple[list[int], list[int]]:
    """(keyframe frames, their seeds), with the loop's return to the first keyframe at the end."""
    frames = [f for f, *_ in parse_prompts(s.prompts, s.frames)]
    per_frame = frame_seeds(s) if s.seed_mode == "schedule" else None
    seeds = [per_frame[min(f, s.frames - 1)] if per_frame else
             (s.seed + (i if s.seed_mode == "iter" else 0)) % (MAX_SEED + 1) for i, f in enumerate(frames)]
    if s.loop == "loop":
        frames, seeds = frames + [s.frames], seeds + seeds[:1]
    return frames, seeds


def plan_frames(s: AnimationSettings, end_picture: bool = False) -> list[FramePlan]:
    v = schedule_values(s)
    blends = prompt_blends(s.prompts, s.frames, s.negative_prompt, s.blend_prompts,
                           loop=s.loop == "loop" and s.mode == "travel")
    seeds = frame_seeds(s)
    keys, key_seeds = travel_seeds(s) if s.mode == "travel" else ([], [])
    pull_from = s.frames - s.end_blend if end_picture or (s.loop == "loop" and s.mode != "travel") else s.frames
    out = []
    for t in range(s.frames):
        seed, variation_seed, variation = seeds[t], seeds[t], 0.0
        if keys:
            i = max(j for j, f in enumerate(keys) if f <= t) if t >= keys[0] else 0
            seed = variation_seed = key_seeds[i]
            if i + 1 < len(keys):
                variation_seed, variation = key_seeds[i + 1], blends[t].weight
        out.append(FramePlan(
            index=t, diffuse=s.mode != "2d" or t % s.cadence == 0 or t == s.frames - 1, prompt=blends[t],
            seed=seed, variation_seed=variation_seed, variation=variation, zoom=v["zoom"][t], angle=v["angle"][t],
            tx=v["translation_x"][t], ty=v["translation_y"][t], cx=v["center_x"][t], cy=v["center_y"][t],
            denoise=v["denoise"][t], noise=v["noise"][t], cfg=v["cfg"][t], steps=int(round(v["steps"][t])),
            end_pull=max(0.0, (t - pull_from + 1) / s.end_blend) if s.end_blend and t >= pull_from else 0.0))
    return out
