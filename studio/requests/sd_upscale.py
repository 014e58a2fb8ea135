"""SD upscale's own fields (A1111's img2img script of that name: the picture upscaled, then
redrawn tile by tile at the tab's size, the tiles overlapping and blended: studio/upscale/
sd_upscale.py runs it), declared once like the hires fix's; the img2img tab and endpoint take
them after the request's fields, REST as `script_name: "sd upscale"`."""

from __future__ import annotations

from dataclasses import dataclass, fields
from functools import cache
from typing import Any

from studio.fields import Choice, Context, Field, Flag, Number, declare, table, take_table

SWITCH = "sd_upscale"


@dataclass(frozen=True, kw_only=True)
class SdUpscaleFields:
    sd_upscale: bool = declare(False, Flag(), "SD upscale", modes=("img2img",), group="sd_upscale",
                               caption="SD upscale: upscale the picture, then redraw it tile by tile at the set size")
    sd_upscale_scale: float = declare(2.0, Number(1.0, 4.0, step=0.05), "SD upscale scale", caption="Scale factor",
                                      modes=("img2img",), group="sd_upscale:1")
    sd_upscale_overlap: int = declare(64, Number(0, 256, integer=True, step=8), "SD upscale overlap",
                                      caption="Tile overlap (px)", modes=("img2img",), group="sd_upscale:1")
    sd_upscale_upscaler: str = declare("Lanczos", Choice(catalog="upscalers", noun="upscaler"), "SD upscale upscaler",
                                       caption="Upscaler", modes=("img2img",), group="sd_upscale:1")


@cache
def sd_upscale_fields() -> tuple[Field, ...]:
    return table(SdUpscaleFields)


FIELDS = tuple(f.name for f in fields(SdUpscaleFields))


@dataclass(frozen=True)
class SdUpscale:
    scale: float
    overlap: int
    upscaler: str

    def recipe(self) -> dict[str, Any]:
        return {"SD upscale scale": self.scale, "SD upscale overlap": self.overlap, "SD upscale upscaler": self.upscaler}


def take_sd_upscale(raw: dict, upscalers: list[str], limits: Any = None) -> SdUpscale | None:
    """Take the SD upscale fields out of a tab's or a caller's fields; None when it is off."""
    got = take_table(sd_upscale_fields(), raw, Context("img2img", limits, {"upscalers": upscalers}))
    if got is None:
        return None
    return SdUpscale(got["sd_upscale_scale"], got["sd_upscale_overlap"], got["sd_upscale_upscaler"])
