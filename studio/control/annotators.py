"""Preprocessors that need weights (annotators): each reads a model the user put in
models/annotators/<folder> (the files as its hub repository has them; nothing is downloaded) and
says which folder and files are missing otherwise. Loaded on first use and kept; they run on the
CPU, in the request's prepare stage, outside the model lock.

Depth: a transformers depth-estimation model (Depth Anything V2 Small by default; any
`AutoModelForDepthEstimation` folder works), its relative depth scaled to [0, 1], near = white, as
ControlNet's depth models take it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from studio.errors import InvalidRequest


@dataclass(frozen=True)
class Annotator:
    folder: str                      # under models/annotators/
    repository: str                  # where the user gets its files
    files: tuple[str, ...]           # what the folder must hold


DEPTH = Annotator("depth-anything", "depth-anything/Depth-Anything-V2-Small-hf",
                  ("config.json", "model.safetensors", "preprocessor_config.json"))


def missing(annotator: Annotator, root: Path | None) -> str | None:
    """The message naming what is missing, or None when the folder is complete."""
    folder = None if root is None else root / annotator.folder
    absent = [f for f in annotator.files if folder is None or not (folder / f).is_file()]
    if not absent:
        return None
    return (f"This preprocessor needs the files of {annotator.repository} ({', '.join(annotator.files)}) in "
            f"models/annotators/{annotator.folder}/; missing: {', '.join(absent)}. The studio never downloads them.")


class Annotators:
    """The annotator models loaded so far, by folder (reloaded when its weights change)."""

    def __init__(self):
        self._kept: dict[tuple, tuple] = {}
        self._lock = threading.Lock()

    def _load(self, folder: Path):
        from transformers import AutoImageProcessor, AutoModelForDepthEstimation

        weights = folder / "model.safetensors"
        key = (str(folder), weights.stat().st_mtime_ns, weights.stat().st_size)
        with self._lock:
            if key not in self._kept:
                try:
                    self._kept = {key: (AutoImageProcessor.from_pretrained(str(folder), local_files_only=True),
                                        AutoModelForDepthEstimation.from_pretrained(
                                            str(folder), local_files_only=True).eval())}
                except Exception as exc:  # noqa: BLE001 - the user's folder: a clear message
                    raise InvalidRequest(f"models/annotators/{folder.name} cannot be loaded as a depth model: "
                                         f"{type(exc).__name__}: {str(exc)[:200]}") from None
            return self._kept[key]

    def run(self, annotator: Annotator, rgb: np.ndarray, root: Path | None) -> np.ndarray:
        """The map `annotator` makes of `rgb`, with its files from `root` (models/annotators)."""
        return {DEPTH: self.depth}[annotator](rgb, root)

    def depth(self, rgb: np.ndarray, root: Path | None) -> np.ndarray:
        import torch
        from PIL import Image

        why = missing(DEPTH, root)
        if why:
            raise InvalidRequest(why)
        processor, model = self._load(root / DEPTH.folder)
        inputs = processor(images=Image.fromarray(rgb), return_tensors="pt")
        with torch.no_grad():
            depth = model(**inputs).predicted_depth[0]
        depth = torch.nn.functional.interpolate(depth[None, None].float(), size=rgb.shape[:2], mode="bicubic",
                                                align_corners=False)[0, 0].numpy()
        low, high = float(depth.min()), float(depth.max())
        scaled = (depth - low) / (high - low) if high > low else np.zeros_like(depth)
        return np.repeat(scaled.astype(np.float32)[..., None], 3, axis=2)
