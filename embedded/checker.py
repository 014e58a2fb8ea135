"""A pixel checker: does a picture show the single-object scene it was prompted with?

Scores prompt-following of the embedded model without a learned judge: the background is read
from the border, the object is what differs from it, and colour, 3x3 cell and shape are read
from that object's pixels. It is calibrated on the world's own renderings (which it reads
perfectly) and tolerates blur and noise, since generated pictures are imperfect.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from PIL import Image
from scipy import ndimage
from scipy.spatial import ConvexHull

from .world import COLOURS, POSITIONS, Scene

__all__ = ["Score", "check", "score_many", "nearest_colour", "shape_features", "classify_shape"]

_NAMES: tuple[str, ...] = tuple(COLOURS)
_PALETTE = np.array([COLOURS[n] for n in _NAMES], dtype=np.float32)
# 3x3 cell (row, col) -> position name, from the world's own cell centres.
_CELLS: dict[tuple[int, int], str] = {
    (int(cy * 3), int(cx * 3)): name for name, (cx, cy) in POSITIONS.items()}

MIN_CONTRAST = 40.0   # an object must differ from the background by at least this (RGB distance)
MIN_AREA_FRAC = 0.004  # smaller blobs are noise, not an object (~16 px at 64 px)
MAX_AREA_FRAC = 0.5   # the largest world object covers ~13% of the picture
MIN_PURITY = 0.5      # share of the object's core pixels nearest to its colour name
WORK_SIZE = 256        # shapes are measured on a map upsampled to about this many pixels


@dataclass
class Score:
    """Per-axis verdicts for one picture, and what the checker read from it (`found`)."""

    colour: bool
    background: bool
    position: bool
    shape: bool
    found: dict = field(default_factory=dict)

    @property
    def all(self) -> bool:
        """Whether every axis matched."""
        return self.colour and self.background and self.position and self.shape


def _nearest_index(pixels: np.ndarray, palette: np.ndarray = _PALETTE) -> np.ndarray:
    """Palette index of the nearest named colour for each of N x 3 pixels."""
    d = ((pixels[:, None, :].astype(np.float32) - palette[None]) ** 2).sum(axis=2)
    return d.argmin(axis=1)


def nearest_colour(rgb: np.ndarray, names: tuple[str, ...] = _NAMES, palette: np.ndarray = _PALETTE) -> str:
    """Name of the palette colour nearest to an RGB triple."""
    return names[int(_nearest_index(np.asarray(rgb, dtype=np.float32).reshape(1, 3), palette)[0])]


def _to_array(image: Image.Image | np.ndarray) -> np.ndarray:
    """Float32 H x W x 3 RGB array from a PIL image or a uint8/float array."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.float32)
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    arr = arr[..., :3].astype(np.float32)
    if arr.max(initial=0.0) <= 1.0 and np.asarray(image).dtype.kind == "f":
        arr = arr * 255.0  # float images in [0, 1]
    return arr


_ANGLES = np.linspace(0.0, 2.0 * np.pi, 256, endpoint=False)


def radial_harmonics(filled: np.ndarray, cx: float, cy: float) -> np.ndarray:
    """Fourier amplitudes 0..7 of the blob's outline radius r(theta) around its centroid,
    relative to the mean radius. A circle is flat, a square has a 4-fold, a triangle a
    3-fold and a five-pointed star a 5-fold ripple; blur shrinks these ripples only mildly,
    so they tell shapes apart where corner-based measures have melted away."""
    hgt, wid = filled.shape
    steps = np.arange(0.0, float(np.hypot(hgt, wid)), 0.5)
    xs = np.rint(cx + np.cos(_ANGLES)[:, None] * steps[None]).astype(np.intp)
    ys = np.rint(cy + np.sin(_ANGLES)[:, None] * steps[None]).astype(np.intp)
    inside = (xs >= 0) & (ys >= 0) & (xs < wid) & (ys < hgt)
    on = np.zeros(xs.shape, dtype=bool)
    on[inside] = filled[ys[inside], xs[inside]]
    # Outermost sample still on the blob, along each ray.
    last = on.shape[1] - 1 - np.argmax(on[:, ::-1], axis=1)
    radius = np.where(on.any(axis=1), steps[last], 0.0)
    mean = float(radius.mean())
    if mean <= 0:
        return np.zeros(8)
    return (np.abs(np.fft.rfft(radius)) * 2.0 / (len(radius) * mean))[:8]


