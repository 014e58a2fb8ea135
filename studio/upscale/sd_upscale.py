"""SD upscale (A1111's img2img script): the input picture upscaled by a factor, then redrawn tile
by tile as image to image at the tab's size (the model's own when unset), the tiles overlapping
and blended with linear ramps where they meet, so that a model draws detail into a picture bigger
than it can draw whole. Every tile is an ordinary job of the dispatcher with the same seed (as
A1111: one noise pattern, no seams of changing texture), held, not saved; the finished picture is
saved with the tile's parameters, its own size and `SD upscale scale / overlap / upscaler`.
"""

from __future__ import annotations

import hashlib
import math
import secrets
from dataclasses import dataclass
from typing import Callable

import numpy as np
from PIL import Image

from studio.errors import InvalidRequest
from studio.models.upscalers import upscaler_names
from studio.outputs.metadata import add_keys
from studio.requests import MAX_SEED, MIN_SIDE, GeneratedImage, GenerationRequest
from studio.requests.sd_upscale import SdUpscale, take_sd_upscale
from studio.requests.tools import without_tools
from studio.requests.upscale import UpscaleRequest
from studio.serving.sequence import Sequence
from studio.serving.sequence import ComposedResult

KIND = "sdupscale"           # NNNNN-sdupscale.png
SCRIPT = "sd upscale"        # A1111's script name (REST script_name, /scripts)


def upscalers(studio) -> list[str]:
    return upscaler_names(studio.names("upscalers"))


@dataclass(frozen=True)
class Tiling:
    size: tuple[int, int]            # the upscaled picture
    tile: tuple[int, int]            # each tile (multiples of 8)
    origins: tuple[tuple[int, int], ...]
    overlap: int


