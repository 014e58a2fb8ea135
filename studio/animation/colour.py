"""Colour coherence: a frame's colours matched to a reference frame's, channel by channel, in LAB,
HSV or RGB (loopback img2img drifts in colour otherwise), with a strength, so that coherence
steadies the palette without freezing it; the caller re-anchors the reference every N frames.
RGB stays RGB throughout (Deforum converts BGR frames as if they were RGB)."""

from __future__ import annotations

import numpy as np
from PIL import Image

COHERENCE = ("none", "LAB", "HSV", "RGB")
# sRGB (D65) <-> CIE XYZ, and the D65 white point: the standard definitions
_RGB_TO_XYZ = np.array([[0.4124564, 0.3575761, 0.1804375],
                        [0.2126729, 0.7151522, 0.0721750],
                        [0.0193339, 0.1191920, 0.9503041]])
_WHITE = np.array([0.95047, 1.0, 1.08883])
_EPS, _KAPPA = 216 / 24389, 24389 / 27


def rgb_to_lab(image: np.ndarray) -> np.ndarray:
    """uint8 sRGB -> float CIELAB (L 0-100), in float64: no 8-bit rounding on the way."""
    c = image.astype(np.float64) / 255
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = linear @ _RGB_TO_XYZ.T / _WHITE
    f = np.where(xyz > _EPS, np.cbrt(xyz), (_KAPPA * xyz + 16) / 116)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], axis=-1)


def lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    fy = (lab[..., 0] + 16) / 116
    f = np.stack([fy + lab[..., 1] / 500, fy, fy - lab[..., 2] / 200], axis=-1)
    xyz = np.where(f ** 3 > _EPS, f ** 3, (116 * f - 16) / _KAPPA) * _WHITE
    linear = np.clip(xyz @ np.linalg.inv(_RGB_TO_XYZ).T, 0, 1)
    c = np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1 / 2.4) - 0.055)
    return np.clip(np.rint(c * 255), 0, 255).astype(np.uint8)


def to_space(image: np.ndarray, space: str) -> np.ndarray:
    if space == "LAB":
        return rgb_to_lab(image)
    if space == "HSV":
        return np.asarray(Image.fromarray(image).convert("HSV"))
    return image


def from_space(channels: np.ndarray, space: str) -> np.ndarray:
    if space == "LAB":
        return lab_to_rgb(channels)
    channels = np.clip(np.rint(channels), 0, 255).astype(np.uint8)
    if space == "HSV":
        return np.asarray(Image.fromarray(channels, "HSV").convert("RGB"))
    return channels


def match_channel(source: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Source values moved to the reference's values at the same quantiles (histogram matching)."""
    values, index, counts = np.unique(source.ravel(), return_inverse=True, return_counts=True)
    ref_values, ref_counts = np.unique(reference.ravel(), return_counts=True)
    quantiles = np.cumsum(counts) / source.size
    ref_quantiles = np.cumsum(ref_counts) / reference.size
    return np.interp(quantiles, ref_quantiles, ref_values)[index].reshape(source.shape)


def cohere(image: np.ndarray, reference: np.ndarray | None, space: str, strength: float = 1.0) -> np.ndarray:
    """`image` with its colours pulled toward `reference`'s by `strength` (0: unchanged)."""
    if space == "none" or reference is None or strength <= 0:
        return image
    if space not in COHERENCE:
        raise ValueError(f"colour coherence is one of {', '.join(COHERENCE)}")
    src, ref = to_space(image, space), to_space(reference, space)
    matched = np.stack([match_channel(src[..., c], ref[..., c]) for c in range(3)], axis=-1)
    matched = from_space(matched, space)
    mixed = (1 - strength) * image.astype(np.float64) + strength * matched
    return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
