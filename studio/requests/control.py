"""Control units (ControlNet, T2I-Adapter): the `control` field of a generation request.

A unit is plain data: a control picture (or None: the tab's own input picture), what prepares it
(a preprocessor, by name), the control model (a name in models/controlnet), and how strongly and
when it acts. `units(...)` reads them from the studio's own form, from sd-webui-controlnet's REST
unit objects (its field names, its enum names or numbers: what A1111 and Forge clients send) and
from gradio_client, and returns trusted units; disabled units and units with no model are dropped,
so a request that asks for nothing gets exactly the plain picture.

The preprocessors and the models are the studio's catalogs ("preprocessors", "controlnets" in
the boundary's Context): checked here when known, else by the engine's first step.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from studio.errors import InvalidRequest
from studio.fields import Context, bounded, empty, number, text
from studio.inputs import decode_base64, load_image, mask_from_image
from studio.requests.parsers import array

MAX_UNITS = 3
WEIGHT_RANGE = (0.0, 2.0)
PROCESSOR_RES_RANGE = (64, 2048)
THRESHOLD_RANGE = (-1.0, 1024.0)     # each preprocessor checks its own range; -1: its default

# (studio name, sd-webui-controlnet's label, its number): the table every reader and writer uses
CONTROL_MODES = (("balanced", "Balanced", 0), ("prompt", "My prompt is more important", 1),
                 ("control", "ControlNet is more important", 2))
RESIZE_MODES = (("just resize", "Just Resize", 0), ("crop and resize", "Crop and Resize", 1),
                ("resize and fill", "Resize and Fill", 2))
NO_MODEL = ("", "none", "None")
TITLE_HASH = re.compile(r"\s*\[[0-9a-fA-F]{8,}\]\s*$")      # "name [d14c016b]", as clients send titles


@dataclass(frozen=True, kw_only=True)
class ControlUnit:
    model: str                              # a name in models/controlnet
    module: str = "none"                    # the preprocessor
    image: np.ndarray | None = None         # RGB HxWx3 uint8; None: the tab's input picture
    mask: np.ndarray | None = None          # HxW uint8 (the inpaint preprocessor); None: the tab's mask
    weight: float = 1.0
    start: float = 0.0                      # fraction of the denoising steps where it starts acting
    end: float = 1.0                        # ... and stops
    control_mode: str = "balanced"
    resize_mode: str = "crop and resize"
    processor_res: int = 512
    threshold_a: float = -1.0               # the preprocessor's own settings; -1: its default
    threshold_b: float = -1.0
    pixel_perfect: bool = False             # the preprocessor's resolution from the picture's size
    control_type: str = ""                  # a ControlNet-Union model's control type ("": from the preprocessor)

    def settings(self) -> dict[str, Any]:
        """The unit as plain data (no pictures), for the record and the API."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__ if k not in ("image", "mask")}


def _enum(label: str, value: Any, table: tuple, default: str) -> str:
    """A mode by the studio's name, sd-webui-controlnet's label or its number."""
    if value is None or value == "":
        return default
    for name, title, index in table:
        if (isinstance(value, str) and value.strip().lower() in (name, title.lower())) or (
                isinstance(value, int) and not isinstance(value, bool) and value == index):
            return name
    listed = ", ".join(f"{title!r} ({index})" for _, title, index in table)
    raise InvalidRequest(f"{label} must be one of {listed}, got {value!r}.")


def _flag(label: str, value: Any, default: bool) -> bool:
    if value is None or value == "":
        return default
    if isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)):
        return bool(value)
    raise InvalidRequest(f"{label} must be true or false, got {value!r}.")


def model_name(label: str, value: Any, known) -> str:
    """A control model by its name in models/controlnet, a client's title ("name [hash]"), or its
    name without the extension; "" for none."""
    name = TITLE_HASH.sub("", text(label, value)).strip()
    if name in NO_MODEL:
        return ""
    if known is None or name in known:
        return name
    stems = [k for k in known if k.rsplit(".", 1)[0] == name or k.rsplit("/", 1)[-1].rsplit(".", 1)[0] == name]
    if len(stems) == 1:
        return stems[0]
    raise InvalidRequest(f"Unknown ControlNet model {name!r}: put it in models/controlnet and press refresh "
                         f"(available: {', '.join(known) or 'none'}).")