def shape_features(mask: np.ndarray) -> dict[str, float]:
    """Scale-free features of one blob: holes (enclosed background / filled area), the
    3-, 4- and 5-fold ripples of its outline (h3, h4, h5), and, for inspection, extent
    (area / bbox), solidity (area / convex hull), top (area share in the upper half of the
    bbox) and aspect (w / h)."""
    filled = ndimage.binary_fill_holes(mask)
    area = float(filled.sum())
    ys, xs = np.nonzero(filled)
    y0, y1 = int(ys.min()), int(ys.max()) + 1
    h, w = float(y1 - y0), float(xs.max() - xs.min() + 1)
    cx, cy = float(xs.mean()), float(ys.mean())
    # Only boundary pixels can be hull vertices; their square corners make the hull
    # comparable with the pixel count.
    eys, exs = np.nonzero(filled & ~ndimage.binary_erosion(filled))
    corners = np.concatenate([np.stack([exs + dx, eys + dy], axis=1)
                              for dx in (0, 1) for dy in (0, 1)]).astype(np.float64)
    try:
        hull = float(ConvexHull(corners).volume)  # in 2-D, "volume" is the area
    except Exception:  # degenerate (a line of pixels)
        hull = area
    harm = radial_harmonics(filled, cx, cy)
    return {
        "holes": float(filled.sum() - mask.sum()) / area,
        "h3": float(harm[3]),
        "h4": float(harm[4]),
        "h5": float(harm[5]),
        "extent": area / (h * w),
        "solidity": min(area / hull, 1.0) if hull > 0 else 1.0,
        "top": float((ys < (y0 + y1) / 2).mean()),
        "aspect": w / h,
        "cx": cx,  # centroid of the filled blob, in the mask's pixels
        "cy": cy,
    }


# Ripple needed before a blob counts as that shape; clean renders give about 0.27 (h3,
# triangle), 0.14 (h4, square) and 0.27 (h5, star), circles stay under ~0.05 even blurred.
RIPPLE = {"triangle": ("h3", 0.10), "square": ("h4", 0.055), "star": ("h5", 0.07)}
HOLE_FRAC = 0.12  # a ring's hole is ~0.30 of its filled disc
RING_CENTRE = 0.5  # object contrast at the centroid: ~0 for a ring, ~1 for solid shapes


def classify_shape(f: dict[str, float]) -> str:
    """Shape name from blob features: a hole (or a faint centre) means ring; otherwise the outline ripple that
    most exceeds its threshold names the polygon, and a flat outline is a circle."""
    if f["holes"] > HOLE_FRAC or f.get("centre", 1.0) < RING_CENTRE:
        return "ring"
    best, strength = "circle", 1.0
    for name, (key, threshold) in RIPPLE.items():
        if f[key] / threshold > strength:
            best, strength = name, f[key] / threshold
    return best


def check(image: Image.Image | np.ndarray, scene: Scene,
          colours: dict[str, tuple[int, int, int]] | None = None) -> Score:
    """Score `image` against the single-object `scene` it was prompted with. `colours`: the
    palette colours are read against (default the world's twelve; fine-tuning adds a 13th).
    Stages: the background from the border, the object as what differs from it, its colour,
    then its shape and 3x3 cell; `found` says what each stage read."""
    if len(scene.objects) != 1:
        raise ValueError("the checker scores single-object scenes")
    names, palette = (_NAMES, _PALETTE) if colours is None else (
        tuple(colours), np.array(list(colours.values()), dtype=np.float32))
    want = scene.objects[0]
    arr = _to_array(image)
    bg_rgb, bg_name = _background(arr, names, palette)
    found: dict = {"background": bg_name, "background_rgb": bg_rgb.round().tolist()}
    bg_ok = bg_name == scene.background
    miss = Score(False, bg_ok, False, False, found)
    blob = _object(arr, bg_rgb, found)
    if blob is None:
        return miss
    colour = _object_colour(arr, blob, names, palette, found)
    if colour is None or colour == bg_name:
        found["object"] = False
        return miss
    position, shape = _placement_and_shape(blob, found)
    return Score(colour == want.colour, bg_ok, position == want.position, shape == want.shape,
                 found)


def _background(arr: np.ndarray, names: tuple[str, ...], palette: np.ndarray) -> tuple[np.ndarray, str]:
    """The border ring's median colour and its name."""
    hgt, wid = arr.shape[:2]
    ring = max(2, round(min(hgt, wid) / 32))
    border = np.concatenate([arr[:ring].reshape(-1, 3), arr[-ring:].reshape(-1, 3),
                             arr[:, :ring].reshape(-1, 3), arr[:, -ring:].reshape(-1, 3)])
    bg_rgb = np.median(border, axis=0)
    return bg_rgb, nearest_colour(bg_rgb, names, palette)


@dataclass
class _Blob:
    """The object as found: its mask on the upsampled map and what it was cut from."""
    mask: np.ndarray        # the largest component, at `zoom` times the picture's size
    dist: np.ndarray        # each pixel's RGB distance from the background, picture size
    dist_z: np.ndarray      # the same, upsampled
    peak: float             # the object's own contrast (a high percentile of `dist`)
    zoom: int


