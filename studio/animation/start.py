"""What the Animation tab and /animate call: check everything at the boundary, make the folder,
run the frames through a Sequence (the dispatcher, fair to other users; Stop ends it with the
finished frames kept), then write the videos."""

from __future__ import annotations

import itertools
import re
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from studio.animation.render import Animation, Frame, Inputs
from studio.animation.settings import make_settings
from studio.animation.video import read_video
from studio.errors import InvalidRequest
from studio.inputs import load_image

FOLDER = "animations"
_NAME = re.compile(r"\A[\w-]{1,80}\Z")


def animations_root(studio, user: str | None = None) -> Path:
    """outputs/animations; `user`'s own (outputs/<login>/animations) when logins have their own space."""
    return Path(studio.outputs_root(user)) / FOLDER


def begin(studio, raw: dict[str, Any], start=None, end=None, video: str | None = None,
          user: str | None = None) -> Animation:
    """A new animation from raw settings and pictures: everything checked (schedules at every frame
    too) and written to its folder (in `user`'s space) before the first frame runs."""
    settings = make_settings(**raw)
    frames: list[np.ndarray] = []
    if settings.mode == "video":
        if not video:
            raise InvalidRequest("Video mode needs a video to work over.")
        frames, _ = read_video(video, settings.video_every, settings.frames, studio.limits.max_side)
        settings = replace(settings, frames=len(frames))       # a shorter video: as many frames as it has
    inputs = Inputs(start=_picture("Start picture", start), end=_picture("End picture", end), video=frames)
    folder = new_folder(studio, settings.seed, user)
    try:
        animation = Animation(studio, settings, folder, inputs)
        if animation.plan:
            _check_first_request(studio, animation)
        animation.write_inputs(video)
    except BaseException:        # refused: no empty folder is left behind
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return animation


def new_folder(studio, seed: int, user: str | None = None) -> Path:
    """outputs/animations/<date-time>-<seed>, made now; -2, -3... when another animation (another
    user, the same second and seed) has the name, so no two runs ever share a folder."""
    root = animations_root(studio, user)
    root.mkdir(parents=True, exist_ok=True)
    name = f"{time.strftime('%Y%m%d-%H%M%S')}-{seed}"
    for n in itertools.count(1):
        folder = root / (name if n == 1 else f"{name}-{n}")
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue


def reopen(studio, name: str, user: str | None = None) -> Animation:
    """An animation `user` began earlier (by its folder name), to resume: another login's is not
    found, with the same words as one that is not there."""
    if not isinstance(name, str) or not _NAME.match(name.strip()):
        raise InvalidRequest(f"{name!r} is not an animation's name (its folder under outputs/{FOLDER}).")
    folder = animations_root(studio, user) / name.strip()
    if not (folder / "animation.json").exists():
        raise InvalidRequest(f"No animation named {name!r} under outputs/{FOLDER}.")
    return Animation.open(studio, folder)


def run(animation: Animation, sequence, on_frame: Callable[[Frame], None] | None = None) -> dict[str, Path]:
    """Make the missing frames, then the videos; {} when stopped before the last frame."""
    for frame in animation.frames(sequence):
        if on_frame is not None:
            on_frame(frame)
    if animation.done() < len(animation.plan):
        return {}
    return animation.videos()


def _picture(name: str, value) -> np.ndarray | None:
    if value is None or (isinstance(value, str) and not value):
        return None
    return np.asarray(load_image(name, value).convert("RGB"))


def _check_first_request(studio, animation: Animation) -> None:
    """The generation fields (sampler, presets, size) checked as frame 0's request would be."""
    s, first = animation.settings, animation.plan[0]
    studio.make_request("txt2img", prompt=first.prompt.prompt, negative_prompt=first.prompt.negative,
                        scheduler=s.scheduler, negative_presets=list(s.negative_presets), steps=first.steps,
                        cfg_scale=first.cfg, width=animation.size[0], height=animation.size[1], seed=first.seed)
