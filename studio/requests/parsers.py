"""The request fields read by functions of their own (`Custom` kinds): the input picture and mask,
LoRAs, reference images, a composing tool's recipe and latents to start from. Each takes
(label, raw value, Context) and returns the trusted value or raises InvalidRequest."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from studio.errors import InvalidRequest
from studio.fields import Context, empty, in_range, number, text
from studio.inputs import load_image, mask_from_image

LORA_WEIGHT_RANGE = (-4.0, 4.0)
MAX_LORAS = 8
MAX_REFERENCES = 4
MAX_RECIPE = 16
# painted regions: each colour a region, in this order (what the Regional prompts painter offers)
REGION_COLOURS: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("red", (255, 0, 0)), ("green", (0, 255, 0)), ("blue", (0, 0, 255)), ("yellow", (255, 255, 0)),
    ("magenta", (255, 0, 255)), ("cyan", (0, 255, 255)), ("orange", (255, 128, 0)), ("purple", (128, 0, 255)))


def array(image: Image.Image | None) -> np.ndarray | None:
    """A decoded image as a read-only uint8 array (RGB, or L for a mask)."""
    if image is None:
        return None
    out = np.array(image, dtype=np.uint8)
    out.flags.writeable = False
    return out


def input_image(label: str, value: Any, ctx: Context) -> np.ndarray:
    """The img2img / inpainting input: decoded, within this studio's size, at least 8x8."""
    image = load_image(label, value)
    if image.width * image.height > ctx.limits.max_pixels * 4:
        raise InvalidRequest(f"{label} is {image.width}x{image.height}; too large for this studio.")
    if min(image.size) < 8:
        raise InvalidRequest(f"{label} is {image.width}x{image.height}; it must be at least 8x8.")
    return array(image)


def mask(label: str, value: Any, ctx: Context) -> np.ndarray:
    """An inpainting mask (white or opaque = repaint), not empty. Its size is checked against the
    input picture's by the boundary (boundary.py), which sees both."""
    image = mask_from_image(label, value)
    if image.getextrema()[1] == 0:
        raise InvalidRequest("The mask is empty: paint over the area to repaint, or upload a mask "
                             "(white = repaint).")
    return array(image)


def regions_mask(label: str, value: Any, ctx: Context) -> np.ndarray | None:
    """Painted regions: a picture whose strokes in REGION_COLOURS mark regions 1, 2, ... (each pixel
    the nearest of them); black or clear is unpainted (0). A label map, HxW uint8; None when
    nothing is painted. Gradio's ImageEditor hands {"composite": picture, ...}."""
    if isinstance(value, dict):
        value = value.get("composite")
    if empty(value):
        return None
    rgba = np.asarray(load_image(label, value, mode="keep").convert("RGBA"), dtype=np.int32)
    painted = (rgba[..., 3] > 127) & (rgba[..., :3].max(axis=2) > 64)
    if not painted.any():
        return None
    palette = np.array([c for _, c in REGION_COLOURS], dtype=np.int32)
    nearest = ((rgba[..., None, :3] - palette) ** 2).sum(axis=-1).argmin(axis=-1) + 1
    out = np.where(painted, nearest, 0).astype(np.uint8)
    out.flags.writeable = False
    return out


def painting(labels: np.ndarray) -> np.ndarray:
    """The painted regions' picture again (RGB, black unpainted): what regions_mask reads back."""
    palette = np.array([(0, 0, 0), *(c for _, c in REGION_COLOURS)], dtype=np.uint8)
    return palette[np.asarray(labels)]


def loras(label: str, value: Any, ctx: Context) -> tuple[tuple[str, float], ...]:
    """LoRAs as [[name, weight], ...] (a table), {"data": rows} (Gradio's Dataframe), or
    "name:weight" strings; weight 1 when left out. Empty rows are skipped."""
    known = ctx.known.get("loras")
    if empty(value):
        return ()
    if isinstance(value, dict):
        value = value.get("data", [])
    if isinstance(value, str):
        value = [v for v in value.split(",")]
    if not isinstance(value, (list, tuple)):
        raise InvalidRequest("LoRAs must be a list of [name, weight] rows.")
    out: list[tuple[str, float]] = []
    for row in value:
        if isinstance(row, str):
            name, _, weight = row.strip().rpartition(":") if ":" in row else (row.strip(), "", 1.0)
            row = [name, weight]
        if not isinstance(row, (list, tuple)) or not 1 <= len(row) <= 2:
            raise InvalidRequest(f"LoRA row {row!r}: expected [name, weight].")
        name = row[0]
        if name is None or (isinstance(name, str) and not name.strip()):
            continue
        if not isinstance(name, str):
            raise InvalidRequest(f"LoRA name must be text, got {name!r}.")
        name = name.strip()
        weight = number(f"Weight of LoRA {name!r}", row[1] if len(row) > 1 and row[1] not in ("", None)
                        else 1.0, integer=False)
        in_range(f"Weight of LoRA {name!r}", weight, *LORA_WEIGHT_RANGE)
        if known is not None and name not in known:
            raise InvalidRequest(f"Unknown LoRA {name!r}: put it in models/loras and press refresh "
                                 f"(available: {', '.join(known) or 'none'}).")
        if any(name == n for n, _ in out):
            raise InvalidRequest(f"LoRA {name!r} is listed twice.")
        out.append((name, float(weight)))
    if len(out) > MAX_LORAS:
        raise InvalidRequest(f"{len(out)} LoRAs; at most {MAX_LORAS} at once.")
    return tuple(out)


