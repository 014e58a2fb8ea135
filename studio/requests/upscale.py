"""UpscaleRequest: a picture made bigger by an upscaler and/or its faces restored (A1111's
postprocessing), a job of the dispatcher like a generation (Extras, the hires fix's picture
upscalers, Restore faces after a tab's run), so it waits its turn in the fair queue, stops on
Stop and runs where the generations run (a Ray worker when they serve). Plain data, checked by
its caller (studio/upscale/extras.py, hires.py, faces.py); run by studio/generation/upscale.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from studio.requests.face_restoration import FaceRestoration

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
    faces: FaceRestoration | None = None   # then the faces restored
    kind: str | None = "upscale"           # the saved file's name: NNNNN-<kind>.png (None: NNNNN-<seed>.png ...)
    seed: int = 0                          # ... the seed of the generated picture it finishes
    model: str = ""                        # (a generation's field; an upscale runs on no model)
