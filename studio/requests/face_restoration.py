"""Face restoration's own fields (A1111's "Restore faces": studio/face_restoration runs it),
declared once like the detailer's: the txt2img and img2img tabs and endpoints take them after the
request's fields; Extras takes the same restorer, visibility and weight. `FaceRestoration` is what
a postprocessing job (an UpscaleRequest) carries: the files resolved, the numbers checked."""

from __future__ import annotations

from dataclasses import dataclass, fields
from functools import cache
from typing import Any

from studio.errors import InvalidRequest
from studio.fields import Choice, Context, Field, Flag, Number, declare, table, take_table
from studio.requests.detailer import YOLO_HINT

SWITCH = "restore_faces"
MODES = ("txt2img", "img2img")
AUTOMATIC = ("", "Automatic")                   # the first file of its folder
RESTORER_FILES = "GFPGANv1.4.pth, RestoreFormer.pth or CodeFormer's codeformer.pth"
DETECTOR_FILE = "OpenCV's face_detection_yunet_2023mar.onnx (OpenCV Zoo, MIT)"


@dataclass(frozen=True, kw_only=True)
class FaceRestorationFields:
    restore_faces: bool = declare(False, Flag(), "Restore faces", modes=MODES, group="faces",
                                  caption="Restore faces (GFPGAN, RestoreFormer, CodeFormer)")
    face_restorer: str | None = declare(None, Choice(catalog="face_restorers", blank=AUTOMATIC, noun="face restorer",
                                                   where="models/face_restorers"),
                                        "Face restoration", caption="Face restorer", modes=MODES, group="faces:1")
    face_detector: str | None = declare(None, Choice(catalog="face_detectors", blank=AUTOMATIC, noun="face detector",
                                                   where="models/detectors", hint=YOLO_HINT),
                                        "Face detector", modes=MODES, group="faces:1")
    face_visibility: float = declare(1.0, Number(0.0, 1.0, step=0.05), "Face restoration visibility",
                                     caption="Visibility", modes=MODES, group="faces:2")
    codeformer_weight: float = declare(0.5, Number(0.0, 1.0, step=0.05), "CodeFormer weight",
                                       caption="CodeFormer weight (0 = most restored, 1 = most like the picture)",
                                       modes=MODES, group="faces:2")
    face_confidence: float = declare(0.7, Number(0.05, 1.0, step=0.05), "Face confidence",
                                     caption="Face detection confidence", modes=MODES, group="faces:2")


@cache
def face_fields() -> tuple[Field, ...]:
    return table(FaceRestorationFields)


FIELDS = tuple(f.name for f in fields(FaceRestorationFields))


@dataclass(frozen=True)
class FaceRestoration:
    restorer: str              # a file of models/face_restorers
    detector: str              # a file of models/detectors
    visibility: float = 1.0
    weight: float = 0.5        # CodeFormer's fidelity (the others ignore it)
    confidence: float = 0.7

    def recipe(self) -> dict[str, Any]:
        """A1111's infotext key (and the studio's own for what A1111 keeps in its settings), each
        the label of its field, so that PNG Info reads them back (studio/outputs/pnginfo.py)."""
        keys = {"Face restoration": self.restorer, "Face restoration visibility": self.visibility,
                "CodeFormer weight": self.weight, "Face detector": self.detector, "Face confidence": self.confidence}
        return {k: v for k, v in keys.items() if not (k == "Face restoration visibility" and v == 1.0)}


def resolve(restorer: str | None, detector: str | None, restorers: list[str], detectors: list[str],
            **numbers: float) -> FaceRestoration:
    """The files named (None: the first of each folder), or a message that says which to add."""
    if not restorers:
        raise InvalidRequest(f"Restoring faces needs a face restorer file: put {RESTORER_FILES} in "
                             f"models/face_restorers and press refresh.")
    if not detectors:
        raise InvalidRequest(f"Restoring faces needs a face detector file: put {DETECTOR_FILE} in "
                             f"models/detectors and press refresh.")
    return FaceRestoration(restorer or restorers[0], detector or detectors[0], **numbers)


def take_faces(raw: dict, restorers: list[str], detectors: list[str], limits: Any = None) -> FaceRestoration | None:
    """Take face restoration's fields out of a tab's or a caller's fields; None when it is off."""
    got = take_table(face_fields(), raw, Context("txt2img", limits,
                                                 {"face_restorers": restorers, "face_detectors": detectors}))
    if got is None:
        return None
    return resolve(got["face_restorer"], got["face_detector"], restorers, detectors,
                   visibility=got["face_visibility"], weight=got["codeformer_weight"],
                   confidence=got["face_confidence"])
