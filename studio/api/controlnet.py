"""sd-webui-controlnet's REST interface (Forge speaks it too), as its clients use it:

- units in `alwayson_scripts: {"controlnet": {"args": [unit, ...]}}` of /sdapi/v1/txt2img and
  img2img, with its unit fields (enabled, image / input_image as base64 or {"image", "mask"}, mask,
  module, model by title or name, weight, resize_mode, processor_res, threshold_a/b,
  guidance_start/end, control_mode, pixel_perfect; names or numbers; other keys ignored);
- its routes: /controlnet/version, model_list, module_list, control_types, settings and detect.

Pictures are decoded here (base64 only: a text is never a path); the units then go through the
same boundary as the tabs' (studio/requests/control.py).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter, Body

from studio.api.schema import Txt2ImgBody
from studio.control.preprocessors import ALIASES, PREPROCESSORS, UNION_TYPES
from studio.errors import InvalidRequest
from studio.inputs import encode_base64, load_image
from studio.requests.control import MAX_UNITS
from studio.serving.studio import Studio

SCRIPT = "controlnet"
VERSION = 2          # the API version sd-webui-controlnet reports (clients check it is there)
PICTURES = ("image", "input_image", "mask", "mask_image")


def is_controlnet(title: str) -> bool:
    return title.strip().lower() == SCRIPT


def units(body: Txt2ImgBody, decode) -> list | None:
    """The units a body's alwayson_scripts carry (pictures decoded with `decode(name, text)`);
    None when it has none."""
    entry = next((v for k, v in (body.alwayson_scripts or {}).items() if is_controlnet(k)), None)
    if entry is None:
        return None
    args = entry.get("args") if isinstance(entry, dict) else entry
    if not args:
        return None
    if not isinstance(args, list):
        raise InvalidRequest("alwayson_scripts.controlnet.args must be a list of units.")
    return [_decoded(f"ControlNet unit {i + 1}", u, decode) if isinstance(u, dict) else u
            for i, u in enumerate(args)]


def _decoded(label: str, unit: dict, decode) -> dict:
    out = dict(unit)
    for key in PICTURES:
        value = out.get(key)
        if isinstance(value, dict):          # {"image": b64, "mask": b64}
            out[key] = {k: decode(f"{label} {k}", v) if isinstance(v, str) and v else None
                        for k, v in value.items() if k in ("image", "mask")}
        elif isinstance(value, str):
            out[key] = decode(f"{label} {key}", value) if value.strip() else None
        elif value is not None and not isinstance(value, dict):
            raise InvalidRequest(f"{label} {key} must be a base64 picture.")
    return out


def _module_detail() -> dict[str, Any]:
    def slider(s, name):
        return None if s is None else {"name": s.label, "value": s.default, "min": s.low, "max": s.high,
                                       "step": s.step}
    return {name: {"model_free": False, "sliders": [x for x in (
        {"name": "Processor Res", "value": 512, "min": 64, "max": 2048} if p.resolution else None,
        slider(p.a, "a"), slider(p.b, "b")) if x is not None]} for name, p in PREPROCESSORS.items()}




def routes(studio: Studio, decode, route_class, dependencies: list) -> list:
    """The /controlnet routes, behind the same logins and body limits as /sdapi/v1."""
    router = APIRouter(prefix="/controlnet", route_class=route_class, dependencies=dependencies,
                       tags=["sd-webui-controlnet-compatible"])

    @router.get("/version")
    def version() -> dict:
        return {"version": VERSION}

    @router.get("/model_list")
    def model_list(update: bool = True) -> dict:
        return {"model_list": [studio.control_title(n) for n in studio.names("controlnet", rescan=update)]}

    @router.get("/module_list")
    def module_list(alias_names: bool = False) -> dict:
        names = [*PREPROCESSORS, *(ALIASES if alias_names else ())]
        return {"module_list": names, "module_detail": _module_detail()}

    @router.get("/control_types")
    def control_types() -> dict:
        return {"control_types": {t: {"module_list": [n for n, p in PREPROCESSORS.items() if p.union_type == t],
                                      "model_list": studio.names("controlnet")} for t in UNION_TYPES}}

    @router.get("/settings")
    def settings() -> dict:
        return {"control_net_unit_count": MAX_UNITS, "control_net_max_models_num": MAX_UNITS}

    @router.post("/detect")
    def detect(body: dict = Body(...)) -> dict:
        module = body.get("controlnet_module", "none")
        if not isinstance(module, str):
            raise InvalidRequest("controlnet_module must be a preprocessor's name.")
        pictures = body.get("controlnet_input_images") or body.get("controlnet_images") or []  # older clients
        if not isinstance(pictures, list) or not pictures or len(pictures) > studio.limits.max_batch_count:
            raise InvalidRequest(f"controlnet_input_images must list 1 to {studio.limits.max_batch_count} "
                                 "base64 pictures.")
        masks = body.get("controlnet_masks") or []
        out = []
        for i, text in enumerate(pictures):
            picture = np.asarray(load_image(f"controlnet_input_images[{i}]", decode(f"controlnet_input_images[{i}]", text)))
            mask = (np.asarray(load_image(f"controlnet_masks[{i}]", decode(f"controlnet_masks[{i}]", masks[i]), mode="L"))
                    if i < len(masks) and masks[i] else None)
            res = body.get("controlnet_processor_res", 512)
            out.append(encode_base64(studio.detect(module, picture, processor_res=512 if res in (-1, None) else res,
                                          threshold_a=_number(body, "controlnet_threshold_a"),
                                          threshold_b=_number(body, "controlnet_threshold_b"), mask=mask)))
        return {"images": out, "info": "Success"}

    return list(router.routes)


def _number(body: dict, key: str) -> float:
    value = body.get(key, -1)
    if value is None:
        return -1.0
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidRequest(f"{key} must be a number.")
    return float(value)
