"""Rendering: every frame an ordinary generation request through the dispatcher (txt2img for
travel, img2img for 2D and video), one at a time, so other users' jobs take turns with it; each
frame saved as frame_NNNNN.png with its full metadata the moment it is made. Stop and a crash keep
every finished frame; `resume` continues from the last one and, since every input of a frame is
read back from the saved files, gives the same frames as an uninterrupted run.

The stages of a 2D frame: warp the previous frame by this frame's motion -> pull it toward the
end picture (start/end frames, 2D loops) -> colour coherence against the reference frame -> pixel
noise -> img2img at the frame's denoise -> coherence again. With a cadence, the frames between two
diffused ones are both neighbours warped to that frame and cross-faded.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

from studio.animation.colour import cohere
from studio.animation.motion import add_noise, test_pattern, warp
from studio.animation.plan import FramePlan, plan_frames
from studio.animation.settings import AnimationSettings, make_settings
from studio.animation.video import read_video
from studio.outputs.folder import save_as

FRAME = "frame_{:05d}.png"
SETTINGS_FILE = "animation.json"
INPUTS = ("start", "end")          # pictures saved beside the frames, for resume
VIDEO = "input"                    # the video of video mode, copied beside them
KEPT_IN_MEMORY = 12                # frames held for the next frames' warps (a cadence of 8 and the reference)


@dataclass
class Inputs:
    start: np.ndarray | None = None       # 2d/preview: the first frame's picture
    end: np.ndarray | None = None         # 2d/video: what the last `end_blend` frames are pulled toward
    video: list[np.ndarray] = field(default_factory=list)   # video mode: the input frames


@dataclass(frozen=True)
class Frame:
    """One finished frame, for the caller's progress: where it is and how long frames take."""
    index: int
    total: int
    path: Path
    seconds: float                        # this frame's
    eta: float                            # for the frames left, from the frames made in this run