def _picture(label: str, raw: dict, ctx: Context) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The control picture and its mask: `image` (or `input_image`) as a picture, or
    sd-webui-controlnet's {"image": ..., "mask": ...}; the mask also as `mask`/`mask_image`."""
    image = raw.get("image", raw.get("input_image"))
    mask = raw.get("mask", raw.get("mask_image"))
    if isinstance(image, dict) and ("image" in image or "mask" in image):
        image, mask = image.get("image"), image.get("mask", mask)
    picture = None
    if isinstance(image, str) and image:        # from JSON: base64 only (a text is never a path here)
        image = decode_base64(f"{label} picture", image)
    if isinstance(mask, str) and mask:
        mask = decode_base64(f"{label} mask", mask)
    if not empty(image):
        pic = load_image(f"{label} picture", image)
        if pic.width * pic.height > ctx.limits.max_pixels * 4:
            raise InvalidRequest(f"{label} picture is {pic.width}x{pic.height}; too large for this studio.")
        picture = array(pic)
    return picture, (None if empty(mask) else array(mask_from_image(f"{label} mask", mask)))


def unit(label: str, raw: Any, ctx: Context) -> ControlUnit | None:
    """One unit from a dict of sd-webui-controlnet's fields (or the studio's own names); None when
    it is disabled or names no model. Keys neither knows are ignored, as sd-webui-controlnet does."""
    if isinstance(raw, ControlUnit):
        raw = {**raw.settings(), "image": raw.image, "mask": raw.mask}
    if not isinstance(raw, dict):
        raise InvalidRequest(f"{label} must be an object of unit settings (model, module, image, weight...).")
    if not _flag(f"{label} enabled", raw.get("enabled"), True):
        return None
    model = model_name(f"{label} model", raw.get("model"), ctx.known.get("controlnets"))
    if not model:
        return None
    module = text(f"{label} module", raw.get("module")).strip() or "none"
    known = ctx.known.get("preprocessors")
    if known is not None and module not in known:
        raise InvalidRequest(f"Unknown preprocessor {module!r} in {label} (known: {', '.join(known)}).")
    start = bounded(f"{label} start", _first(raw, "guidance_start", "start", 0.0), 0.0, 1.0, integer=False)
    end = bounded(f"{label} end", _first(raw, "guidance_end", "end", 1.0), 0.0, 1.0, integer=False)
    if start > end:
        raise InvalidRequest(f"{label}: the start ({start:g}) is after the end ({end:g}).")
    res = number(f"{label} processor resolution", _first(raw, "processor_res", "resolution", 512), integer=True)
    image, mask = _picture(label, raw, ctx)
    return ControlUnit(
        model=model, module=module, image=image, mask=mask, start=float(start), end=float(end),
        weight=float(bounded(f"{label} weight", _first(raw, "weight", "", 1.0), *WEIGHT_RANGE, integer=False)),
        control_mode=_enum(f"{label} control mode", raw.get("control_mode"), CONTROL_MODES, "balanced"),
        resize_mode=_enum(f"{label} resize mode", raw.get("resize_mode"), RESIZE_MODES, "crop and resize"),
        processor_res=512 if res in (-1, 0) else int(bounded(f"{label} processor resolution", res,
                                                             *PROCESSOR_RES_RANGE, integer=True)),
        threshold_a=float(bounded(f"{label} threshold A", _first(raw, "threshold_a", "", -1.0), *THRESHOLD_RANGE,
                                  integer=False)),
        threshold_b=float(bounded(f"{label} threshold B", _first(raw, "threshold_b", "", -1.0), *THRESHOLD_RANGE,
                                  integer=False)),
        pixel_perfect=_flag(f"{label} pixel perfect", raw.get("pixel_perfect"), False),
        control_type=text(f"{label} control type", _first(raw, "control_type", "union_control_type", "")).strip())


def _first(raw: dict, key: str, other: str, default: Any) -> Any:
    for k in (key, other):
        if k and raw.get(k) is not None and raw.get(k) != "":
            return raw[k]
    return default


def units(label: str, value: Any, ctx: Context) -> tuple[ControlUnit, ...]:
    """Control units from a list (one dict alone is a list of one), at most MAX_UNITS enabled."""
    if empty(value):
        return ()
    if isinstance(value, (dict, ControlUnit)):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise InvalidRequest("ControlNet units must be a list of unit settings.")
    if len(value) > 3 * MAX_UNITS:
        raise InvalidRequest(f"{len(value)} ControlNet units; at most {MAX_UNITS} at once.")
    out = [u for i, raw in enumerate(value) if (u := unit(f"ControlNet unit {i + 1}", raw, ctx)) is not None]
    if len(out) > MAX_UNITS:
        raise InvalidRequest(f"{len(out)} ControlNet units are enabled; at most {MAX_UNITS} at once.")
    return tuple(out)


def has_picture(u: ControlUnit, mode: str) -> bool:
    """Whether the unit has a picture to work from (its own, or the tab's input)."""
    return u.image is not None or mode != "txt2img"
