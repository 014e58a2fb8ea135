"""Weight-free measures of an animation (no CLIP or optical-flow network: the project runs
offline): where a red object is, how far the object's colour has moved from red toward blue,
rank correlation with the frame order, how much consecutive frames differ, colour drift."""

from __future__ import annotations

import numpy as np


def red_mask(image: np.ndarray) -> np.ndarray:
    return (image[..., 0] > 150) & (image[..., 1] < 100) & (image[..., 2] < 100)


def centroid(mask: np.ndarray) -> tuple[float, float] | None:
    ys, xs = np.nonzero(mask)
    return (float(xs.mean()), float(ys.mean())) if len(xs) else None


def blueness(image: np.ndarray, far: float = 80) -> float:
    """The object's mean blue minus red (pixels far from the median, i.e. the background, colour)."""
    px = image.reshape(-1, 3).astype(float)
    obj = px[np.abs(px - np.median(px, axis=0)).sum(1) > far]
    return float((obj[:, 2] - obj[:, 0]).mean()) if len(obj) else 0.0


def spearman(values: list[float]) -> float:
    """Rank correlation of the values with their order (1: strictly rising; ties share a rank, so
    a run of equal values then one step is not "rising")."""
    from scipy.stats import spearmanr
    return float(spearmanr(values, np.arange(len(values))).statistic)


def consecutive_change(frames: list[np.ndarray]) -> float:
    """Mean absolute difference between consecutive frames, in 0-255 levels."""
    return float(np.mean([np.abs(a.astype(float) - b).mean() for a, b in zip(frames, frames[1:])]))


def colour_drift(first: np.ndarray, last: np.ndarray) -> float:
    """How far the mean colour moved (sum over R, G, B of the change, in levels)."""
    return float(np.abs(last.reshape(-1, 3).mean(0) - first.reshape(-1, 3).mean(0)).sum())