def _object(arr: np.ndarray, bg_rgb: np.ndarray, found: dict) -> _Blob | None:
    """The largest region that differs from the background, or None (found["object"] False)."""
    hgt, wid = arr.shape[:2]
    dist = np.sqrt(((arr - bg_rgb) ** 2).sum(axis=2))
    # Threshold halfway to the object's own contrast, so the mask is the 50% contour of
    # anti-aliased or blurred edges whatever the colour pair; a high percentile ignores specks.
    peak = float(np.percentile(dist, 99.7))
    found["contrast"] = round(peak, 1)
    found["object"] = False
    if peak < MIN_CONTRAST:
        return None
    # Shapes are read from the distance map upsampled to ~256 px: the 50% contour of a
    # bilinear map is sub-pixel accurate, so small or blurred shapes keep their corners.
    zoom = max(1, -(-WORK_SIZE // max(hgt, wid)))
    dist_z = np.asarray(Image.fromarray(dist.astype(np.float32)).resize(
        (wid * zoom, hgt * zoom), Image.Resampling.BILINEAR))
    labels, n = ndimage.label(dist_z > 0.5 * peak, structure=np.ones((3, 3), bool))
    if n == 0:
        return None
    sizes = np.bincount(labels.ravel())[1:]
    mask = labels == (int(sizes.argmax()) + 1)
    if mask.sum() < MIN_AREA_FRAC * mask.size:
        return None
    found["object"] = True
    found["components"] = int(n)
    found["area_frac"] = round(float(mask.sum()) / mask.size, 4)
    return _Blob(mask, dist, dist_z, peak, zoom)


def _object_colour(arr: np.ndarray, blob: _Blob, names: tuple[str, ...], palette: np.ndarray,
                   found: dict) -> str | None:
    """The colour name of the blob's core (far from the background), not its blended edge; None
    when the blob is no real object."""
    hgt, wid = arr.shape[:2]
    native = blob.mask.reshape(hgt, blob.zoom, wid, blob.zoom).mean(axis=(1, 3)) > 0.5
    core = native & (blob.dist > 0.75 * blob.peak)
    pix = arr[core] if core.sum() >= 4 else arr[native | (blob.dist > 0.75 * blob.peak)]
    obj_rgb = np.median(pix, axis=0)
    colour = nearest_colour(obj_rgb, names, palette)
    found["colour"] = colour
    found["colour_rgb"] = obj_rgb.round().tolist()
    # A real object is one flat colour unlike the background and of bounded size; noise or
    # a flooded picture yields a huge, many-coloured "blob" that must not earn credit.
    purity = float((_nearest_index(pix, palette) == names.index(colour)).mean())
    found["purity"] = round(purity, 3)
    return None if purity < MIN_PURITY or found["area_frac"] > MAX_AREA_FRAC else colour


def _placement_and_shape(blob: _Blob, found: dict) -> tuple[str, str]:
    """The blob's 3x3 cell (from its centroid) and its shape."""
    # Measure on the blob's box (1 px of margin) only: morphology on the crop is cheap.
    mask = blob.mask
    rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    top, left = max(int(rows[0]) - 1, 0), max(int(cols[0]) - 1, 0)
    feats = shape_features(mask[top:int(rows[-1]) + 2, left:int(cols[-1]) + 2])
    # How strongly the object shows at its own centroid: ~1 for solid shapes, low for a ring
    # even when blur has closed its hole in the mask.
    iy = int(round(feats["cy"])) + top
    ix = int(round(feats["cx"])) + left
    k = max(1, blob.zoom)
    feats["centre"] = float(blob.dist_z[max(iy - k, 0):iy + k + 1, max(ix - k, 0):ix + k + 1].mean()
                            / blob.peak)
    cx = (feats.pop("cx") + left + 0.5) / mask.shape[1]
    cy = (feats.pop("cy") + top + 0.5) / mask.shape[0]
    position = _CELLS[(min(int(cy * 3), 2), min(int(cx * 3), 2))]
    found["position"] = position
    found["centroid"] = (round(float(cx), 3), round(float(cy), 3))
    shape = classify_shape(feats)
    found["shape"] = shape
    found.update({k: round(v, 3) for k, v in feats.items()})
    return position, shape


def score_many(images: Sequence[Image.Image | np.ndarray] | np.ndarray,
               scenes: Sequence[Scene], colours: dict[str, tuple[int, int, int]] | None = None) -> dict[str, float]:
    """Fraction of pictures correct on each axis ("colour", "background", "position",
    "shape") and on all of them at once ("all")."""
    if len(images) != len(scenes):
        raise ValueError("need one scene per image")
    keys = ("colour", "background", "position", "shape", "all")
    totals = dict.fromkeys(keys, 0)
    for image, scene in zip(images, scenes):
        s = check(image, scene, colours)
        for k in keys:
            totals[k] += bool(getattr(s, k))
    n = max(len(scenes), 1)
    return {k: totals[k] / n for k in keys}
