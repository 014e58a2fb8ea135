"""The hires fix's own fields, declared once like the request's (a text-to-image picture upscaled,
then an img2img pass at the bigger size: studio/upscale/hires.py runs it), and their check.

The txt2img tab and endpoint take them after the request's fields; an X/Y/Z axis on one of them
turns the hires fix on for its cells. The second pass records A1111's keys (`Hires upscale`,
`Hires steps`, `Hires upscaler`) through its request's recipe.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from functools import cache
from typing import Any

from studio.fields import Choice, Context, Field, Flag, Number, declare, table, take_table
from studio.requests.request import STEPS_RANGE

# A1111's latent upscalers: the first pass's latents resized (mode, antialias), no decode and encode
LATENT = {"Latent": ("bilinear", False), "Latent (antialiased)": ("bilinear", True),
          "Latent (bicubic)": ("bicubic", False), "Latent (bicubic antialiased)": ("bicubic", True),
          "Latent (nearest)": ("nearest", False), "Latent (nearest-exact)": ("nearest-exact", False)}
SCALE_RANGE = (1.0, 4.0)
DEFAULT_STRENGTH = 0.7        # A1111's default denoising strength for the second pass
SWITCH = "hires"              # the field that turns the fix on


@dataclass(frozen=True, kw_only=True)
class HiresFields:
    hires: bool = declare(False, Flag(), "Hires fix", modes=("txt2img",), group="hires",
                          caption="Hires fix: upscale, then a second pass at the bigger size")
    hires_scale: float = declare(2.0, Number(*SCALE_RANGE, step=0.05), "Hires upscale", caption="Upscale by",
                                 modes=("txt2img",), group="hires:1", axis=True)
    hires_steps: int = declare(0, Number(0, STEPS_RANGE[1], integer=True, step=1, cap="max_steps"), "Hires steps",
                               caption="Hires steps (0 = as many as the first pass)", modes=("txt2img",),
                               group="hires:1", axis=True)
    hires_strength: float = declare(DEFAULT_STRENGTH, Number(0.0, 1.0, step=0.01), "Hires strength",
                                    caption="Denoising strength", modes=("txt2img",), group="hires:2", axis=True)
    hires_upscaler: str = declare("Lanczos", Choice(catalog="hires_upscalers", noun="hires upscaler"),
                                  "Hires upscaler", caption="Upscaler", modes=("txt2img",), group="hires:2", axis=True,
                                  help="Latent: the first pass's latents resized (strength 0.5 or more); with "
                                       "strength 0 the picture is upscaled by Lanczos instead")


@cache
def hires_fields() -> tuple[Field, ...]:
    return table(HiresFields)


FIELDS = tuple(f.name for f in fields(HiresFields))


@dataclass(frozen=True)
class Hires:
    scale: float
    steps: int          # 0: as many as the first pass
    strength: float
    upscaler: str

    @property
    def latent(self) -> bool:
        return self.upscaler in LATENT

    def recipe(self, first_steps: int, steps: int) -> tuple[tuple[str, Any], ...]:
        return (("Steps", first_steps), ("Hires upscale", self.scale), ("Hires steps", steps),
                ("Hires upscaler", self.upscaler))


def take_hires(raw: dict, upscalers: list[str], limits: Any = None) -> Hires | None:
    """Take the hires fields out of a tab's or a caller's fields (nothing sent: the default);
    None when the hires fix is off."""
    got = take_table(hires_fields(), raw, Context("txt2img", limits, {"hires_upscalers": upscalers}))
    if got is None:
        return None
    return Hires(got["hires_scale"], got["hires_steps"], got["hires_strength"], got["hires_upscaler"])
