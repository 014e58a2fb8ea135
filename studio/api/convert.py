"""A1111 payloads to studio requests, and studio results to A1111 answers.

A body becomes raw fields for `Studio.make_request`, the same boundary the UI's tabs use, so every
check (ranges, sizes, known names, the prompt language, inline negatives, <lora:> tags) is the
studio's own. What A1111 does in pixel space before sampling (resize modes, the inpainting fill of
the masked area, an inverted mask) is done here to the input picture, so the engine sees an
ordinary img2img or inpainting request.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFilter, ImageOps

from studio import __version__
from studio.api import catalog, controlnet, regions
from studio.api.catalog import Options, clip_skip, find_checkpoint
from studio.api.schema import ExtrasSingleBody, Img2ImgBody, Txt2ImgBody
from studio.errors import InvalidRequest
from studio.fields import Custom
from studio.samplers import SCHEDULERS, from_a1111
from studio.inputs import decode_base64, load_image
from studio.requests import MIN_SIDE, GenerationRequest, GenerationResult, request_fields
from studio.serving.studio import Studio
from studio.upscale.extras import NONE, UpscaleSettings, read_settings
from studio.upscale.faces import plan_faces
from studio.upscale.hires import hires_upscalers, plan_hires
from studio.upscale.native import oversized, plan_from_native
from studio.upscale.sd_upscale import SCRIPT as SD_UPSCALE, plan_sd_upscale, run_sd_upscale
from studio.upscale import img2img_tool, txt2img_tool
from studio.detailer.detail import plan_detailer
from studio.requests.detailer import FIELDS as DETAILER_FIELDS
from studio.requests.face_restoration import RESTORER_FILES
from studio.requests.tools import without_tools


class ApiError(Exception):
    """An answer with A1111's status for it (404 no init image, 422 unknown script)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


@dataclass
class Translated:
    kind: str                                   # txt2img | img2img
    requests: list[GenerationRequest]           # one per init image (one for txt2img; hires: its first pass)
    notes: list[str] = field(default_factory=list)
    hires: dict[str, Any] | None = None         # the raw fields a composing run takes (enable_hr: the hires fix)
    tool: Any = None                            # that run (studio/upscale: txt2img_tool)


# -- images in ------------------------------------------------------------------------------------

def decode_image(name: str, text: Any) -> Image.Image:
    """A body's base64 picture (studio/inputs.py: never a path, never a URL fetched)."""
    return decode_base64(name, text)


def _mask(body: Img2ImgBody, size: tuple[int, int]) -> Image.Image:
    """A1111's mask: alpha when it has real transparency, else luminance; rounded to 0/255
    (mask_round), inverted on request, at the init image's size."""
    image = load_image("mask", decode_image("mask", body.mask), mode="keep")
    if image.mode in ("RGBA", "LA") and image.getchannel("A").getextrema() != (255, 255):
        mask = image.getchannel("A")
    else:
        mask = image.convert("L")
    if body.mask_round:
        mask = mask.point(lambda v: 255 if v > 127 else 0)
    if body.inpainting_mask_invert:
        mask = ImageOps.invert(mask)
    return mask if mask.size == size else mask.resize(size, Image.LANCZOS)