class Animation:
    def __init__(self, studio, settings: AnimationSettings, folder: Path, inputs: Inputs | None = None):
        self.studio, self.settings, self.folder = studio, settings, Path(folder)
        self.inputs = inputs or Inputs()
        self.plan = plan_frames(settings, end_picture=self.inputs.end is not None)
        self.size = self._size()
        self._images: dict[int, np.ndarray] = {}

    # -- files -----------------------------------------------------------------------------------
    @classmethod
    def open(cls, studio, folder: Path) -> "Animation":
        """An animation begun earlier, from its folder (settings, start/end pictures, video frames)."""
        folder = Path(folder)
        settings = make_settings(**json.loads((folder / SETTINGS_FILE).read_text(encoding="utf-8")))
        pictures = {name: np.asarray(Image.open(folder / f"{name}.png").convert("RGB"))
                    for name in INPUTS if (folder / f"{name}.png").exists()}
        clip = next(iter(sorted(folder.glob(f"{VIDEO}.*"))), None)
        video = read_video(clip, settings.video_every, settings.frames)[0] if clip else []
        return cls(studio, settings, folder, Inputs(**pictures, video=video))

    def write_inputs(self, video_file: str | Path | None = None) -> None:
        """The settings, the start/end pictures (lossless) and a copy of the video, for resume."""
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / SETTINGS_FILE).write_text(json.dumps(self.settings.to_json(), indent=1), encoding="utf-8")
        for name in INPUTS:
            if getattr(self.inputs, name) is not None:
                Image.fromarray(getattr(self.inputs, name)).save(self.folder / f"{name}.png")
        if video_file:
            shutil.copyfile(video_file, self.folder / f"{VIDEO}{Path(video_file).suffix.lower() or '.mp4'}")

    def path(self, t: int) -> Path:
        return self.folder / FRAME.format(t)

    def done(self) -> int:
        """Frames finished, counted from frame 0 without a gap."""
        n = 0
        while n < len(self.plan) and self.path(n).exists():
            n += 1
        return n

    def image(self, t: int) -> np.ndarray:
        """Frame t's picture: from the few kept in memory, else read back from its file."""
        if t not in self._images:
            self._keep(t, np.asarray(Image.open(self.path(t)).convert("RGB")))
        return self._images[t]

    def _keep(self, t: int, image: np.ndarray) -> None:
        self._images[t] = image
        while len(self._images) > KEPT_IN_MEMORY:
            del self._images[next(iter(self._images))]

    def _size(self) -> tuple[int, int]:
        s = self.settings
        if s.width and s.height:
            return s.width, s.height
        if s.mode == "video" and self.inputs.video:
            h, w = self.inputs.video[0].shape[:2]
            return max(64, w // 8 * 8), max(64, h // 8 * 8)
        native = self.studio.model_info().native_size
        return s.width or native, s.height or native

    # -- the run ---------------------------------------------------------------------------------
    def frames(self, sequence) -> Iterator[Frame]:
        """Make the frames not made yet, in order; each is saved before it is yielded. Ends early
        (frames kept) when the sequence was stopped."""
        began, made = time.monotonic(), 0
        for plan in self.plan[self.resume_point():]:
            if not plan.diffuse:
                continue
            took = time.monotonic()
            written = self.make(plan, sequence)
            if written is None:
                return
            for index in written:
                made += 1
                per_frame = (time.monotonic() - began) / made
                yield Frame(index, len(self.plan), self.path(index), time.monotonic() - took,
                            per_frame * (len(self.plan) - index - 1))

    def resume_point(self) -> int:
        """The first frame to make: after the last finished diffused frame (in-betweens after it
        are made again with the next one)."""
        done = self.done()
        while done > 0 and not self.plan[done - 1].diffuse:
            done -= 1
        return done

    def make(self, plan: FramePlan, sequence) -> list[int] | None:
        """This diffused frame (and the in-betweens before it); the indices written, or None if stopped."""
        maker = {"travel": self._travel, "2d": self._motion, "video": self._video, "preview": self._preview}
        picture = maker[self.settings.mode](plan, sequence)
        if picture is None:
            return None
        image, parameters, data = picture
        self._save(plan.index, image, parameters, data)
        previous = self._previous_diffused(plan.index)
        between = list(range(previous + 1, plan.index)) if previous is not None else []
        for t in between:
            self._in_between(t, previous, plan.index)
        return [*between, plan.index]

    def _previous_diffused(self, t: int) -> int | None:
        return next((i for i in range(t - 1, -1, -1) if self.plan[i].diffuse), None)

    # -- the modes -------------------------------------------------------------------------------
    def _travel(self, plan: FramePlan, sequence):
        return self._generate("txt2img", plan, sequence)

    def _motion(self, plan: FramePlan, sequence):
        t = plan.index
        if t == 0:
            if self.inputs.start is None:
                return self._generate("txt2img", plan, sequence)
            return self._loopback(plan, self._fit(self.inputs.start), sequence)
        a = self._previous_diffused(t)
        source = self.image(a)
        for i in range(a + 1, t + 1):
            source = warp(source, **self._motion_of(self.plan[i]))
        return self._loopback(plan, source, sequence)

    def _video(self, plan: FramePlan, sequence):
        return self._loopback(plan, self._fit(self.inputs.video[plan.index]), sequence)

    def _preview(self, plan: FramePlan, sequence):
        t = plan.index
        if t == 0:
            first = self._fit(self.inputs.start) if self.inputs.start is not None else test_pattern(*self.size)
            return first, *self._plain(t, "motion preview: the start picture, no diffusion")
        return warp(self.image(t - 1), **self._motion_of(plan)), *self._plain(t, "motion preview: warped, no diffusion")

    def _loopback(self, plan: FramePlan, source: np.ndarray, sequence):
        """Pull toward the end picture, colour coherence, noise, img2img, coherence again."""
        s, end = self.settings, self._end_picture()
        if end is not None and plan.end_pull > 0:
            source = np.rint((1 - plan.end_pull) * source + plan.end_pull * end.astype(np.float64)).astype(np.uint8)
        reference = self._reference(plan.index)
        source = cohere(source, reference, s.coherence, s.coherence_strength)
        source = add_noise(source, plan.noise, plan.seed)
        made = self._generate("img2img", plan, sequence, source)
        if made is None:
            return None
        image, parameters, data = made
        return cohere(image, reference, s.coherence, s.coherence_strength), parameters, data

    def _in_between(self, t: int, a: int, b: int) -> None:
        """A cadence frame: frame a warped forward to t and frame b warped back to t, cross-faded."""
        forward = self.image(a)
        for i in range(a + 1, t + 1):
            forward = warp(forward, **self._motion_of(self.plan[i]))
        backward = self.image(b)
        for i in range(b, t, -1):
            backward = warp(backward, **self._motion_of(self.plan[i], inverse=True))
        u = (t - a) / (b - a)
        mixed = np.rint((1 - u) * forward + u * backward.astype(np.float64)).astype(np.uint8)
        self._save(t, mixed, *self._plain(t, f"in-between of frames {a} and {b} (cadence {self.settings.cadence})"))

    # -- one frame's pieces ----------------------------------------------------------------------
    def _generate(self, mode: str, plan: FramePlan, sequence, source: np.ndarray | None = None):
        """The frame as one ordinary request through the dispatcher; (image, parameters, data)."""
        s, p = self.settings, plan.prompt
        fields = dict(prompt=p.prompt, negative_prompt=p.negative, blend_prompt=p.toward,
                      blend_negative_prompt=p.toward_negative, blend=p.weight, seed=plan.seed,
                      cfg_scale=plan.cfg, steps=plan.steps, scheduler=s.scheduler, width=self.size[0],
                      height=self.size[1], negative_presets=list(s.negative_presets),
                      recipe=[("Animation", s.mode), ("Frame", f"{plan.index + 1}/{len(self.plan)}")])
        if mode == "txt2img":
            fields.update(variation_seed=plan.variation_seed, variation_strength=plan.variation)
        elif int(plan.steps * plan.denoise) < 1:
            return source, *self._plain(plan.index, f"denoise {plan.denoise:g} leaves no step: the warped picture")
        else:
            fields.update(image=Image.fromarray(source), strength=plan.denoise)
        result = sequence.run(self.studio.make_request(mode, **fields))
        if result is None or result.stopped:
            return None
        picture = result.images[0]
        return (np.asarray(picture.image.convert("RGB")), picture.parameters,
                dict(picture.data, animation=self._record(plan.index)))

    def _record(self, t: int) -> dict:
        return {"frame": t, "frames": len(self.plan), "fps": self.settings.fps, "name": self.folder.name,
                "settings": self.settings.to_json()}

    def _plain(self, t: int, how: str) -> tuple[str, dict]:
        """Metadata of a frame made without a generation (in-between, preview, no denoising step)."""
        return (f"Animation {self.settings.mode} frame {t + 1}/{len(self.plan)}: {how}",
                {"animation": self._record(t), "made": how})

    def _save(self, t: int, image: np.ndarray, parameters: str, data: dict) -> None:
        save_as(self.path(t), Image.fromarray(image), parameters, data)
        self._keep(t, image)

    def _fit(self, picture: np.ndarray) -> np.ndarray:
        if picture.shape[1::-1] == self.size:
            return picture
        return np.asarray(Image.fromarray(picture).convert("RGB").resize(self.size, Image.Resampling.LANCZOS))

    def _end_picture(self) -> np.ndarray | None:
        if self.inputs.end is not None:
            return self._fit(self.inputs.end)
        if self.settings.loop == "loop" and self.settings.mode == "2d" and self.path(0).exists():
            return self.image(0)
        return None

    def _reference(self, t: int) -> np.ndarray | None:
        """The colour reference of frame t: frame 0, or the last re-anchoring frame before t."""
        every = self.settings.reanchor_every
        if self.settings.coherence == "none" or t == 0:
            return None
        return self.image((t - 1) // every * every if every else 0)

    def _motion_of(self, plan: FramePlan, inverse: bool = False) -> dict:
        motion = dict(zoom=plan.zoom, angle=plan.angle, tx=plan.tx, ty=plan.ty, cx=plan.cx, cy=plan.cy,
                      border=self.settings.border)
        if inverse:   # p = C + R(-a) (p' - C - t) / zoom, as a forward motion
            c, s = np.cos(np.radians(plan.angle)), np.sin(np.radians(plan.angle))
            motion.update(zoom=1 / plan.zoom, angle=-plan.angle, tx=-(c * plan.tx - s * plan.ty) / plan.zoom,
                          ty=-(s * plan.tx + c * plan.ty) / plan.zoom)
        return motion

    # -- the result ------------------------------------------------------------------------------
    def videos(self) -> dict[str, Path]:
        """The asked-for video files from the finished frames (all of them must be there)."""
        from studio.animation.video import write_videos

        frames = [self.path(t) for t in range(len(self.plan))]
        missing = [p.name for p in frames if not p.exists()]
        if missing:
            raise FileNotFoundError(f"{len(missing)} frame(s) are not made yet, from {missing[0]}")
        s = self.settings
        return write_videos(frames, self.folder, self.folder.name, s.formats, s.fps, s.loop, s.to_json())
