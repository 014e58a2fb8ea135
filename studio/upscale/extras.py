"""Upscaling a picture on its own (A1111's Extras): by a factor or to a size, optionally blended
with a second upscaler, saved as NNNNN-upscale.png with the source's parameters kept and A1111's
`Postprocess` keys added, like A1111 writes them."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from studio.errors import InvalidRequest
from studio.inputs import load_image
from studio.outputs.metadata import PARAMETERS_KEY, format_parameters, parse_parameters, strict_json
from studio.fields import bounded, in_range, number
from studio.upscale.upscalers import target_size, upscale, upscaler_names

SCALE_RANGE = (1.0, 8.0)
NONE = "None"


@dataclass
class Upscaled:
    path: Path
    image: Image.Image
    parameters: str
    data: dict[str, Any]


@dataclass(frozen=True)
class UpscaleSettings:
    upscaler: str
    scale: float | None              # by a factor ...
    width: int                       # ... or to a size (0 = follow the other side)
    height: int
    crop: bool = False               # to a size: fill it and cut the overflow (else stretch)
    second: str = NONE               # a second upscaler blended in
    second_visibility: float = 0.0


def read_settings(studio, upscaler: Any, scale: Any = 2.0, width: Any = 0, height: Any = 0, crop: Any = False,
                  second: Any = NONE, second_visibility: Any = 0.0) -> UpscaleSettings:
    """The boundary: names from the list, numbers in range."""
    names = upscaler_names(studio.library)
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
    return UpscaleSettings(upscaler, value, width, height, bool(crop), second, visibility)


def upscale_picture(studio, picture: Any, settings: UpscaleSettings) -> Upscaled:
    """Upscale, then save (the metadata first read from the source) and return what was saved."""
    source = load_image("Picture", picture, mode="keep")
    parameters = source.info.get(PARAMETERS_KEY) if isinstance(source.info.get(PARAMETERS_KEY), str) else ""
    rgb = source.convert("RGB")
    size = target_size(rgb, settings.scale, settings.width, settings.height)
    if size[0] * size[1] > studio.limits.max_pixels * 4:
        raise InvalidRequest(f"{size[0]}x{size[1]} is more than this studio upscales to "
                             f"({studio.limits.max_pixels * 4:,} pixels).")
    result = _run(studio, rgb, size, settings)
    text, data = _record(rgb, parameters, size, settings)
    path = studio.outputs.save(result, text, data, seed=0, kind="upscale")
    return Upscaled(path, result, text, data)


def _run(studio, image: Image.Image, size: tuple[int, int], s: UpscaleSettings) -> Image.Image:
    drawn = _fill(image, size) if s.crop and s.scale is None else size

    def one(name: str) -> Image.Image:
        out = image if name == NONE else upscale(image, drawn, name, studio.library, studio.manager)
        return out if out.size == drawn else out.resize(drawn, Image.LANCZOS)

    result = one(s.upscaler)
    if s.second != NONE and s.second_visibility > 0:
        result = Image.blend(result, one(s.second), s.second_visibility)
    if drawn != size:
        result = ImageOps.fit(result, size, Image.LANCZOS)       # the centre, cut to the asked size
    return result


def _fill(image: Image.Image, size: tuple[int, int]) -> tuple[int, int]:
    """The size that covers `size` with the image's aspect ratio (cropped afterwards)."""
    ratio = max(size[0] / image.width, size[1] / image.height)
    return max(size[0], round(image.width * ratio)), max(size[1], round(image.height * ratio))


def _record(source: Image.Image, parameters: str, size: tuple[int, int], s: UpscaleSettings) -> tuple[str, dict]:
    keys: dict[str, Any] = ({"Postprocess upscale by": s.scale} if s.scale is not None
                            else {"Postprocess upscale to": f"{size[0]}x{size[1]}", "Postprocess crop to fit": s.crop})
    keys["Postprocess upscaler"] = s.upscaler
    if s.second != NONE and s.second_visibility > 0:
        keys.update({"Postprocess upscaler 2": s.second, "Postprocess upscaler 2 visibility": s.second_visibility})
    if parameters:
        prompt, negative, settings = parse_parameters(parameters)
        version = settings.pop("Version", None)
        text = format_parameters(prompt, negative, {**settings, **keys, "Version": version})
    else:       # no generation to keep: the keys line alone, as A1111 writes an upscaled photo
        text = format_parameters("", "", keys).rsplit("\n", 1)[-1]
    data = strict_json({"format": 1, "kind": "upscale", "postprocess": keys, "width": size[0], "height": size[1],
                        "source": {"width": source.width, "height": source.height,
                                   "sha256": hashlib.sha256(np.asarray(source).tobytes()).hexdigest()},
                        "source_parameters": parameters})
    return text, data
