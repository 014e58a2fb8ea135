"""A unit's control map at the size of the picture being made: the picture at the preprocessor's
resolution, the preprocessor, then the map fitted to the target by the unit's resize mode
(A1111's three: stretch, cover and crop, fit and pad).

Pixel perfect picks the preprocessor's resolution from the picture and the target (so that one
pixel of the map is one pixel of the result); the rule is sd-webui-controlnet's, as its users know it.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from studio.control.annotators import Annotator
from studio.control.preprocessors import find, setting
from studio.errors import InvalidRequest
from studio.fields import bounded
from studio.requests.control import PROCESSOR_RES_RANGE, RESIZE_MODES, ControlUnit


def _cv2():
    import cv2
    return cv2


def _resize(x: np.ndarray, width: int, height: int) -> np.ndarray:
    cv2 = _cv2()
    smaller = width * height < x.shape[0] * x.shape[1]
    return cv2.resize(x, (width, height), interpolation=cv2.INTER_AREA if smaller else cv2.INTER_LINEAR)


def pixel_perfect_resolution(picture: tuple[int, int], target: tuple[int, int], resize_mode: str) -> int:
    """The preprocessor resolution at which the map's short side, fitted, is one pixel per pixel."""
    (w, h), (tw, th) = picture, target
    k = (min if resize_mode == "resize and fill" else max)(th / h, tw / w)
    return max(64, round(k * min(w, h)))


def at_resolution(x: np.ndarray, short_side: int) -> np.ndarray:
    """`x` scaled so that its short side is `short_side`."""
    h, w = x.shape[:2]
    k = short_side / min(h, w)
    return _resize(x, max(8, round(w * k)), max(8, round(h * k)))


def fit(x: np.ndarray, width: int, height: int, resize_mode: str, fill: float = 0.0) -> np.ndarray:
    """A map at (width, height): stretched, scaled to cover and cropped in the middle, or scaled to
    fit and padded with `fill`."""
    h, w = x.shape[:2]
    if resize_mode == "just resize":
        return _resize(x, width, height)
    k = (max if resize_mode == "crop and resize" else min)(width / w, height / h)
    sw, sh = max(1, round(w * k)), max(1, round(h * k))
    scaled = _resize(x, sw, sh)
    if scaled.ndim == 2:
        scaled = scaled[..., None]
    out = np.full((height, width, scaled.shape[2]), fill, dtype=np.float32)
    top, left = (height - sh) // 2, (width - sw) // 2
    src = scaled[max(0, -top):max(0, -top) + min(sh, height), max(0, -left):max(0, -left) + min(sw, width)]
    out[max(0, top):max(0, top) + src.shape[0], max(0, left):max(0, left) + src.shape[1]] = src
    return out


Annotate = Callable[[Annotator, np.ndarray], np.ndarray]     # an annotator's map of a picture


def control_map(unit: ControlUnit, picture: np.ndarray, mask: np.ndarray | None, width: int, height: int,
                seed: int, annotate: Annotate | None = None) -> np.ndarray:
    """The map for one unit (float32 HxWx3) at the target size; `annotate` runs the preprocessors
    that need weights (studio/control/annotators.py)."""
    p = find(unit.module)
    a, b = setting(p, "a", unit.threshold_a), setting(p, "b", unit.threshold_b)
    x, m = picture, mask
    if m is not None and m.shape[:2] != x.shape[:2]:
        m = _resize(m, x.shape[1], x.shape[0])
    if p.resolution:
        res = (pixel_perfect_resolution((x.shape[1], x.shape[0]), (width, height), unit.resize_mode)
               if unit.pixel_perfect else unit.processor_res)
        x = at_resolution(x, res)
        m = None if m is None else _resize(m, x.shape[1], x.shape[0])
    if p.annotator is not None:
        if annotate is None:
            raise InvalidRequest(f"The {p.name} preprocessor needs a models folder (models/annotators).")
        out = annotate(p.annotator, np.ascontiguousarray(x))
    else:
        out = p.run(np.ascontiguousarray(x), a, b, m, seed)
    return fit(out, width, height, unit.resize_mode, fill=-1.0 if p.name == "inpaint" else 0.0)


def shown(map_: np.ndarray) -> np.ndarray:
    """A map as a picture to look at (RGB uint8); the inpaint map's -1 as black."""
    return (np.clip(map_, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def preview_map(module: str, picture: np.ndarray, *, processor_res: int = 512, threshold_a: float = -1,
                threshold_b: float = -1, mask: np.ndarray | None = None, width: int = 0, height: int = 0,
                resize_mode: str = "crop and resize", pixel_perfect: bool = False, seed: int = 0,
                annotate: Annotate | None = None) -> np.ndarray:
    """The map a unit with these settings would use, as a picture (RGB uint8): at width x height,
    or (0) at the preprocessor's resolution, as sd-webui-controlnet's detect answers."""
    p = find(module)
    res = int(bounded("Processor resolution", processor_res, *PROCESSOR_RES_RANGE, integer=True))
    if resize_mode not in [name for name, _, _ in RESIZE_MODES]:
        raise InvalidRequest(f"Unknown resize mode {resize_mode!r}.")
    if not (width and height):
        h, w = picture.shape[:2]
        k = res / min(h, w) if p.resolution else 1.0
        width, height = max(8, round(w * k)), max(8, round(h * k))
    unit = ControlUnit(model="", module=p.name, processor_res=res, threshold_a=threshold_a, threshold_b=threshold_b,
                       resize_mode=resize_mode, pixel_perfect=pixel_perfect)
    return shown(control_map(unit, picture, mask, width, height, seed, annotate))
