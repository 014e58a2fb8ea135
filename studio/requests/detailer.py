"""The detailer's own fields (what ADetailer does: each region a detector finds redrawn as
inpainting at the model's own size: studio/detailer/ runs it), declared once like the hires
fix's, under ADetailer's own argument names so that its REST form maps one to one; the txt2img
and img2img tabs and endpoints take them after the request's fields."""

from __future__ import annotations

from dataclasses import dataclass, fields
from functools import cache
from typing import Any

from studio.fields import Choice, Context, Field, Flag, Number, Text, declare, table, take_table

SWITCH = "ad_enable"
YOLO_HINT = ("YOLO .pt detectors are pickles: listed when the studio starts with --allow-pickle "
             "(ultralytics runs them).")
MODES = ("txt2img", "img2img")


@dataclass(frozen=True, kw_only=True)
class DetailerFields:
    ad_enable: bool = declare(False, Flag(), "ADetailer", modes=MODES, group="detailer",
                              caption="Detailer: find regions, redraw each at the model's own size")
    ad_model: str = declare("shapes", Choice(catalog="detectors", noun="detector", where="models/detectors",
                                             hint=YOLO_HINT), "ADetailer model",
                            caption="Detector", modes=MODES, group="detailer:1")
    ad_confidence: float = declare(0.3, Number(0.0, 1.0, step=0.01), "ADetailer confidence",
                                   caption="Detection confidence", modes=MODES, group="detailer:1")
    ad_prompt: str = declare("", Text(placeholder="the prompt when empty"), "ADetailer prompt",
                             caption="Detailer prompt", modes=MODES, group="detailer:2")
    ad_negative_prompt: str = declare("", Text(placeholder="the negative prompt when empty"),
                                      "ADetailer negative prompt", caption="Detailer negative prompt", modes=MODES,
                                      group="detailer:2")
    ad_denoising_strength: float = declare(0.4, Number(0.0, 1.0, step=0.01), "ADetailer denoising strength",
                                           caption="Denoising strength", modes=MODES, group="detailer:3")
    ad_dilate_erode: int = declare(4, Number(-32, 32, integer=True, step=1), "ADetailer dilate erode",
                                   caption="Grow the region (px)", modes=MODES, group="detailer:3")
    ad_mask_blur: int = declare(4, Number(0, 64, integer=True, step=1), "ADetailer mask blur",
                                caption="Mask blur (px)", modes=MODES, group="detailer:3")
    ad_inpaint_padding: int = declare(32, Number(0, 256, integer=True, step=4), "ADetailer inpaint padding",
                                      caption="Padding around the region (px)", modes=MODES, group="detailer:3")


@cache
def detailer_fields() -> tuple[Field, ...]:
    return table(DetailerFields)


FIELDS = tuple(f.name for f in fields(DetailerFields))


@dataclass(frozen=True)
class Detailer:
    model: str
    confidence: float
    prompt: str
    negative_prompt: str
    strength: float
    dilate: int
    blur: int
    padding: int

    def recipe(self) -> dict[str, Any]:
        """ADetailer's infotext keys."""
        keys = {"ADetailer model": self.model, "ADetailer prompt": self.prompt or None,
                "ADetailer negative prompt": self.negative_prompt or None, "ADetailer confidence": self.confidence,
                "ADetailer dilate erode": self.dilate, "ADetailer mask blur": self.blur,
                "ADetailer denoising strength": self.strength, "ADetailer inpaint only masked": True,
                "ADetailer inpaint padding": self.padding}
        return {k: v for k, v in keys.items() if v is not None}


def take_detailer(raw: dict, detectors: list[str], mode: str, limits: Any = None) -> Detailer | None:
    """Take the detailer's fields out of a tab's or a caller's fields; None when it is off."""
    got = take_table(detailer_fields(), raw, Context(mode, limits, {"detectors": detectors}))
    if got is None:
        return None
    return Detailer(got["ad_model"], got["ad_confidence"], got["ad_prompt"], got["ad_negative_prompt"],
                    got["ad_denoising_strength"], got["ad_dilate_erode"], got["ad_mask_blur"], got["ad_inpaint_padding"])
