"""One picture's faces restored, inside a postprocessing job: the detector file finds the faces,
the restorer file redraws each (under the model manager's lock, so it never shares the GPU with
a generation)."""

from __future__ import annotations

import threading

import numpy as np
from PIL import Image

from studio.face_restoration.detect import Face, find
from studio.face_restoration.restore import restore_faces
from studio.face_restoration.restorers import SIZE, load
from studio.requests.face_restoration import FaceRestoration


def restore_picture(image: Image.Image, settings: FaceRestoration, library, manager=None
                    ) -> tuple[Image.Image, list[Face]]:
    """`image` with its faces restored, and the faces found (none: the image as it was)."""
    pixels = np.asarray(image.convert("RGB"))
    faces = find(library.get("detectors", settings.detector).path, pixels, settings.confidence)
    if not faces:
        return image, []
    restorer = load(library.get("face_restorers", settings.restorer).path, manager.device if manager else "cpu")

    def one(crop: np.ndarray) -> np.ndarray:
        import torch
        face = np.asarray(Image.fromarray(crop).resize((SIZE, SIZE), Image.LANCZOS), np.float32) / 255
        out = restorer.run(torch.from_numpy(face).permute(2, 0, 1)[None], settings.weight)
        return np.round(out[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)

    with manager.lock if manager is not None else threading.Lock():
        restored = restore_faces(pixels, faces, one, settings.visibility)
    return Image.fromarray(restored), faces
