"""The A1111 request bodies (AUTOMATIC1111 1.9/1.10 modules/api/models.py), as pydantic models.

Every field is optional with A1111's API default (steps 50, sampler "Euler", 512x512), and
unknown fields are ignored, as A1111's pydantic v1 models did: clients send their own extra keys
(SillyTavern its `url` and `auth`, the Photoshop plugin `uniqueDocumentId`...). Types are checked
here (FastAPI answers 422 as A1111 does); ranges are checked once, by the studio's make_request.

Beside A1111's fields, a body takes the studio's own request fields that A1111 has not, under
their REST names (`rest` in the request's table, studio/requests/request.py): left out, the
studio's default.
"""

from __future__ import annotations

from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field, create_model

from studio.fields import Choice, Custom, Flag, Names, Number, Text
from studio.requests import request_fields


class A1111Body(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


def _rest_type(kind) -> type:
    """The JSON type of a field's kind in a body."""
    if isinstance(kind, Number):
        return int if kind.integer else float
    return {Text: str, Choice: str, Names: list[str], Flag: bool, Custom: str}[type(kind)]   # Custom: a base64 picture


class A1111Txt2Img(A1111Body):
    prompt: str = ""
    negative_prompt: str = ""
    styles: list[str] = Field(default_factory=list)
    seed: int = -1
    subseed: int = -1
    subseed_strength: float = 0.0
    seed_resize_from_h: int = -1
    seed_resize_from_w: int = -1
    sampler_name: str | None = None
    sampler_index: str | None = "Euler"
    scheduler: str | None = None
    batch_size: int = 1
    n_iter: int = 1
    steps: int = 50
    cfg_scale: float = 7.0
    width: int | None = None      # A1111's 512 by default; here the model's native size (img2img: the picture's)
    height: int | None = None
    restore_faces: bool | None = None
    tiling: bool | None = None
    do_not_save_samples: bool = False
    do_not_save_grid: bool = False
    eta: float | None = None
    denoising_strength: float | None = None
    override_settings: dict[str, Any] = Field(default_factory=dict)
    override_settings_restore_afterwards: bool = True
    enable_hr: bool = False
    hr_scale: float = 2.0
    hr_upscaler: str | None = None
    hr_second_pass_steps: int = 0
    hr_resize_x: int = 0
    hr_resize_y: int = 0
    script_name: str | None = None
    script_args: list[Any] = Field(default_factory=list)
    send_images: bool = True
    save_images: bool = False
    alwayson_scripts: dict[str, Any] = Field(default_factory=dict)
    force_task_id: str | None = None
    infotext: str | None = None


class A1111Img2Img(A1111Txt2Img):
    init_images: list[str] | None = None
    resize_mode: int = 0
    image_cfg_scale: float | None = None
    mask: str | None = None
    mask_blur_x: int = 4
    mask_blur_y: int = 4
    mask_blur: int | None = None
    mask_round: bool = True
    inpainting_fill: int = 0
    inpaint_full_res: bool = True
    inpaint_full_res_padding: int = 0
    inpainting_mask_invert: int = 0
    initial_noise_multiplier: float | None = None
    include_init_images: bool = False
    denoising_strength: float = 0.75


def with_studio_fields(name: str, a1111: type[A1111Body], modes: tuple[str, ...]) -> type[A1111Body]:
    """A1111's body and the studio's request fields of these modes it has not (left out: the
    studio's default)."""
    return create_model(name, __base__=a1111, **{
        f.rest: (Optional[_rest_type(f.kind)], Field(None, description=f"{f.caption or f.label} (the studio's own"
                                                     f"{'; ' + f.help if f.help else ''})"))
        for f in request_fields() if f.rest and set(modes) & set(f.modes) and f.rest not in a1111.model_fields})


Txt2ImgBody = with_studio_fields("Txt2ImgBody", A1111Txt2Img, ("txt2img",))
Img2ImgBody = with_studio_fields("Img2ImgBody", A1111Img2Img, ("img2img", "inpaint"))


class PngInfoBody(A1111Body):
    image: str = ""


class ExtrasSingleBody(A1111Body):
    image: str = ""
    resize_mode: int = 0                  # 0: by upscaling_resize, 1: to upscaling_resize_w x _h
    show_extras_results: bool = True
    gfpgan_visibility: float = 0.0
    codeformer_visibility: float = 0.0
    codeformer_weight: float = 0.0
    upscaling_resize: float = 2.0
    upscaling_resize_w: int = 512
    upscaling_resize_h: int = 512
    upscaling_crop: bool = True
    upscaler_1: str = "None"
    upscaler_2: str = "None"
    extras_upscaler_2_visibility: float = 0.0
    upscale_first: bool = False


class InterrogateBody(A1111Body):
    image: str = ""
    model: str = "clip"
