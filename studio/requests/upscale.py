"""UpscaleRequest: a picture made bigger by an upscaler, a job of the dispatcher like a
generation (Extras, and the hires fix's picture upscalers), so it waits its turn in the fair
queue, stops on Stop and runs where the generations run (a Ray worker when they serve). Plain
data, checked by its caller (studio/upscale/extras.py, hires.py); run by
studio/generation/upscale.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

NONE = "None"      # no second upscaler


@dataclass(frozen=True, kw_only=True)
class UpscaleRequest:
    image: np.ndarray = field(repr=False, compare=False)   # RGB uint8, read-only
    size: tuple[int, int]                  # the picture made (width, height)
    upscaler: str
    second: str = NONE                     # a second upscaler blended in ...
    second_visibility: float = 0.0         # ... this much
    crop: bool = False                     # cover `size` and cut the overflow (else stretch to it)
    parameters: str = ""                   # what the saved picture records: A1111's text ...
    data: dict[str, Any] = field(default_factory=dict, compare=False)   # ... and the JSON record
    model: str = ""                        # (a generation's field; an upscale runs on no model)
