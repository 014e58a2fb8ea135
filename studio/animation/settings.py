"""An animation's settings: one checked record, made once at the boundary (the tab, /animate, a
Deforum settings file), saved beside the frames and inside every frame's and the video's metadata.

Modes: `travel` (text-to-image frames whose prompts blend between keyframes and whose starting
noise slerps between the keyframes' seeds), `2d` (each frame warps the last, then img2img),
`video` (img2img over an uploaded video's frames) and `preview` (the motion on a test pattern,
no diffusion). Schedules are Deforum keyframe strings (studio.animation.schedule). `denoise` is
how much each img2img frame changes (Deforum's `strength` is 1 - denoise; its files import).
"""

from __future__ import annotations

import json
import secrets
from dataclasses import asdict, dataclass, fields
from typing import Any

from studio.animation.colour import COHERENCE
from studio.animation.motion import BORDERS
from studio.animation.schedule import INTERPOLATIONS, split_top_level, unwrap
from studio.errors import InvalidRequest
from studio.fields import bounded, in_range, number, text, word
from studio.requests import MAX_SEED

MODES = ("travel", "2d", "video", "preview")
SEED_MODES = ("fixed", "iter", "schedule")
LOOPS = ("none", "loop", "pingpong")
FORMATS = ("mp4", "gif", "webp")
MAX_FRAMES = 2000
SCHEDULES = ("zoom", "angle", "translation_x", "translation_y", "center_x", "center_y", "denoise",
             "noise", "cfg", "steps", "seed_schedule")


@dataclass(frozen=True, kw_only=True)
class AnimationSettings:
    mode: str = "travel"
    frames: int = 24
    fps: int = 12
    prompts: str = "0: a red circle on a gray background\n12: a blue circle on a gray background"
    negative_prompt: str = ""
    blend_prompts: bool = True        # False: each keyframe's prompt cuts in (Deforum's 2D)
    seed: int = -1                    # -1: drawn once here, then fixed for the run and its resume
    seed_mode: str = "fixed"          # travel: per keyframe; 2d/video: per frame (iter: seed + n)
    seed_schedule: str = "0:(s)"
    zoom: str = "0:(1.0)"
    angle: str = "0:(0)"
    translation_x: str = "0:(0)"
    translation_y: str = "0:(0)"
    center_x: str = "0:(0.5)"
    center_y: str = "0:(0.5)"
    denoise: str = "0:(0.45)"
    noise: str = "0:(0.02)"
    cfg: str = "0:(7)"
    steps: str = "0:(20)"
    interpolation: str = "linear"
    coherence: str = "LAB"
    coherence_strength: float = 0.5
    reanchor_every: int = 0           # 0: frame 0 stays the colour reference
    cadence: int = 1                  # 2d: diffuse every Nth frame, warp-blend between
    border: str = "replicate"
    loop: str = "none"                # loop: travel back to frame 0 (exact); pingpong: the video only
    end_blend: int = 0                # 2d/video with an end picture (or a loop): frames pulled toward it
    scheduler: str = "DPM++ 2M Karras"
    width: int = 0                    # 0: the model's native size (travel, 2d) or the video's
    height: int = 0
    negative_presets: tuple[str, ...] = ()
    video_every: int = 1              # video mode: every Nth frame of the input
    formats: tuple[str, ...] = ("mp4", "gif")

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["negative_presets"], out["formats"] = list(self.negative_presets), list(self.formats)
        return out


CHOICES = {"mode": MODES, "seed_mode": SEED_MODES, "interpolation": INTERPOLATIONS, "coherence": COHERENCE,
           "border": tuple(BORDERS), "loop": LOOPS}
INTEGERS = {"frames": (1, MAX_FRAMES), "fps": (1, 60), "reanchor_every": (0, MAX_FRAMES), "cadence": (1, 8),
            "end_blend": (0, MAX_FRAMES), "width": (0, 2048), "height": (0, 2048), "video_every": (1, 100)}
FLOATS = {"coherence_strength": (0.0, 1.0)}