def _reference(i: int, item: Any) -> tuple[str | None, Any]:
    """(name, image) of one reference: a {"name", "image"} dict, a (name, image) pair or a bare image."""
    if isinstance(item, dict):
        name = item.get("name") if item.get("name") is not None else item.get("orig_name")
        return name, item.get("image") if item.get("image") is not None else item.get("path")
    if isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[0], str):
        return item[0], item[1]
    return None, item


def references(label: str, value: Any, ctx: Context) -> tuple:
    """Reference images as (name, image array): from file paths (the name is the file name without
    extension), {"name", "image"} dicts, (name, image) pairs or bare images (image1, image2...)."""
    if empty(value):
        return ()
    if not isinstance(value, (list, tuple)):
        value = [value]
    out: list[tuple[str, Image.Image]] = []
    for i, item in enumerate(value, 1):
        name, img = _reference(i, item)
        if not isinstance(name, str):
            name = None
        if name is None and isinstance(img, (str, Path)):
            name = Path(str(img)).stem
        name = (str(name).strip() if name else f"image{i}")
        name = Path(name).stem if "." in name else name
        image = load_image(f"Reference image {name!r}", img)
        if image.width * image.height > ctx.limits.max_pixels * 4:
            raise InvalidRequest(f"Reference image {name!r} is {image.width}x{image.height}; too large.")
        if any(n == name for n, _ in out):
            name = f"{name}{i}"
        out.append((name, image))
    if len(out) > MAX_REFERENCES:
        raise InvalidRequest(f"{len(out)} reference images; at most {MAX_REFERENCES}.")
    return tuple((name, array(image)) for name, image in out)


def recipe(label: str, value: Any, ctx: Context) -> tuple[tuple[str, Any], ...]:
    """(key, value) pairs for the infotext: keys are plain words, values text or numbers."""
    if empty(value):
        return ()
    pairs = list(value.items()) if isinstance(value, dict) else value
    if not isinstance(pairs, (list, tuple)) or len(pairs) > MAX_RECIPE:
        raise InvalidRequest(f"Recipe must be at most {MAX_RECIPE} (key, value) pairs.")
    out = []
    for pair in pairs:
        if (not isinstance(pair, (list, tuple)) or len(pair) != 2 or not isinstance(pair[0], str)
                or not pair[0].replace(" ", "").isalnum() or len(pair[0]) > 40
                or isinstance(pair[1], bool) or not isinstance(pair[1], (str, int, float))
                or isinstance(pair[1], float) and not math.isfinite(pair[1])):
            raise InvalidRequest(f"Recipe entry {pair!r}: expected (words, text or number).")
        out.append((pair[0], text("Recipe value", pair[1]) if isinstance(pair[1], str) else pair[1]))
    return tuple(out)


def latents(label: str, value: Any, ctx: Context) -> np.ndarray | None:
    """Latents to start from (img2img: 1 x C x h x w, finite floats, within the studio's size at 8
    pixels a latent)."""
    if value is None:
        return None
    if ctx.mode != "img2img":
        raise InvalidRequest("Latents to start from are for image to image.")
    if (not isinstance(value, np.ndarray) or value.dtype.kind != "f" or value.ndim != 4
            or value.shape[0] != 1 or not 1 <= value.shape[1] <= 16
            or value.shape[2] * value.shape[3] * 64 > ctx.limits.max_pixels or not np.isfinite(value).all()):
        raise InvalidRequest("Latents must be a finite float array of shape (1, channels, height/8, width/8) "
                             "within this studio's size.")
    out = np.array(value, dtype=np.float32)
    out.flags.writeable = False
    return out
