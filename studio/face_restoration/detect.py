"""Face detection from a file the user puts in models/detectors: OpenCV's YuNet
(face_detection_yunet_2023mar.onnx, from the OpenCV Zoo, MIT licence, 230 KB), run by OpenCV's
own FaceDetectorYN, so no other runtime is needed. Boxes best first, as every detector gives them
(studio/detailer/detectors.py), with YuNet's five landmarks kept."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

NMS = 0.3            # overlap above which YuNet keeps only the better of two faces
YUNET_SUFFIXES = (".onnx",)


@dataclass(frozen=True)
class Face:
    x0: int
    y0: int
    x1: int
    y1: int
    score: float
    landmarks: tuple[tuple[float, float], ...] = field(default=(), compare=False)   # eyes, nose, mouth corners


def is_face_detector(name: str) -> bool:
    return Path(name).suffix.lower() in YUNET_SUFFIXES


def yunet(path: Path, picture: np.ndarray, confidence: float) -> list[Face]:
    """The faces YuNet finds in an RGB picture with at least `confidence`."""
    import cv2
    height, width = picture.shape[:2]
    try:
        detector = cv2.FaceDetectorYN.create(str(path), "", (width, height), float(confidence), NMS, 5000)
        _, rows = detector.detect(np.ascontiguousarray(picture[:, :, ::-1]))
    except cv2.error as exc:
        from studio.errors import StudioError
        raise StudioError(f"{path.name} is not a face detector OpenCV's YuNet can run: "
                          f"{str(exc).strip().splitlines()[-1]}") from None
    faces = []
    for row in rows if rows is not None else []:
        x, y, w, h = (float(v) for v in row[:4])
        x0, y0 = max(0, int(np.floor(x))), max(0, int(np.floor(y)))
        x1, y1 = min(width, int(np.ceil(x + w))), min(height, int(np.ceil(y + h)))
        if x1 > x0 and y1 > y0:
            points = tuple((float(row[4 + 2 * i]), float(row[5 + 2 * i])) for i in range(5))
            faces.append(Face(x0, y0, x1, y1, round(float(row[14]), 3), points))
    return sorted(faces, key=lambda f: -f.score)
