"""Detectors: what finds the regions the detailer redraws, a table by name. Each takes an RGB
picture and a confidence threshold and returns boxes (x0, y0, x1, y1, score), best first.

    shapes   weight-free, for the embedded model's world of coloured shapes: the background is the
             border's colour; every connected region that differs from it by MIN_CONTRAST is a
             shape, scored by how much it stands out (its mean distance from the background / 255,
             doubled, at most 1)

    <file>   a detector file of models/detectors (studio/face_restoration/detect.py): OpenCV's
             YuNet face detector (.onnx), or ADetailer's own YOLO models (.pt, through
             ultralytics, with --allow-pickle)

MediaPipe's face model is not read: YuNet does its job without a runtime of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

MIN_CONTRAST = 40.0       # RGB distance from the background that makes a pixel part of a shape
MIN_AREA = 0.004          # smaller regions are noise (share of the picture)


@dataclass(frozen=True)
class Box:
    x0: int
    y0: int
    x1: int
    y1: int
    score: float


def shapes(picture: np.ndarray, confidence: float) -> list[Box]:
    from scipy import ndimage
    rgb = picture.astype(np.float32)
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
    distance = np.linalg.norm(rgb - np.median(border, axis=0), axis=2)
    labels, count = ndimage.label(distance > MIN_CONTRAST)
    boxes = []
    for index, where in enumerate(ndimage.find_objects(labels), start=1):
        inside = labels[where] == index
        if inside.sum() < MIN_AREA * labels.size:
            continue
        score = min(1.0, 2 * float(distance[where][inside].mean()) / 255)
        if score >= confidence:
            boxes.append(Box(where[1].start, where[0].start, where[1].stop, where[0].stop, round(score, 3)))
    return sorted(boxes, key=lambda b: -b.score)


DETECTORS: dict[str, Callable[[np.ndarray, float], list[Box]]] = {"shapes": shapes}


def detector_names(files: list[str] = ()) -> list[str]:
    """The built-in detectors, then the files of models/detectors."""
    return [*DETECTORS, *files]


def detect(name: str, picture: np.ndarray, confidence: float, file_of: Callable[[str], Path]) -> list:
    """The regions detector `name` finds in an RGB picture (boxes with x0, y0, x1, y1, score);
    `file_of` finds a detector file by name."""
    if name in DETECTORS:
        return DETECTORS[name](picture, confidence)
    from studio.face_restoration.detect import find
    return find(file_of(name), picture, confidence)
