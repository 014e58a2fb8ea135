"""Faces restored in a picture: each face (best first) taken as a square around it — GROW times
its box's longer side, padded with the picture's edge where it runs off — drawn at the
restorer's size, restored, brought back to its size and pasted through a mask that is whole over
the face and fades out over the crop's outer FEATHER, all of it blended by `visibility` (1: the
restorer's face, 0: the picture as it was)."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from PIL import Image

GROW = 1.8           # the crop's side over the face box's longer side (a face, hair and chin)
FEATHER = 0.15       # share of the crop's side over which the pasted face fades out


def restore_faces(picture: np.ndarray, faces: Sequence, restore: Callable[[np.ndarray], np.ndarray],
                  visibility: float) -> np.ndarray:
    """`picture` (RGB uint8) with every face in `faces` (boxes: x0, y0, x1, y1) restored by
    `restore` (an RGB uint8 square face -> the same)."""
    out = picture.astype(np.float32)
    height, width = picture.shape[:2]
    for face in faces:
        left, top, side = square(face, width, height)
        crop = _crop(picture, left, top, side)
        restored = np.asarray(Image.fromarray(restore(crop)).resize((side, side), Image.LANCZOS), np.float32)
        alpha = feather(side)[..., None] * visibility
        _paste(out, restored, alpha, left, top)
    return np.round(out).clip(0, 255).astype(np.uint8)


def square(face, width: int, height: int) -> tuple[int, int, int]:
    """The crop around a face: its left and top (may be outside the picture) and side."""
    side = max(8, round(max(face.x1 - face.x0, face.y1 - face.y0) * GROW))
    cx, cy = (face.x0 + face.x1) / 2, (face.y0 + face.y1) / 2
    return round(cx - side / 2), round(cy - side / 2), side


def feather(side: int) -> np.ndarray:
    """1 inside, falling smoothly to 0 at the crop's edge over FEATHER of its side."""
    edge = max(1.0, side * FEATHER)
    ramp = np.clip((np.minimum(np.arange(side), np.arange(side)[::-1]) + 0.5) / edge, 0, 1)
    ramp = ramp * ramp * (3 - 2 * ramp)                          # smoothstep
    return np.minimum.outer(ramp, ramp).astype(np.float32)


def _crop(picture: np.ndarray, left: int, top: int, side: int) -> np.ndarray:
    height, width = picture.shape[:2]
    pad = ((max(0, -top), max(0, top + side - height)), (max(0, -left), max(0, left + side - width)), (0, 0))
    padded = np.pad(picture, pad, mode="edge")
    y, x = top + pad[0][0], left + pad[1][0]
    return padded[y:y + side, x:x + side]


def _paste(out: np.ndarray, face: np.ndarray, alpha: np.ndarray, left: int, top: int) -> None:
    height, width = out.shape[:2]
    y0, x0, y1, x1 = max(0, top), max(0, left), min(height, top + face.shape[0]), min(width, left + face.shape[1])
    if y1 <= y0 or x1 <= x0:
        return
    part = (slice(y0 - top, y1 - top), slice(x0 - left, x1 - left))
    region = out[y0:y1, x0:x1]
    region += (face[part] - region) * alpha[part]