def tiling(size: tuple[int, int], tile: tuple[int, int], overlap: int) -> Tiling:
    """Tiles of `tile` covering `size`, spread evenly, neighbours sharing at least `overlap` px
    (at most half a tile)."""
    tile = tuple(min(t, s // 8 * 8) for t, s in zip(tile, size))
    overlap = min(overlap, min(tile) // 2)
    axes = []
    for length, t in zip(size, tile):
        count = 1 if length <= t else 1 + math.ceil((length - t) / max(8, t - overlap))
        step = (length - t) / (count - 1) if count > 1 else 0
        axes.append([min(round(i * step), length - t) for i in range(count)])
    return Tiling(size, tile, tuple((x, y) for y in axes[1] for x in axes[0]), overlap)


def _ramp(length: int, before: int, after: int) -> np.ndarray:
    """A tile's weight along one axis: rising over the `before` px it shares with the tile before
    it, falling over the `after` px it shares with the next."""
    at = np.arange(length, dtype=np.float32) + 0.5
    weight = np.ones(length, np.float32)
    if before:
        weight = np.minimum(weight, at / before)
    if after:
        weight = np.minimum(weight, (length - at) / after)
    return weight


def blend(tiles: list[np.ndarray], grid: Tiling) -> Image.Image:
    """The tiles put back where they came from, overlaps weighted by linear ramps."""
    width, height = grid.size
    total = np.zeros((height, width, 3), np.float32)
    weight = np.zeros((height, width, 1), np.float32)
    tw, th = grid.tile
    for (x, y), tile in zip(grid.origins, tiles):
        left = max(0, min(grid.overlap, max((ox + tw - x for ox, oy in grid.origins if oy == y and ox < x), default=0)))
        top = max(0, min(grid.overlap, max((oy + th - y for ox, oy in grid.origins if ox == x and oy < y), default=0)))
        right = max(0, min(grid.overlap, max((x + tw - ox for ox, oy in grid.origins if oy == y and ox > x), default=0)))
        bottom = max(0, min(grid.overlap, max((y + th - oy for ox, oy in grid.origins if ox == x and oy > y), default=0)))
        w = _ramp(th, top, bottom)[:, None, None] * _ramp(tw, left, right)[None, :, None]
        total[y:y + th, x:x + tw] += tile.astype(np.float32) * w
        weight[y:y + th, x:x + tw] += w
    return Image.fromarray(np.clip(np.round(total / np.maximum(weight, 1e-6)), 0, 255).astype(np.uint8))


def plan_sd_upscale(studio, raw: dict) -> tuple[dict, GenerationRequest, SdUpscale]:
    """The tiles' fields, the input's request (checked before anything runs) and the settings."""
    raw = dict(raw)
    settings = take_sd_upscale(raw, upscalers(studio), studio.limits)
    if settings is None:
        raise InvalidRequest("SD upscale is off.")
    raw = without_tools(raw)
    request = studio.make_request("img2img", **raw)
    width, height = upscaled_size(request, settings)
    if width * height > studio.limits.max_pixels * 4:
        raise InvalidRequest(f"SD upscale would make {width}x{height}, more than this studio upscales to "
                             f"({studio.limits.max_pixels * 4:,} pixels).")
    return raw, request, settings


def upscaled_size(request: GenerationRequest, settings: SdUpscale) -> tuple[int, int]:
    height, width = request.image.shape[:2]
    return tuple(max(MIN_SIDE, round(side * settings.scale / 8) * 8) for side in (width, height))


def run_sd_upscale(studio, raw: dict, sequence: Sequence,
                   on_progress: Callable[[float, str], None] | None = None) -> ComposedResult:
    """Upscale, redraw each tile, blend, save."""
    raw, request, settings = plan_sd_upscale(studio, raw)
    say = on_progress or (lambda done, text: None)
    result = ComposedResult(notes=["SD upscale makes one picture per input: batch count and size were not used."]
                         if request.batch_count * request.batch_size > 1 else [])
    source, size = Image.fromarray(request.image), upscaled_size(request, settings)
    say(0.0, f"Upscaling ({settings.upscaler})")
    big = sequence.run(UpscaleRequest(image=request.image, size=size, upscaler=settings.upscaler), save=False)
    if big is None or big.stopped:
        result.stopped = True
        return result
    native = studio.model_info().native_size
    grid = tiling(size, (request.width or native, request.height or native), settings.overlap)
    seed = request.seed if request.seed >= 0 else secrets.randbelow(MAX_SEED + 1)
    upscaled, drawn, first = np.asarray(big.images[0].image.convert("RGB")), [], None
    tw, th = grid.tile
    for n, (x, y) in enumerate(grid.origins):
        say(n / len(grid.origins), f"Tile {n + 1} of {len(grid.origins)}")
        piece = np.ascontiguousarray(upscaled[y:y + th, x:x + tw])
        tile = studio.make_request("img2img", **{**raw, "image": piece, "width": tw, "height": th, "seed": seed,
                                                "batch_count": 1, "batch_size": 1})
        done = sequence.run(tile, save=False)
        if done is None or done.stopped or not done.images:
            result.stopped = True
            result.notes.append(f"Stopped after {n} of {len(grid.origins)} tiles: nothing was saved.")
            return result
        first = first or done.images[0]
        drawn.append(np.asarray(done.images[0].image.convert("RGB")))
        result.notes += [note for note in done.notes if note not in result.notes]
    result.images.append(_save(studio, sequence, blend(drawn, grid), first, settings, grid, source))
    result.seed = seed
    return result


def _save(studio, sequence: Sequence, image: Image.Image, tile: GeneratedImage, settings: SdUpscale, grid: Tiling,
          source: Image.Image) -> GeneratedImage:
    """The finished picture with the tiles' parameters, its size and the SD upscale settings."""
    keys = settings.recipe()
    text = add_keys(tile.parameters, {"Size": f"{image.width}x{image.height}", **keys})
    data = {**tile.data, "width": image.width, "height": image.height,
            "sd_upscale": {**keys, "tiles": len(grid.origins), "tile": list(grid.tile)},
            "source": {"width": source.width, "height": source.height,
                       "sha256": hashlib.sha256(np.asarray(source).tobytes()).hexdigest()}}
    path = studio.save(image, text, data, seed=tile.seed, kind=KIND, user=sequence.user)
    return GeneratedImage(path, image, tile.seed, text, data)
