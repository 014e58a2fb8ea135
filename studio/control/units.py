"""A request's control units made ready for the engine's stages: their maps at the picture's size
(the `prepare` stage: plain CPU work, before the model lock) and their models loaded, checked
against the loaded model and turned into the guidance's units (the `condition` stage)."""

from __future__ import annotations

import numpy as np

from studio.control.guidance import ActiveUnit
from studio.control.maps import Annotate, control_map
from studio.control.models import ControlModel
from studio.control.preprocessors import UNION_TYPES, find, setting
from studio.errors import InvalidRequest
from studio.requests import GenerationRequest

FAMILY_BY_TEXT_WIDTH = {768: "SD 1.x", 1024: "SD 2.x", 2048: "SDXL"}


def control_maps(request: GenerationRequest, width: int, height: int, seed: int,
                 annotate: Annotate | None = None, mask=None) -> list[np.ndarray]:
    """Each unit's map (float32 HxWx3) for a picture of width x height. With 'Only masked'
    inpainting each map is made of the same crop around `mask` (the request's mask as the
    pipeline takes it, PIL) that the pipeline inpaints, as sd-webui-controlnet does."""
    box = None
    if request.control and request.mode == "inpaint" and request.only_masked and mask is not None:
        from diffusers.image_processor import VaeImageProcessor
        box = VaeImageProcessor.get_crop_region(mask, width, height, pad=request.only_masked_padding)
    maps = []
    for unit in request.control:
        picture = unit.image if unit.image is not None else request.image
        unit_mask = unit.mask if unit.mask is not None else request.mask
        if box is not None:
            picture, unit_mask = (None if a is None else _crop(np.asarray(a), box, mask.size)
                                  for a in (picture, unit_mask))
        maps.append(control_map(unit, picture, unit_mask, width, height, seed, annotate))
    return maps


def _crop(array: np.ndarray, box: tuple[int, int, int, int], size: tuple[int, int]) -> np.ndarray:
    """The part of `array` that `box` (x1, y1, x2, y2 on a picture of `size`) covers, scaled to the
    array's own size (a control picture may be larger or smaller than the inpainted one)."""
    h, w = array.shape[:2]
    sx, sy = w / size[0], h / size[1]
    x1, y1 = int(round(box[0] * sx)), int(round(box[1] * sy))
    x2, y2 = max(x1 + 1, int(round(box[2] * sx))), max(y1 + 1, int(round(box[3] * sy)))
    return np.ascontiguousarray(array[y1:y2, x1:x2])


def _pixels_per_latent(model: ControlModel) -> int:
    cfg = model.module.config
    if model.kind == "adapter":
        return int(cfg.downscale_factor)
    return 2 ** (len(cfg.conditioning_embedding_out_channels) - 1)


def check_fits(model: ControlModel, unet, vae_scale_factor: int) -> None:
    """A control model made for another family, or for another latent size, is the user's clear
    message before any step runs."""
    width = unet.config.cross_attention_dim
    if model.cross_attention_dim is not None and model.cross_attention_dim != width:
        made = FAMILY_BY_TEXT_WIDTH.get(model.cross_attention_dim)
        here = FAMILY_BY_TEXT_WIDTH.get(width)
        if made and here:
            raise InvalidRequest(f"ControlNet model {model.name!r} is made for {made} models; the loaded model is {here}.")
        raise InvalidRequest(f"ControlNet model {model.name!r} is made for models with {model.cross_attention_dim}-wide "
                             f"text embeddings; the loaded model has {width}.")
    if _pixels_per_latent(model) != vae_scale_factor:
        raise InvalidRequest(f"ControlNet model {model.name!r} reads its picture at {_pixels_per_latent(model)} pixels "
                             f"a latent; the loaded model has {vae_scale_factor}: made for another model.")


def active_unit(unit, map_: np.ndarray, model: ControlModel, device: str, dtype) -> ActiveUnit:
    import torch

    cond = torch.from_numpy(np.ascontiguousarray(map_.transpose(2, 0, 1)))[None].to(device, dtype)
    index = 0
    if model.kind == "union":
        wanted = unit.control_type or find(unit.module).union_type
        if wanted not in UNION_TYPES:
            raise InvalidRequest(f"ControlNet-Union model {model.name!r} needs a control type for preprocessor "
                                 f"{unit.module!r}: one of {', '.join(UNION_TYPES)}.")
        index = UNION_TYPES[wanted]
        if index >= model.module.config.num_control_type:
            raise InvalidRequest(f"ControlNet-Union model {model.name!r} knows {model.module.config.num_control_type} "
                                 f"control types; {wanted!r} is not one of them (a ProMax model has tile and inpaint).")
    return ActiveUnit(model=model.module, kind=model.kind, cond=cond, weight=unit.weight, start=unit.start,
                      end=unit.end, mode=unit.control_mode, control_type=index)


def record(unit, model: ControlModel) -> dict:
    """What the picture's record keeps of a unit: its settings (the preprocessor's thresholds as
    used, its defaults for -1), the model's name and hash."""
    p = find(unit.module)
    control_type = unit.control_type or (p.union_type if model.kind == "union" else "")
    return {**unit.settings(), "module": p.name, "control_type": control_type, "threshold_a": setting(p, "a", unit.threshold_a),
            "threshold_b": setting(p, "b", unit.threshold_b), "model": model.name, "title": model.title,
            "sha256": model.sha256}
