"""2D camera motion: each frame's picture warped from the last (Deforum's 2D mode, re-implemented
from its described behaviour) and the test pattern the motion preview warps without diffusion.

Conventions (per frame, about the centre `(cx, cy)` in fractions of the picture): `zoom` > 1
enlarges the content (the camera moves in), `angle` turns it counter-clockwise in degrees, and
`tx`, `ty` move it right and down in pixels. Motion is cumulative: zoom 1.02 for 20 frames is
1.02**20 = 1.49x. Borders repeat the edge pixels ("replicate") or wrap around ("wrap").
"""

from __future__ import annotations

import math

import numpy as np

BORDERS = {"replicate": "nearest", "wrap": "grid-wrap"}


def warp(image: np.ndarray, zoom: float = 1.0, angle: float = 0.0, tx: float = 0.0, ty: float = 0.0,
         cx: float = 0.5, cy: float = 0.5, border: str = "replicate") -> np.ndarray:
    """The picture (H x W x C uint8) moved by one frame's motion, bilinear."""
    from scipy.ndimage import map_coordinates

    if zoom == 1.0 and angle == 0.0 and tx == 0.0 and ty == 0.0:
        return image.copy()
    h, w = image.shape[:2]
    centre_x, centre_y = cx * (w - 1), cy * (h - 1)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    dx, dy = xs - centre_x - tx, ys - centre_y - ty          # where each output pixel comes from:
    src_x = centre_x + (c * dx - s * dy) / zoom             # the inverse of p' = C + zoom R (p - C) + t
    src_y = centre_y + (s * dx + c * dy) / zoom
    out = np.empty_like(image)
    for ch in range(image.shape[2]):
        plane = map_coordinates(image[..., ch].astype(np.float64), [src_y, src_x], order=1, mode=BORDERS[border])
        out[..., ch] = np.clip(np.rint(plane), 0, 255).astype(np.uint8)
    return out


def test_pattern(width: int, height: int) -> np.ndarray:
    """A grid with a marked centre and an arrow-like corner, so zoom, turn and pan read at a glance."""
    img = np.full((height, width, 3), 235, dtype=np.uint8)
    step = max(4, min(width, height) // 8)
    img[::step, :] = (90, 90, 90)
    img[:, ::step] = (90, 90, 90)
    r = max(2, min(width, height) // 10)
    cy, cx = height // 2, width // 2
    img[cy - r:cy + r, cx - r:cx + r] = (220, 40, 40)               # the centre: red
    img[r:3 * r, r:2 * r] = (40, 80, 220)                           # top-left: blue, taller than wide
    return img


def add_noise(image: np.ndarray, amount: float, seed: int) -> np.ndarray:
    """Deforum's pixel noise before img2img: (1 - amount) x picture + amount x Gaussian noise."""
    if amount <= 0:
        return image
    rng = np.random.default_rng(seed)
    noise = rng.normal(127.5, 127.5 / 2, image.shape)
    return np.clip(np.rint((1 - amount) * image + amount * noise), 0, 255).astype(np.uint8)
