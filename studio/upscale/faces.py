"""Restore faces after a tab's own run (A1111's "Restore faces"): each picture the run made goes
through a postprocessing job — an UpscaleRequest at the picture's own size with `faces` set
(studio/face_restoration does the work inside it) — saved under the picture's seed with its
parameters and A1111's `Face restoration` key. The picture as drawn was saved before it, as every
picture is, and comes back after the restored ones."""

from __future__ import annotations

from studio.outputs.metadata import add_keys, strict_json
from studio.requests.face_restoration import FaceRestoration, take_faces
from studio.requests.parsers import array
from studio.requests.upscale import NONE, UpscaleRequest
from studio.requests import GeneratedImage
from studio.serving.sequence import ComposedResult, Sequence, Tool, finish_each


def with_faces(base: Tool | None, mode: str) -> Tool:
    """`base` (None: a plain `mode` generation) followed by face restoration, as one tool."""
    def run(studio, raw: dict, sequence: Sequence, on_progress=None) -> ComposedResult:
        return run_faces(studio, raw, sequence, on_progress, base=base, mode=mode)
    return run


def plan_faces(studio, raw: dict) -> FaceRestoration | None:
    """Face restoration's settings from `raw`, checked and its files found (None when it is off)."""
    return take_faces(dict(raw), studio.names("face_restorers"), studio.names("detectors"), studio.limits)


def run_faces(studio, raw: dict, sequence: Sequence, on_progress=None, *, base: Tool | None = None,
              mode: str = "txt2img") -> ComposedResult:
    raw = dict(raw)
    settings = take_faces(raw, studio.names("face_restorers"), studio.names("detectors"), studio.limits)

    def finish(picture: GeneratedImage):
        keys = settings.recipe()
        done = sequence.run(UpscaleRequest(
            image=array(picture.image.convert("RGB")), size=picture.image.size, upscaler=NONE, faces=settings,
            kind=None, seed=picture.seed, parameters=add_keys(picture.parameters, keys),
            data=strict_json({**picture.data, "face_restoration": keys})))
        if done is None or done.stopped or not done.images:
            return None, []
        return done.images[0], done.notes
    return finish_each(studio, raw, sequence, on_progress, base, mode, "Restore faces", finish)
