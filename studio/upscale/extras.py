"""Upscaling a picture on its own (A1111's Extras): by a factor or to a size, optionally blended
with a second upscaler, its faces optionally restored (studio/face_restoration), saved as NNNNN-upscale.png with the source's parameters kept and A1111's
`Postprocess` keys added, like A1111 writes them. The upscale is a job of the dispatcher (an
UpscaleRequest), so it waits its turn and runs where the generations run."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from studio.errors import GenerationStopped, InvalidRequest
from studio.inputs import load_image
from studio.outputs.metadata import PARAMETERS_KEY, add_keys, format_parameters, strict_json
from studio.fields import bounded, in_range, number
from studio.models.upscalers import target_size, upscaler_names
from studio.requests.face_restoration import FaceRestoration, take_faces
from studio.requests.parsers import array
from studio.requests.upscale import NONE, UpscaleRequest

SCALE_RANGE = (1.0, 8.0)


@dataclass
class Upscaled:
    path: Path
    image: Image.Image
    parameters: str
    data: dict[str, Any]
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class UpscaleSettings:
    upscaler: str
    scale: float | None              # by a factor ...
    width: int                       # ... or to a size (0 = follow the other side)
    height: int
    crop: bool = False               # to a size: fill it and cut the overflow (else stretch)
    second: str = NONE               # a second upscaler blended in
    second_visibility: float = 0.0
    faces: FaceRestoration | None = None     # then faces restored


def read_settings(studio, upscaler: Any, scale: Any = 2.0, width: Any = 0, height: Any = 0, crop: Any = False,
                  second: Any = NONE, second_visibility: Any = 0.0, face_restorer: Any = NONE,
                  face_visibility: Any = 1.0, codeformer_weight: Any = 0.5) -> UpscaleSettings:
    """The boundary: names from the list, numbers in range (a face restorer: a file's name, or
    NONE)."""
    names = upscaler_names(studio.names("upscalers"))
    for label, name in (("Upscaler", upscaler), ("Second upscaler", second)):
        if name not in (NONE, *names):
            raise InvalidRequest(f"Unknown {label.lower()} {name!r}. Known: {', '.join(names)}.")
    width = number("Width", width or 0, integer=True)
    height = number("Height", height or 0, integer=True)
    for label, side in (("Width", width), ("Height", height)):
        if side:
            in_range(label, side, 8, studio.limits.max_side * 4)
    value = None
    if not (width or height):
        value = bounded("Upscale by", scale, *SCALE_RANGE, integer=False)
    visibility = bounded("Second upscaler visibility", second_visibility or 0, 0.0, 1.0, integer=False)
    faces = None
    if face_restorer not in (None, "", NONE):
        faces = take_faces({"restore_faces": True, "face_restorer": face_restorer, "face_visibility": face_visibility,
                            "codeformer_weight": codeformer_weight},
                           studio.names("face_restorers"), studio.names("detectors"), studio.limits)
    return UpscaleSettings(upscaler, value, width, height, bool(crop), second, visibility, faces)


def upscale_picture(studio, picture: Any, settings: UpscaleSettings, *, user: str = "local",
                    session: str | None = None) -> Upscaled:
    """Upscale (a job in the dispatcher's queue, for `user`), saved with the source's metadata
    first read from it; returns what was saved."""
    source = load_image("Picture", picture, mode="keep")
    parameters = source.info.get(PARAMETERS_KEY) if isinstance(source.info.get(PARAMETERS_KEY), str) else ""
    rgb = source.convert("RGB")
    size = target_size(rgb, settings.scale, settings.width, settings.height)
    if size[0] * size[1] > studio.limits.max_pixels * 4:
        raise InvalidRequest(f"{size[0]}x{size[1]} is more than this studio upscales to "
                             f"({studio.limits.max_pixels * 4:,} pixels).")
    text, data = _record(rgb, parameters, size, settings)
    request = UpscaleRequest(image=array(rgb), size=size, upscaler=settings.upscaler, second=settings.second,
                             second_visibility=settings.second_visibility,
                             crop=settings.crop and settings.scale is None, faces=settings.faces,
                             parameters=text, data=data)
    result = studio.submit(request, user=user, session=session).result()
    if result.stopped or not result.images:
        raise GenerationStopped("Stopped before the picture was upscaled.")
    done = result.images[0]
    return Upscaled(done.path, done.image, done.parameters, done.data, list(result.notes))


def _record(source: Image.Image, parameters: str, size: tuple[int, int], s: UpscaleSettings) -> tuple[str, dict]:
    keys: dict[str, Any] = ({"Postprocess upscale by": s.scale} if s.scale is not None
                            else {"Postprocess upscale to": f"{size[0]}x{size[1]}", "Postprocess crop to fit": s.crop})
    keys["Postprocess upscaler"] = s.upscaler
    if s.second != NONE and s.second_visibility > 0:
        keys.update({"Postprocess upscaler 2": s.second, "Postprocess upscaler 2 visibility": s.second_visibility})
    if s.faces is not None:
        keys.update(s.faces.recipe())
    if parameters:
        text = add_keys(parameters, keys)
    else:       # no generation to keep: the keys line alone, as A1111 writes an upscaled photo
        text = format_parameters("", "", keys).rsplit("\n", 1)[-1]
    data = strict_json({"format": 1, "kind": "upscale", "postprocess": keys, "width": size[0], "height": size[1],
                        "source": {"width": source.width, "height": source.height,
                                   "sha256": hashlib.sha256(np.asarray(source).tobytes()).hexdigest()},
                        "source_parameters": parameters})
    return text, data
