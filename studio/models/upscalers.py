"""Upscalers: Lanczos and Nearest always; model upscalers (ESRGAN, SwinIR, DAT and the other
architectures spandrel knows) from models/upscalers when spandrel is installed, run in tiles so a
big picture fits in memory.

Model files are read as state dicts only (studio/models/arches.py); spandrel recognises the
architecture from the tensors. The model runs under the model
manager's lock, so it never shares the GPU with a generation in progress; callers reach it as a
job of the dispatcher (an UpscaleRequest: studio/generation/upscale.py), never on their own thread.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from studio.errors import InvalidRequest, StudioError

BUILT_IN = {"Lanczos": Image.LANCZOS, "Nearest": Image.NEAREST}
TILE, OVERLAP = 256, 16          # input pixels per tile, and shared between neighbours
MAX_PASSES = 3                   # a 4x model reaches at most 64x
MAX_OUTPUT_PIXELS = 8192 * 8192


def upscaler_names(models: list[str]) -> list[str]:
    """What the pickers and /sdapi/v1/upscalers offer: the built-in ones, then the model files
    (the models folder's `upscalers`)."""
    return [*BUILT_IN, *models]


def target_size(image: Image.Image, scale: float | None, width: int | None, height: int | None) -> tuple[int, int]:
    """By a factor, or to a size (a side left 0 follows the other's aspect ratio)."""
    if width or height:
        width = width or round(image.width * height / image.height)
        height = height or round(image.height * width / image.width)
    else:
        width, height = round(image.width * scale), round(image.height * scale)
    if width < 1 or height < 1 or width * height > MAX_OUTPUT_PIXELS:
        raise InvalidRequest(f"Upscaling to {width}x{height} is outside what this studio makes "
                             f"(at most {MAX_OUTPUT_PIXELS:,} pixels).")
    return width, height


def upscale(image: Image.Image, size: tuple[int, int], name: str, library=None, manager=None,
            between_tiles: Callable[[], None] | None = None) -> Image.Image:
    """`image` at exactly `size`, with the upscaler called `name` (`between_tiles` is called
    before each tile of a model upscaler: a Stop raises there)."""
    image = image.convert("RGB")
    if name in BUILT_IN:
        return image.resize(size, BUILT_IN[name])
    if library is None or name not in library.names()["upscalers"]:
        models = library.names()["upscalers"] if library is not None else []
        raise InvalidRequest(f"Unknown upscaler {name!r}. Known: {', '.join(upscaler_names(models))}.")
    model = _load(library.get("upscalers", name).path, manager.device if manager else "cpu")
    lock = manager.lock if manager is not None else threading.Lock()
    with lock:
        for _ in range(MAX_PASSES):
            if image.width >= size[0] and image.height >= size[1]:
                break
            image = run_tiled(model.run, model.scale, image, between_tiles=between_tiles)
    return image.resize(size, Image.LANCZOS) if image.size != size else image


# -- model upscalers --------------------------------------------------------------------------------

@dataclass
class ModelUpscaler:
    scale: int
    run: Callable          # (1, 3, h, w) float tensor in [0, 1] -> (1, 3, h*scale, w*scale)


_cache: dict[tuple[str, float, str], ModelUpscaler] = {}
_cache_lock = threading.Lock()


def _load(path: Path, device: str) -> ModelUpscaler:
    key = (str(path), path.stat().st_mtime, device)
    with _cache_lock:
        if key not in _cache:
            _cache.clear()                     # one model upscaler in memory at a time
            _cache[key] = _read(path, device)
        return _cache[key]


def _read(path: Path, device: str) -> ModelUpscaler:
    import torch
    from studio.models.arches import read_model, spandrel
    descriptor = read_model(path, "an upscaler")
    if not isinstance(descriptor, spandrel().ImageModelDescriptor) or descriptor.purpose not in ("SR", "Restoration") \
            or descriptor.scale < 1:
        raise StudioError(f"{path.name} is not an upscaling model (spandrel reads it as "
                          f"{descriptor.architecture.name}, a {descriptor.purpose} model).")
    descriptor.to(device).eval()

    def run(tile):
        with torch.inference_mode():
            return descriptor(tile.to(device)).float().clamp(0, 1).cpu()

    return ModelUpscaler(int(descriptor.scale), run)


def run_tiled(run: Callable, scale: int, image: Image.Image, tile: int = TILE, overlap: int = OVERLAP,
              between_tiles: Callable[[], None] | None = None) -> Image.Image:
    """A model over `image` in overlapping tiles (each at most tile x tile input pixels); where
    tiles overlap their outputs are averaged, so the seams do not show."""
    import torch

    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
    _, _, h, w = pixels.shape
    out = torch.zeros(1, 3, h * scale, w * scale)
    weight = torch.zeros(1, 1, h * scale, w * scale)
    for top in _starts(h, tile, overlap):
        for left in _starts(w, tile, overlap):
            if between_tiles is not None:
                between_tiles()
            bottom, right = min(top + tile, h), min(left + tile, w)
            up = run(pixels[:, :, top:bottom, left:right])
            region = (slice(None), slice(None), slice(top * scale, bottom * scale), slice(left * scale, right * scale))
            out[region] += up
            weight[region] += 1
    result = (out / weight).clamp(0, 1)[0].permute(1, 2, 0).numpy()
    return Image.fromarray(np.round(result * 255).astype(np.uint8))


def _starts(length: int, tile: int, overlap: int) -> list[int]:
    """Tile starts covering 0..length, neighbours sharing `overlap` pixels, the last one flush."""
    if length <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, length - tile, step))
    return starts + [length - tile]