def _fit(image: Image.Image, mode: int, size: tuple[int, int], fill: bool) -> Image.Image:
    """A1111's resize modes: 0 just resize (and 3, latent upscale, here in pixels), 1 crop and
    resize, 2 resize and fill (the picture whole, the rest filled from its own edges)."""
    if mode == 1:
        return ImageOps.fit(image, size, Image.LANCZOS)
    if mode == 2:
        inner = ImageOps.contain(image, size, Image.LANCZOS)
        canvas = (image.resize(size, Image.LANCZOS).filter(ImageFilter.GaussianBlur(max(size) // 8))
                  if fill else Image.new(image.mode, size, 0))
        canvas.paste(inner, ((size[0] - inner.width) // 2, (size[1] - inner.height) // 2))
        return canvas
    return image.resize(size, Image.LANCZOS)


def _fill_from_surroundings(image: Image.Image, mask: Image.Image) -> Image.Image:
    """Masked pixels painted with the average colour around them, from far to near (A1111's
    "fill")."""
    rgb = np.asarray(image, dtype=np.float32)
    keep = (np.asarray(mask) < 128).astype(np.float32)
    out = rgb.copy()
    for radius in (256, 64, 16, 4, 1):
        weights = np.asarray(Image.fromarray((keep * 255).astype(np.uint8)).filter(ImageFilter.BoxBlur(radius)),
                             dtype=np.float32) / 255
        sums = np.stack([np.asarray(Image.fromarray((rgb[..., c] * keep).astype(np.uint8)).filter(
            ImageFilter.BoxBlur(radius)), dtype=np.float32) for c in range(3)], axis=-1)
        known = weights > 1e-3
        filled = np.where(known[..., None], sums / np.maximum(weights, 1e-3)[..., None], out)
        out = np.where((keep == 0)[..., None] & known[..., None], filled, out)
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))


def _noise(image: Image.Image, mask: Image.Image, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed if seed >= 0 else None)
    noise = Image.fromarray(rng.integers(0, 256, (image.height, image.width, 3), dtype=np.uint8))
    return Image.composite(noise, image, mask)


# A1111's inpainting_fill: what the masked area starts from (done in pixels here)
INPAINT_FILLS = {
    0: lambda image, mask, seed: _fill_from_surroundings(image, mask),              # fill
    1: lambda image, mask, seed: image,                                              # original
    2: _noise,                                                                       # latent noise
    3: lambda image, mask, seed: Image.composite(Image.new("RGB", image.size, (127, 127, 127)), image, mask),
}


# -- requests ---------------------------------------------------------------------------------------

ADETAILER = "adetailer"


def _check_scripts(body: Txt2ImgBody) -> None:
    """The studio runs no A1111 scripts but the two always-on ones GET /scripts lists, ControlNet's
    units and Regional Prompter's regions: a request that needs another is refused with A1111's 422, never run
    without it. Entries without arguments ask for nothing."""
    if body.script_name and not (isinstance(body, Img2ImgBody) and body.script_name.strip().lower() == SD_UPSCALE):
        raise ApiError(422, f"Script '{body.script_name}' not found")
    for title, entry in (body.alwayson_scripts or {}).items():
        if (isinstance(entry, dict) and not entry.get("args")) or controlnet.is_controlnet(title) \
                or regions.is_regional_prompter(title) or title.strip().lower() == ADETAILER:
            continue
        raise ApiError(422, f"always on script {title} not found")


def _common(body: Txt2ImgBody, studio: Studio, options: Options, notes: list[str]) -> dict[str, Any]:
    """Raw studio fields from the parts txt2img and img2img share."""
    _check_scripts(body)
    scheduler, sampler_notes = from_a1111(body.sampler_name or body.sampler_index, body.scheduler)
    notes += sampler_notes
    override = body.override_settings or {}
    known = [s for s in body.styles if s in studio.style_names()]
    if len(known) > 1:
        notes.append(f"One style per picture here: applied {known[0]!r}, not {', '.join(map(repr, known[1:]))}.")
    control = controlnet.units(body, decode_image)
    return dict(
        **{**body_fields(body, "img2img" if isinstance(body, Img2ImgBody) else "txt2img"), **regions.fields(body)},
        **({"control": control} if control is not None else {}),
        style=known[0] if known else None, scheduler=scheduler,
        model=(find_checkpoint(studio, override["sd_model_checkpoint"]) if "sd_model_checkpoint" in override
               else studio.current_choice()),
        vae=options.vae_name(override["sd_vae"]) if "sd_vae" in override else options.vae,
        clip_skip=clip_skip(override["CLIP_stop_at_last_layers"]) if "CLIP_stop_at_last_layers" in override
        else options.clip_skip)


def body_fields(body: Txt2ImgBody, mode: str) -> dict[str, Any]:
    """The request fields a body carries under their REST names (each field's `rest` in the
    request's table: A1111's name, or the studio's own for a field A1111 has not): what was
    sent, or A1111's default; a studio field left out (None) keeps the studio's default. A picture
    (a field of its own kind) comes as base64 and is decoded here; a text is never a path."""
    return {f.name: decode_image(f.rest, getattr(body, f.rest)) if isinstance(f.kind, Custom) else getattr(body, f.rest)
            for f in request_fields() if f.rest and mode in f.modes and getattr(body, f.rest, None) is not None}


def txt2img(body: Txt2ImgBody, studio: Studio, options: Options) -> Translated:
    notes: list[str] = []
    raw = {**_common(body, studio, options, notes), **_faces(body, studio, options, notes),
           **_adetailer(body, studio, "txt2img", notes)}
    if body.enable_hr:
        raw.update(_hires(body, studio, notes))
    tool = txt2img_tool(studio, raw)
    if tool is None:
        return Translated("txt2img", [studio.make_request("txt2img", **raw)], notes)
    first = plan_hires(studio, raw)[0] if body.enable_hr else \
        plan_from_native(studio, raw) if oversized(studio, raw) else studio.make_request("txt2img", **without_tools(raw))
    return Translated("txt2img", [first], notes, hires=raw, tool=tool)


def _adetailer(body: Txt2ImgBody, studio: Studio, mode: str, notes: list[str]) -> dict[str, Any]:
    """ADetailer's documented REST form, alwayson_scripts {"ADetailer": {"args": [enable,
    skip_img2img, {"ad_model": ..., "ad_prompt": ...}, ...]}} (the flags may be left out): the
    first unit's settings as the detailer's fields (same names), checked here."""
    entry = next((v for k, v in (body.alwayson_scripts or {}).items() if k.strip().lower() == ADETAILER), None)
    args = entry.get("args") if isinstance(entry, dict) else None
    flags = [a for a in args or [] if isinstance(a, bool)]
    units = [a for a in args or [] if isinstance(a, dict)]
    if not units or (flags and not flags[0]) or (mode == "img2img" and len(flags) > 1 and flags[1]):
        return {}
    if len(units) > 1:
        notes.append(f"ADetailer: the first of {len(units)} units runs here.")
    fields = {"ad_enable": True, **{k: v for k, v in units[0].items() if k in DETAILER_FIELDS and k != "ad_enable"}}
    plan_detailer(studio, fields, mode)
    return fields


def _faces(body: Txt2ImgBody, studio: Studio, options: Options, notes: list[str]) -> dict[str, Any]:
    """`restore_faces` with A1111's settings: the restorer its `face_restoration_model` option names
    (a file whose name holds it, as "CodeFormer" -> codeformer.pth; else the first file) and its
    `code_former_weight`. Without the files A1111's answer stands (200) with a note that names them."""
    if not body.restore_faces:
        return {}
    chosen, restorers = options.get(), studio.names("face_restorers")
    wanted = str(chosen.get("face_restoration_model") or "").lower()
    named = next((n for n in restorers if wanted and wanted in Path(n).stem.lower()), "")
    fields = {"restore_faces": True, "face_restorer": named, "codeformer_weight": chosen.get("code_former_weight", 0.5)}
    try:
        plan_faces(studio, fields)
    except InvalidRequest as exc:
        notes.append(f"{exc} The faces were not restored.")
        return {}
    return fields


def _hires(body: Txt2ImgBody, studio: Studio, notes: list[str]) -> dict[str, Any]:
    """A1111's hires fields as the studio's (hr_upscaler None: Latent, as A1111); hr_resize_x/y
    become the factor they imply."""
    upscaler = body.hr_upscaler or "Latent"
    known = hires_upscalers(studio)
    if upscaler not in known:
        notes.append(f"Hires upscaler {upscaler!r} is not here: used Lanczos (known: {', '.join(known)}).")
        upscaler = "Lanczos"
    scale = body.hr_scale
    if body.hr_resize_x or body.hr_resize_y:
        native = studio.model_info().native_size
        scale = max(body.hr_resize_x / max(1, body.width or native), body.hr_resize_y / max(1, body.height or native))
    return {"hires": True, "hires_scale": scale, "hires_steps": body.hr_second_pass_steps,
            "hires_strength": 0.7 if body.denoising_strength is None else body.denoising_strength,
            "hires_upscaler": upscaler}


def room_for(body: Img2ImgBody, studio: Studio, user: str) -> None:
    """Before any init image is decoded: at most a batch count of them (each is a job of its
    own), and room in the queue for them all."""
    count = len(body.init_images or [])
    if count > studio.limits.max_batch_count:
        raise InvalidRequest(f"{count} init images; this studio takes at most {studio.limits.max_batch_count} "
                             "in one request.")
    studio.check_room(user, count)


def img2img(body: Img2ImgBody, studio: Studio, options: Options) -> Translated:
    """One request per init image (seeds one apart), inpainting when there is a mask."""
    if not body.init_images:
        raise ApiError(404, "Init image not found")
    if body.inpainting_fill not in INPAINT_FILLS:
        raise InvalidRequest(f"inpainting_fill must be 0 (fill), 1 (original), 2 (latent noise) or 3 "
                             f"(latent nothing), got {body.inpainting_fill}.")
    notes: list[str] = []
    raw = {k: v for k, v in _common(body, studio, options, notes).items()
           if k not in ("variation_seed", "variation_strength")}
    if body.subseed_strength:
        notes.append("Variation seeds work in txt2img only here: subseed_strength was ignored.")
    if body.script_name:
        return _sd_upscale(body, studio, raw, notes)
    detailer = _adetailer(body, studio, "img2img", notes)
    if detailer and body.mask:
        raise InvalidRequest("ADetailer runs after text to image and image to image here, not after inpainting.")
    if body.mask and body.restore_faces:
        notes.append("Restore faces runs after text to image and image to image here, not after inpainting.")
    finishing = {**({} if body.mask else _faces(body, studio, options, notes)), **detailer}
    size, lim = (body.width or 0, body.height or 0), studio.limits       # not sent: the picture's own size
    resize = MIN_SIDE <= min(size) and max(size) <= lim.max_side and size[0] * size[1] <= lim.max_pixels
    mode = "inpaint" if body.mask else "img2img"
    requests = []
    for i, text in enumerate(body.init_images):
        image = load_image(f"init_images[{i}]", decode_image(f"init_images[{i}]", text))
        extra: dict[str, Any] = {}
        if mode == "inpaint":
            mask = _mask(body, image.size)
            if resize:
                image, mask = _fit(image, body.resize_mode, size, True), _fit(mask, body.resize_mode, size, False)
            seed = body.seed + i if body.seed >= 0 else -1
            image = INPAINT_FILLS[body.inpainting_fill](image, mask, seed)
            extra = dict(mask=mask, mask_blur=body.mask_blur if body.mask_blur is not None
                         else max(body.mask_blur_x, body.mask_blur_y),
                         **{k: v for k, v in body_fields(body, "inpaint").items() if k not in raw})
        elif resize:
            image = _fit(image, body.resize_mode, size, True)
        fields = {**raw, "seed": raw["seed"] + i if raw["seed"] >= 0 else -1,
                  "batch_size": raw["batch_size"] if len(body.init_images) == 1 else 1}
        requests.append(studio.make_request(mode, image=image, **{**fields, **extra}))
        if finishing:          # the first init image, finished after its image to image
            if len(body.init_images) > 1:
                notes.append("Restore faces and ADetailer run on the first init image only.")
            raw_first = {**fields, **finishing, "image": image}
            return Translated("img2img", requests, notes, hires=raw_first, tool=img2img_tool(studio, raw_first))
    return Translated("img2img", requests, notes)


def _sd_upscale(body: Img2ImgBody, studio: Studio, raw: dict[str, Any], notes: list[str]) -> Translated:
    """A1111's "SD upscale" script: script_args [info, overlap, upscaler (index into /upscalers, or
    its name), scale factor], on the first init image; width/height are the tiles' size."""
    if body.mask:
        raise InvalidRequest("SD upscale redraws the whole picture: send no mask with it.")
    args = list(body.script_args) + [None] * 4
    upscaler = args[2]
    if isinstance(upscaler, int) and not isinstance(upscaler, bool):
        listed = [u["name"] for u in catalog.upscalers(studio)]
        upscaler = listed[upscaler] if 0 <= upscaler < len(listed) else None
    if upscaler in (None, "None"):
        upscaler = "Lanczos"            # A1111's "None" resizes the picture plainly
    if len(body.init_images) > 1:
        notes.append("SD upscale runs on the first init image only.")
    image = load_image("init_images[0]", decode_image("init_images[0]", body.init_images[0]))
    raw = {**raw, "image": image, "sd_upscale": True, "sd_upscale_overlap": args[1], "sd_upscale_upscaler": upscaler,
           "sd_upscale_scale": args[3]}
    return Translated("img2img", [plan_sd_upscale(studio, raw)[1]], notes, hires=raw, tool=run_sd_upscale)


# extra-single-image's face restorers: its visibility field -> the words a file of that kind is named by
EXTRAS_RESTORERS = {"gfpgan_visibility": ("gfpgan", "restoreformer"), "codeformer_visibility": ("codeformer",)}


def extras_settings(body: ExtrasSingleBody, studio: Studio) -> UpscaleSettings:
    """extra-single-image's fields as the studio's upscale settings; GFPGAN's or CodeFormer's
    visibility picks a restorer file named so (one restorer a picture here)."""
    if body.resize_mode not in (0, 1):
        raise InvalidRequest(f"resize_mode must be 0 (by a factor) or 1 (to a size), got {body.resize_mode}.")
    asked = [(name, words) for name, words in EXTRAS_RESTORERS.items() if getattr(body, name)]
    if len(asked) > 1:
        raise InvalidRequest("One face restorer a picture here: set gfpgan_visibility or codeformer_visibility, "
                             "not both.")
    restorer, visibility = NONE, 1.0
    for name, words in asked:
        files = studio.names("face_restorers")
        restorer = next((n for n in files if any(w in n.lower() for w in words)), None)
        if restorer is None:
            raise InvalidRequest(f"{name} asks for a {words[0]} file in models/face_restorers (there: "
                                 f"{', '.join(files) or 'none'}); put e.g. {RESTORER_FILES} there.")
        visibility = getattr(body, name)
    by = body.resize_mode == 0
    return read_settings(studio, body.upscaler_1, body.upscaling_resize, 0 if by else body.upscaling_resize_w,
                         0 if by else body.upscaling_resize_h, body.upscaling_crop, body.upscaler_2,
                         body.extras_upscaler_2_visibility, restorer, visibility, body.codeformer_weight)


# -- answers ----------------------------------------------------------------------------------------

def answer(body: Txt2ImgBody, translated: Translated, results: list[GenerationResult]) -> dict[str, Any]:
    """A1111's `{images, parameters, info}`: the saved PNGs as they are on disk (with their
    parameters chunk), the request echoed with what was used, and info as a JSON string."""
    images = [g for r in results for g in r.images]
    request = translated.requests[0]
    spec = SCHEDULERS[request.scheduler]
    parameters = body.model_dump()
    parameters.update(sampler_name=spec.sampler, sampler_index=spec.sampler, scheduler=spec.schedule.lower())
    if isinstance(body, Img2ImgBody) and not body.include_init_images:
        parameters.update(init_images=None, mask=None)
    return {"images": [base64.b64encode(g.path.read_bytes()).decode("ascii") for g in images] if body.send_images else [],
            "parameters": parameters, "info": json.dumps(info(body, translated, results), ensure_ascii=False)}


def _subseeds(body: Txt2ImgBody, request, images: list) -> dict[str, Any]:
    """A1111's subseed fields: the variation seeds used (counting up), else what was sent."""
    used = [g.data.get("variation_seed") for g in images]
    if not request.variation_strength or None in used or not used:
        return {"subseed": body.subseed, "all_subseeds": [body.subseed] * len(images), "subseed_strength": 0}
    return {"subseed": used[0], "all_subseeds": used, "subseed_strength": request.variation_strength}


def info(body: Txt2ImgBody, translated: Translated, results: list[GenerationResult]) -> dict[str, Any]:
    images = [g for r in results for g in r.images]
    request, first = translated.requests[0], (images[0].data if images else {})
    model, vae = first.get("model") or {}, first.get("vae") or {}
    seeds = [g.seed for g in images]
    img2img = translated.kind == "img2img"
    return {
        "prompt": body.prompt, "all_prompts": [g.data.get("prompt", "") for g in images],
        "negative_prompt": body.negative_prompt,
        "all_negative_prompts": [g.data.get("negative_prompt", "") for g in images],
        "seed": seeds[0] if seeds else results[0].seed, "all_seeds": seeds,
        **_subseeds(body, request, images),
        "width": first.get("width", request.width), "height": first.get("height", request.height),
        "sampler_name": SCHEDULERS[request.scheduler].sampler, "cfg_scale": request.cfg_scale,
        "steps": request.steps, "batch_size": request.batch_size, "restore_faces": "faces" in first,
        "face_restoration_model": (first.get("face_restoration") or {}).get("Face restoration"),
        "sd_model_name": model.get("name", request.model),
        "sd_model_hash": model.get("hash") or None, "sd_vae_name": vae.get("name"),
        "sd_vae_hash": vae["sha256"][:10] if vae.get("sha256") else None,
        "seed_resize_from_w": -1, "seed_resize_from_h": -1,
        "denoising_strength": request.strength if img2img else body.denoising_strength,
        "extra_generation_params": {"Schedule type": SCHEDULERS[request.scheduler].schedule},
        "index_of_first_image": 0, "infotexts": [g.parameters for g in images], "styles": body.styles,
        "job_timestamp": time.strftime("%Y%m%d%H%M%S"), "clip_skip": request.clip_skip,
        "is_using_inpainting_conditioning": bool(model.get("inpainting_unet")),
        "version": f"studio {__version__}",
        "notes": translated.notes + [n for r in results for n in r.notes],
        "interrupted": any(r.stopped for r in results),
    }
