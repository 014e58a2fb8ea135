"""The detailer's run: the tab's own run first (a plain generation or a composing tool), then for
each of its pictures every region the detector finds, best first, redrawn as "only masked"
inpainting — the region grown by `dilate` px, a crop of it plus `padding` drawn at the model's
own size with the detailer's prompt and strength and the picture's seed, pasted back through a
mask blurred by `blur` px (the engine's inpainting keeps every pixel outside it). The redraws are
held; the finished picture is saved with the picture's parameters and ADetailer's keys, the
undetailed one (saved as it was made) after it."""

from __future__ import annotations

import numpy as np

from studio.detailer.detectors import Box, detect, detector_names
from studio.outputs.metadata import add_keys
from studio.requests import GeneratedImage, request_fields
from studio.requests.detailer import Detailer, take_detailer
from studio.serving.sequence import ComposedResult, Sequence, Tool, finish_each


def with_detailer(base: Tool | None, mode: str) -> Tool:
    """`base` (None: a plain `mode` generation) followed by the detailer, as one tool."""
    def run(studio, raw: dict, sequence: Sequence, on_progress=None) -> ComposedResult:
        return run_detailer(studio, raw, sequence, on_progress, base=base, mode=mode)
    return run


def plan_detailer(studio, raw: dict, mode: str):
    """The detailer's settings from `raw`, checked (None when it is off)."""
    return take_detailer(dict(raw), detector_names(studio.names("detectors")), mode, studio.limits)


def run_detailer(studio, raw: dict, sequence: Sequence, on_progress=None, *, base: Tool | None = None,
                 mode: str = "txt2img") -> ComposedResult:
    raw = dict(raw)
    settings = take_detailer(raw, detector_names(studio.names("detectors")), mode, studio.limits)

    def finish(picture: GeneratedImage):
        detailed, note = detail_picture(studio, picture, settings, sequence)
        return detailed, [note] if note else []
    return finish_each(studio, raw, sequence, on_progress, base, mode, "Detailer", finish)


def region_mask(box: Box, size: tuple[int, int], grow: int) -> np.ndarray:
    """The box grown (or, negative, shrunk) by `grow` px, as an inpainting mask (255 = redraw)."""
    width, height = size
    mask = np.zeros((height, width), np.uint8)
    x0, y0 = max(0, box.x0 - grow), max(0, box.y0 - grow)
    x1, y1 = min(width, box.x1 + grow), min(height, box.y1 + grow)
    if x1 > x0 and y1 > y0:
        mask[y0:y1, x0:x1] = 255
    return mask


def _fields(picture: GeneratedImage) -> dict:
    """The picture's own request fields that an inpainting request takes (its prompt, sampler,
    steps, model, LoRAs...)."""
    allowed = {f.name for f in request_fields() if "inpaint" in f.modes} - {"image", "mask", "latents"}
    return {k: v for k, v in (picture.data.get("request") or {}).items() if k in allowed}


def detail_picture(studio, picture: GeneratedImage, settings: Detailer,
                   sequence: Sequence) -> tuple[GeneratedImage | None, str]:
    """Every region redrawn in turn; the finished picture saved (None when stopped), and a note."""
    current = np.asarray(picture.image.convert("RGB"))
    boxes = detect(settings.model, current, settings.confidence, lambda name: studio.file_of("detectors", name))
    if not boxes:
        return picture, f"Detailer: {settings.model} found nothing to redraw (confidence {settings.confidence:g})."
    fields, native = _fields(picture), studio.model_info().native_size
    for box in boxes:
        mask = region_mask(box, (current.shape[1], current.shape[0]), settings.dilate)
        if not mask.any():
            continue
        request = studio.make_request("inpaint", **{
            **fields, "image": current, "mask": mask, "only_masked": True, "only_masked_padding": settings.padding,
            "mask_blur": settings.blur, "strength": settings.strength, "seed": picture.seed,
            "prompt": settings.prompt or fields.get("prompt", ""), "width": native, "height": native,
            "negative_prompt": settings.negative_prompt or fields.get("negative_prompt", ""),
            "batch_count": 1, "batch_size": 1})
        done = sequence.run(request, save=False)
        if done is None or done.stopped or not done.images:
            return None, ""
        current = np.asarray(done.images[0].image.convert("RGB"))
    return _save(studio, sequence, current, picture, settings, boxes), ""


def _save(studio, sequence: Sequence, pixels: np.ndarray, picture: GeneratedImage, settings: Detailer,
          boxes: list[Box]) -> GeneratedImage:
    from PIL import Image
    text = add_keys(picture.parameters, settings.recipe())
    data = {**picture.data, "adetailer": {**settings.recipe(),
                                          "boxes": [[b.x0, b.y0, b.x1, b.y1, b.score] for b in boxes]}}
    image = Image.fromarray(pixels)
    path = studio.save(image, text, data, seed=picture.seed, user=sequence.user)
    return GeneratedImage(path, image, picture.seed, text, data)
