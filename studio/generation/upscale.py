"""An UpscaleRequest run as a job (studio/requests/upscale.py): the picture through its upscaler
(and a second one blended in), cropped or stretched to the size asked, its faces restored when
asked (studio/face_restoration), saved with the record its caller made, before anyone sees it.
Stop is heard between a model upscaler's tiles."""

from __future__ import annotations

from typing import Callable

from PIL import Image, ImageOps

from studio.errors import GenerationStopped
from studio.models.library import ModelLibrary
from studio.models.manager import ModelManager
from studio.models.upscalers import upscale
from studio.outputs.folder import HeldPictures, OutputFolder
from studio.requests import GeneratedImage, GenerationResult
from studio.requests.upscale import NONE, UpscaleRequest


def covering(image: Image.Image, size: tuple[int, int]) -> tuple[int, int]:
    """The size that covers `size` with the image's aspect ratio (cropped afterwards)."""
    ratio = max(size[0] / image.width, size[1] / image.height)
    return max(size[0], round(image.width * ratio)), max(size[1], round(image.height * ratio))


def upscale_job(request: UpscaleRequest, manager: ModelManager, library: ModelLibrary | None,
                outputs: OutputFolder | HeldPictures,
                should_stop: Callable[[], bool] | None = None) -> GenerationResult:
    image, size = Image.fromarray(request.image), request.size
    drawn = covering(image, size) if request.crop else size

    def between_tiles() -> None:
        if should_stop is not None and should_stop():
            raise GenerationStopped("Stopped while upscaling.")

    def one(name: str) -> Image.Image:
        out = image if name == NONE else upscale(image, drawn, name, library, manager, between_tiles)
        return out if out.size == drawn else out.resize(drawn, Image.LANCZOS)

    result = one(request.upscaler)
    if request.second != NONE and request.second_visibility > 0:
        result = Image.blend(result, one(request.second), request.second_visibility)
    if drawn != size:
        result = ImageOps.fit(result, size, Image.LANCZOS)       # the centre, cut to the asked size
    data, notes = dict(request.data), []
    if request.faces is not None:
        from studio.face_restoration.run import restore_picture
        result, faces = restore_picture(result, request.faces, library, manager)
        data["faces"] = [[f.x0, f.y0, f.x1, f.y1, f.score] for f in faces]
        notes += [] if faces else [f"Restore faces: {request.faces.detector} found no face "
                                   f"(confidence {request.faces.confidence:g}); the picture is as it was."]
    path = outputs.save(result, request.parameters, data, seed=request.seed, kind=request.kind)
    return GenerationResult(request=request, seed=request.seed, notes=notes,
                            images=[GeneratedImage(path, result, request.seed, request.parameters, data)])
