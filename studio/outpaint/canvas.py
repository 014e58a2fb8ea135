"""Outpainting: the picture on a bigger canvas, the new strips filled (edge colours, a mirror
image, or noise around the edge colours) and an inpainting mask over them plus a blend band
reaching into the picture. Mask blur is off, so the composite keeps every original pixel outside
the band exactly as it was; inside the band the mask fades, so the seam blends."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from studio.errors import InvalidRequest
from studio.inputs import load_image
from studio.fields import bounded, number
from studio.requests import MAX_SEED, GenerationRequest

FILLS = ("edge", "mirror", "noise")
MAX_EXTEND = 1024
BAND_RANGE = (0, 128)


@dataclass(frozen=True)
class Extend:
    left: int
    right: int
    up: int
    down: int
    fill: str = "edge"
    band: int = 16          # pixels of the picture the mask fades across

    def recipe(self) -> tuple[tuple[str, Any], ...]:
        return (("Outpaint pixels", f"left {self.left} right {self.right} up {self.up} down {self.down}"),
                ("Outpaint fill", self.fill), ("Outpaint band", self.band))


def read_extend(left: Any, right: Any, up: Any, down: Any, fill: Any = "edge", band: Any = 16) -> Extend:
    sides = []
    for label, value in (("Left", left), ("Right", right), ("Up", up), ("Down", down)):
        pixels = bounded(f"{label} (pixels to add)", value or 0, 0, MAX_EXTEND, integer=True)
        sides.append(pixels)
    if not any(sides):
        raise InvalidRequest("Outpainting needs pixels to add on at least one side.")
    if fill not in FILLS:
        raise InvalidRequest(f"Fill must be one of {', '.join(FILLS)}, got {fill!r}.")
    band = bounded("Blend band", band if band is not None else 16, *BAND_RANGE, integer=True)
    return Extend(*sides, fill=fill, band=band)


def extend_canvas(image: Image.Image, ext: Extend, seed: int) -> tuple[Image.Image, Image.Image]:
    """(the bigger canvas, its mask: 255 over the new strips, fading to 0 across the band)."""
    pixels = np.asarray(image.convert("RGB"))
    pad = ((ext.up, ext.down), (ext.left, ext.right), (0, 0))
    if ext.fill == "mirror":
        canvas = np.pad(pixels, pad, mode="symmetric")
    else:
        canvas = np.pad(pixels, pad, mode="edge")
        if ext.fill == "noise":
            rng = np.random.default_rng(seed)
            noisy = canvas.astype(np.float32) + rng.normal(0, 48, canvas.shape)
            new = _new_area(pixels.shape[:2], ext)
            canvas = np.where(new[..., None], np.clip(noisy, 0, 255), canvas).astype(np.uint8)
    return Image.fromarray(canvas), Image.fromarray(_mask(pixels.shape[:2], ext))


def _new_area(size: tuple[int, int], ext: Extend) -> np.ndarray:
    h, w = size
    area = np.ones((h + ext.up + ext.down, w + ext.left + ext.right), bool)
    area[ext.up:ext.up + h, ext.left:ext.left + w] = False
    return area


def _mask(size: tuple[int, int], ext: Extend) -> np.ndarray:
    """1 over the new area; inside the picture, 1 - distance/band from each extended edge."""
    h, w = size
    rows = np.arange(h)[:, None].astype(np.float32)
    cols = np.arange(w)[None, :].astype(np.float32)
    inside = np.zeros((h, w), np.float32)
    band = max(ext.band, 1e-6)
    for added, distance in ((ext.up, rows), (ext.down, h - 1 - rows), (ext.left, cols), (ext.right, w - 1 - cols)):
        if added and ext.band:
            inside = np.maximum(inside, np.clip(1 - distance / band, 0, 1))
    mask = _new_area(size, ext).astype(np.float32)
    mask[ext.up:ext.up + h, ext.left:ext.left + w] = inside
    return np.round(mask * 255).astype(np.uint8)


def outpaint_request(studio, raw: dict, ext: Extend) -> GenerationRequest:
    """The one inpainting request: the canvas, its mask, no mask blur, the tab's other fields; a
    random seed is drawn here so the noise fill and the picture share it."""
    raw = dict(raw)
    image = load_image("Picture", raw.pop("image", None))
    seed = number("Seed", raw.get("seed", -1), integer=True)
    if seed == -1:
        seed = secrets.randbelow(MAX_SEED + 1)
    canvas, mask = extend_canvas(image, ext, seed)
    limits = studio.limits
    if max(canvas.size) > limits.max_side or canvas.width * canvas.height > limits.max_pixels:
        raise InvalidRequest(f"The canvas would be {canvas.width}x{canvas.height}; this studio draws at most "
                             f"{limits.max_side} pixels a side and {limits.max_pixels:,} in all.")
    raw.update(image=canvas, mask=mask, seed=seed, mask_blur=0, only_masked=False, width=0, height=0,
               recipe=ext.recipe())
    return studio.make_request("inpaint", **raw)
