"""Detector files the user puts in models/detectors, a table by suffix; boxes best first, as every
detector gives them (studio/detailer/detectors.py):

    .onnx  OpenCV's YuNet face detector (face_detection_yunet_2023mar.onnx, from the OpenCV Zoo, MIT
           licence, 230 KB), run by OpenCV's own FaceDetectorYN: no other runtime; its five
           landmarks kept
    .pt    ADetailer's YOLO models (face_yolov8n.pt, hand_yolov8n.pt, person_yolov8n-seg.pt ...),
           run by ultralytics when it is installed. They are pickles that ultralytics unpickles
           with its classes (code): listed only when the studio starts with --allow-pickle
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

NMS = 0.3            # overlap above which YuNet keeps only the better of two faces


@dataclass(frozen=True)
class Face:
    x0: int
    y0: int
    x1: int
    y1: int
    score: float
    landmarks: tuple[tuple[float, float], ...] = field(default=(), compare=False)   # eyes, nose, mouth corners


def find(path: Path, picture: np.ndarray, confidence: float) -> list[Face]:
    """What the detector file at `path` finds in an RGB picture with at least `confidence`."""
    return FILE_DETECTORS[path.suffix.lower()](path, picture, confidence)


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


_yolo_lock = threading.Lock()
_yolo_models: dict[tuple[str, float], object] = {}


def yolo(path: Path, picture: np.ndarray, confidence: float) -> list[Face]:
    """The boxes an ultralytics YOLO model finds (a segmentation model's boxes; its masks unused)."""
    from PIL import Image
    try:
        from ultralytics import YOLO
    except Exception:  # noqa: BLE001 - not installed, or its torchvision built for another torch
        from studio.errors import StudioError
        raise StudioError(f"{path.name} is a YOLO detector: it needs ultralytics (pip install ultralytics, with a "
                          f"torchvision that matches your torch).") from None
    key = (str(path), path.stat().st_mtime)
    with _yolo_lock:
        if key not in _yolo_models:
            _yolo_models.clear()
            _yolo_models[key] = YOLO(str(path))
        model = _yolo_models[key]
    height, width = picture.shape[:2]
    found = model(Image.fromarray(picture), conf=float(confidence), verbose=False)[0].boxes
    faces = []
    for (x0, y0, x1, y1), score in zip(found.xyxy.cpu().numpy().tolist(), found.conf.cpu().numpy().tolist()):
        box = (max(0, int(np.floor(x0))), max(0, int(np.floor(y0))),
               min(width, int(np.ceil(x1))), min(height, int(np.ceil(y1))))
        if box[2] > box[0] and box[3] > box[1] and score >= confidence:
            faces.append(Face(*box, round(float(score), 3)))
    return sorted(faces, key=lambda f: -f.score)


FILE_DETECTORS = {".onnx": yunet, ".pt": yolo}