def make_settings(**raw: Any) -> AnimationSettings:
    """Check raw fields once and return trusted settings, or raise InvalidRequest."""
    known = {f.name for f in fields(AnimationSettings)}
    unknown = set(raw) - known
    if unknown:
        raise InvalidRequest(f"Unknown animation setting(s): {', '.join(sorted(unknown))}.")
    d = AnimationSettings()
    get = lambda k: getattr(d, k) if raw.get(k) is None else raw[k]  # noqa: E731
    out: dict[str, Any] = {}
    for name, choices in CHOICES.items():
        out[name] = word(name, get(name), getattr(d, name))
        if out[name] not in choices:
            raise InvalidRequest(f"{name} must be one of {', '.join(choices)}, got {out[name]!r}.")
    for name, (low, high) in INTEGERS.items():
        out[name] = bounded(name, get(name), low, high, integer=True)
    for name, (low, high) in FLOATS.items():
        out[name] = bounded(name, get(name), low, high, integer=False)
    for name in ("prompts", "negative_prompt", *SCHEDULES, "scheduler"):
        out[name] = text(name, get(name))
    for side in ("width", "height"):
        if out[side] and (out[side] % 8 or out[side] < 64):
            raise InvalidRequest(f"{side} must be 0 (the model's size) or a multiple of 8 from 64, got {out[side]}.")
    seed = number("seed", get("seed"), integer=True)
    out["seed"] = secrets.randbelow(MAX_SEED + 1) if seed == -1 else seed
    in_range("seed", out["seed"], 0, MAX_SEED)
    out["blend_prompts"] = _flag("blend_prompts", get("blend_prompts"))
    out["negative_presets"] = tuple(_list("negative_presets", get("negative_presets")))
    out["formats"] = tuple(_list("formats", get("formats")))
    if not set(out["formats"]) <= set(FORMATS):
        raise InvalidRequest(f"formats are some of {', '.join(FORMATS)}, got {', '.join(out['formats'])}.")
    return AnimationSettings(**out)


def _flag(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise InvalidRequest(f"{name} must be true or false, got {value!r}.")


def _list(name: str, value: Any) -> list[str]:
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",")]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise InvalidRequest(f"{name} must be a list of names.")
    return [v for v in value if v]


# ------------------------------------------------------------------------------ Deforum files

DEFORUM_NAMES = {      # Deforum's settings.txt key -> ours (schedules keep their syntax)
    "max_frames": "frames", "fps": "fps", "zoom": "zoom", "angle": "angle", "translation_x": "translation_x",
    "translation_y": "translation_y", "transform_center_x": "center_x", "transform_center_y": "center_y",
    "noise_schedule": "noise", "cfg_scale_schedule": "cfg", "steps_schedule": "steps",
    "seed_schedule": "seed_schedule", "diffusion_cadence": "cadence", "seed": "seed", "W": "width", "H": "height",
}
DEFORUM_MODES = {"2D": "2d", "Interpolation": "travel", "Video Input": "video"}
DEFORUM_SEEDS = {"fixed": "fixed", "iter": "iter", "schedule": "schedule"}
DEFORUM_COLOURS = {"None": "none", "LAB": "LAB", "HSV": "HSV", "RGB": "RGB", "Match Frame 0 LAB": "LAB",
                   "Match Frame 0 HSV": "HSV", "Match Frame 0 RGB": "RGB"}


def from_deforum(text: str) -> tuple[dict[str, Any], list[str]]:
    """A Deforum settings file (its 2D, interpolation and video-input fields) as raw settings for
    make_settings, and notes on what was left out or changed."""
    try:
        deforum = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidRequest(f"Not a Deforum settings file (JSON): {exc}.") from None
    if not isinstance(deforum, dict):
        raise InvalidRequest("Not a Deforum settings file: expected a JSON object.")
    raw = {ours: deforum[theirs] for theirs, ours in DEFORUM_NAMES.items() if theirs in deforum}
    notes = []
    mode = deforum.get("animation_mode")
    if mode is not None:
        raw["mode"] = DEFORUM_MODES.get(mode, "2d")
        if mode not in DEFORUM_MODES:
            notes.append(f"Animation mode {mode!r} is not here (no depth model): imported as 2D.")
    if "strength_schedule" in deforum:       # Deforum's strength is 1 - denoise
        raw["denoise"] = ", ".join(f"{key}:(1-({value}))" for key, value in _entries(deforum["strength_schedule"]))
    if isinstance(deforum.get("prompts"), dict):
        raw["prompts"] = json.dumps(deforum["prompts"])
    seeds = deforum.get("seed_behavior")
    if seeds is not None:
        raw["seed_mode"] = DEFORUM_SEEDS.get(seeds, "iter")
        if seeds not in DEFORUM_SEEDS:
            notes.append(f"Seed behaviour {seeds!r} is imported as 'iter'.")
    if "color_coherence" in deforum:
        raw["coherence"] = DEFORUM_COLOURS.get(deforum["color_coherence"], "LAB")
    if deforum.get("border") in BORDERS:
        raw["border"] = deforum["border"]
    if "diffusion_cadence" in raw:
        raw["cadence"] = min(int(raw["cadence"]), INTEGERS["cadence"][1])
    ignored = sorted(k for k in deforum if k in {"rotation_3d_x", "rotation_3d_y", "rotation_3d_z", "translation_z",
                                                "perspective_flip_theta", "hybrid_motion"} and deforum[k])
    if ignored:
        notes.append(f"Left out (3D and hybrid motion are not here): {', '.join(ignored)}.")
    return raw, notes


def _entries(schedule: str) -> list[tuple[str, str]]:
    out = []
    for entry in split_top_level(str(schedule)):
        key, _, value = entry.partition(":")
        out.append((key.strip(), unwrap(value.strip())))
    return out
