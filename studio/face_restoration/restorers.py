"""Face restorer files (models/face_restorers: GFPGANv1.4.pth, RestoreFormer.pth, codeformer.pth
...), read by spandrel from their tensors (studio/models/arches.py). Each architecture is called
as its authors call it — a face in [-1, 1] at the restorer's size in, one out — a table by
spandrel's architecture id. One restorer in memory at a time."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from studio.errors import StudioError

SIZE = 512           # every face restorer here works on 512 px faces (FFHQ's size)

# architecture id -> (model, face in [-1, 1], CodeFormer's fidelity weight) -> face in [-1, 1];
# GFPGAN's StyleGAN noise is the file's own buffers, not drawn anew: same face, same picture
CALLS: dict[str, Callable[[Any, Any, float], Any]] = {
    "GFPGAN": lambda model, face, weight: model(face, return_rgb=False, randomize_noise=False)[0],
    "RestoreFormer": lambda model, face, weight: model(face)[0],
    "CodeFormer": lambda model, face, weight: model(face, weight=weight, adain=True)[0],
}


@dataclass
class FaceRestorer:
    name: str                  # spandrel's name of the architecture
    run: Callable              # (1, 3, 512, 512) float tensor in [0, 1], weight -> the same shape


_cache: dict[tuple[str, float, str], FaceRestorer] = {}
_lock = threading.Lock()


def load(path: Path, device: str) -> FaceRestorer:
    key = (str(path), path.stat().st_mtime, device)
    with _lock:
        if key not in _cache:
            _cache.clear()
            _cache[key] = _read(path, device)
        return _cache[key]


def _read(path: Path, device: str) -> FaceRestorer:
    import torch
    from studio.models.arches import read_model
    descriptor = read_model(path, "a face restorer")
    call = CALLS.get(descriptor.architecture.id)
    if call is None or descriptor.purpose != "FaceSR":
        known = ", ".join(CALLS)
        raise StudioError(f"{path.name} is not a face restorer (spandrel reads it as {descriptor.architecture.name}, "
                          f"a {descriptor.purpose} model); face restorers here: {known}.")
    model = descriptor.model.to(device).eval()

    def run(face, weight: float):
        with torch.inference_mode():
            out = call(model, face.to(device) * 2 - 1, weight)
            return ((out.float() + 1) / 2).clamp(0, 1).cpu()

    return FaceRestorer(descriptor.architecture.name, run)
