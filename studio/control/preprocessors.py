"""Preprocessors: a picture becomes the map a control model was trained on (edges, lines, a blurred
or shuffled copy...). Only those that need no downloaded weights live here; each is one short
function over OpenCV and NumPy, and the table says its settings (A1111's threshold A/B sliders).

Maps are float32 HxWx3 in [0, 1], white where the control is (white strokes on black, as
ControlNet's canny, scribble and lineart models take them); the inpaint map marks the pixels to
repaint with -1, as ControlNet's inpaint model takes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from studio.control.annotators import DEPTH, NORMAL, POSE, SEGMENT, Annotator
from studio.errors import InvalidRequest


@dataclass(frozen=True)
class Setting:
    """A preprocessor's threshold A or B: how the slider shows it and what it accepts."""
    label: str
    default: float
    low: float
    high: float
    step: float = 1.0


Run = Callable[[np.ndarray, float, float, "np.ndarray | None", int], np.ndarray]


@dataclass(frozen=True)
class Preprocessor:
    name: str                  # sd-webui-controlnet's module name where the behaviour is the same
    label: str
    run: Run | None            # (RGB uint8, threshold A, threshold B, mask or None, seed) -> map
    a: Setting | None = None
    b: Setting | None = None
    resolution: bool = True    # runs at the unit's processor resolution (else at the picture's size)
    union_type: str = ""       # the control type of a ControlNet-Union model it feeds
    annotator: Annotator | None = None   # instead of `run`: a model from models/annotators (annotators.py)


def _cv2():
    import cv2
    cv2.setNumThreads(1)       # a few small pictures: threads only compete with the denoiser
    return cv2


def _grey(rgb: np.ndarray) -> np.ndarray:
    return _cv2().cvtColor(rgb, _cv2().COLOR_RGB2GRAY)


def _three(grey: np.ndarray) -> np.ndarray:
    """A one-channel map in [0, 1] as the three channels control models take."""
    return np.repeat(np.clip(grey, 0.0, 1.0).astype(np.float32)[..., None], 3, axis=2)


def none(rgb, a, b, mask, seed):
    return rgb.astype(np.float32) / 255.0


def invert(rgb, a, b, mask, seed):
    """Black lines on white (a drawing on paper) -> white lines on black."""
    return 1.0 - rgb.astype(np.float32) / 255.0


def canny(rgb, a, b, mask, seed):
    """Canny's edges with hysteresis thresholds A (low) and B (high), on 0-255 gradients."""
    if a > b:
        raise InvalidRequest(f"Canny's low threshold ({a:g}) is above its high threshold ({b:g}).")
    return _three(_cv2().Canny(rgb, a, b) / 255.0)


def scribble_xdog(rgb, a, b, mask, seed):
    """A scribble from a picture: dark thin structures, found as a difference of Gaussians
    (XDoG's idea) above threshold A, drawn as white strokes."""
    cv2 = _cv2()
    grey = _grey(rgb).astype(np.float32)
    dog = cv2.GaussianBlur(grey, (0, 0), 5.0) - cv2.GaussianBlur(grey, (0, 0), 0.5)
    return _three((dog > a).astype(np.float32))


def softedge_gradient(rgb, a, b, mask, seed):
    """Soft edges: the gradient's size on a slightly blurred picture, its 99th percentile white."""
    cv2 = _cv2()
    grey = cv2.GaussianBlur(_grey(rgb).astype(np.float32), (0, 0), max(a, 0.1))
    size = np.hypot(cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1))
    top = float(np.percentile(size, 99))
    return _three(size / top if top > 0 else size)


def lineart_standard(rgb, a, b, mask, seed):
    """Line art from edges: how much darker each pixel is than its blurred neighbourhood (any
    channel), the typical line's darkness white."""
    cv2 = _cv2()
    x = rgb.astype(np.float32)
    darker = (cv2.GaussianBlur(x, (0, 0), 6.0) - x).max(axis=2).clip(0, 255)
    lines = darker[darker > 8]
    scale = max(float(np.median(lines)) if lines.size else 0.0, 16.0)
    return _three(darker / scale)


def tile_resample(rgb, a, b, mask, seed):
    """A smaller copy (down by A): the tile model fills in the detail at the size it is made."""
    h, w = rgb.shape[:2]
    small = _cv2().resize(rgb, (max(8, round(w / a)), max(8, round(h / a))), interpolation=_cv2().INTER_AREA)
    return small.astype(np.float32) / 255.0


def blur_gaussian(rgb, a, b, mask, seed):
    return _cv2().GaussianBlur(rgb, (0, 0), a).astype(np.float32) / 255.0


def inpaint(rgb, a, b, mask, seed):
    """The picture with the pixels to repaint at -1 (ControlNet's inpaint model)."""
    if mask is None:
        raise InvalidRequest("The inpaint preprocessor needs a mask: use it on the Inpainting tab, or give "
                             "the unit a mask.")
    out = rgb.astype(np.float32) / 255.0
    out[mask > 127] = -1.0
    return out


def shuffle(rgb, a, b, mask, seed):
    """The picture's content moved along a smooth random flow (fixed by the seed): colours and
    textures without their places (ControlNet's shuffle model)."""
    cv2 = _cv2()
    h, w = rgb.shape[:2]
    rng = np.random.default_rng(seed)
    flow = [cv2.GaussianBlur(rng.uniform(-1, 1, (h, w)).astype(np.float32), (0, 0), max(h, w) / 16)
            for _ in range(2)]
    flow = [f / (np.abs(f).max() or 1.0) for f in flow]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    map_x = (xs + flow[0] * w / 2) % w
    map_y = (ys + flow[1] * h / 2) % h
    return cv2.remap(rgb, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP).astype(np.float32) / 255.0


PREPROCESSORS: dict[str, Preprocessor] = {p.name: p for p in (
    Preprocessor("none", "none (the picture is the map)", none, resolution=False),
    Preprocessor("invert", "invert (black lines on white -> white on black)", invert, resolution=False,
                 union_type="scribble"),
    Preprocessor("canny", "canny edges", canny, Setting("Low threshold", 100, 1, 255),
                 Setting("High threshold", 200, 1, 255), union_type="canny"),
    Preprocessor("scribble_xdog", "scribble from a picture (XDoG)", scribble_xdog,
                 Setting("XDoG threshold", 32, 1, 64), union_type="scribble"),
    Preprocessor("softedge_gradient", "soft edges (gradient)", softedge_gradient,
                 Setting("Blur", 1.0, 0.1, 64.0, 0.1), union_type="hed"),
    Preprocessor("lineart_standard", "line art from edges", lineart_standard, union_type="lineart"),
    Preprocessor("tile_resample", "tile (a smaller copy)", tile_resample, Setting("Down sampling rate", 1.0, 1.0, 64.0, 0.5),
                 resolution=False, union_type="tile"),
    Preprocessor("blur_gaussian", "blur", blur_gaussian, Setting("Sigma", 9.0, 0.01, 64.0, 0.01), union_type="tile"),
    Preprocessor("inpaint", "inpaint (the masked picture)", inpaint, resolution=False, union_type="inpaint"),
    Preprocessor("shuffle", "shuffle", shuffle, union_type=""),
    Preprocessor("depth_anything", "depth (Depth Anything: its files in models/annotators/depth-anything)", None,
                 annotator=DEPTH, union_type="depth"),
    Preprocessor("normal_from_depth", "normals from depth (Depth Anything: models/annotators/depth-anything)", None,
                 annotator=NORMAL, union_type="normal"),
    Preprocessor("pose_vitpose", "pose, OpenPose's colours (ViTPose: models/annotators/vitpose)", None,
                 annotator=POSE, union_type="openpose"),
    Preprocessor("segmentation_ade20k", "segmentation, ADE20K colours (SegFormer: models/annotators/segformer-ade20k)",
                 None, annotator=SEGMENT, union_type="segment"),
)}
# a ControlNet-Union model's control types, in the order its control_type vector has them
UNION_TYPES = {"openpose": 0, "depth": 1, "hed": 2, "scribble": 2, "softedge": 2, "canny": 3, "lineart": 3,
               "mlsd": 3, "normal": 4, "segment": 5, "tile": 6, "inpaint": 7, "repaint": 7}
# sd-webui-controlnet's other names for the same behaviour (what its clients send)
ALIASES = {"scribble": "scribble_xdog", "inpaint_only": "inpaint", "softedge": "softedge_gradient",
           "lineart": "lineart_standard", "tile": "tile_resample", "blur": "blur_gaussian",
           "invert (from white bg & black line)": "invert", "depth": "depth_anything",
           "depth_midas": "depth_anything", "depth_zoe": "depth_anything", "depth_leres": "depth_anything",
           "depth_anything_v2": "depth_anything", "normal_midas": "normal_from_depth",
           "openpose": "pose_vitpose",
           "seg_ofade20k": "segmentation_ade20k", "seg_ufade20k": "segmentation_ade20k"}


# what a model's name says it was trained on (sd-webui-controlnet's file names: control_v11p_sd15_canny,
# ..._scribble) -> the preprocessor that makes its map; a drawing on the sketch pad is a scribble already
MODEL_KINDS = (("canny", "canny"), ("scribble", "scribble_xdog"), ("softedge", "softedge_gradient"),
               ("lineart", "lineart_standard"), ("tile", "tile_resample"), ("inpaint", "inpaint"),
               ("shuffle", "shuffle"), ("depth", "depth_anything"), ("normal", "normal_from_depth"), ("pose", "pose_vitpose"),
               ("seg", "segmentation_ade20k"))


def suggested(model: str | None, drawn: bool) -> str | None:
    """The preprocessor a model's name asks for (None: its name says nothing)."""
    name = (model or "").lower()
    for word, module in MODEL_KINDS:
        if word in name:
            return "none" if drawn and word == "scribble" else module
    return None


def names() -> list[str]:
    """Every name a unit may give: the table's and the aliases clients send."""
    return [*PREPROCESSORS, *ALIASES]


def find(name: str) -> Preprocessor:
    p = PREPROCESSORS.get(ALIASES.get(name, name))
    if p is None:
        raise InvalidRequest(f"Unknown preprocessor {name!r} (known: {', '.join(PREPROCESSORS)}).")
    return p


def setting(p: Preprocessor, which: str, value: float) -> float:
    """Threshold A or B: the unit's value within the preprocessor's range, -1 for its default."""
    spec = p.a if which == "a" else p.b
    if spec is None:
        return 0.0
    if value == -1:
        return spec.default
    if not spec.low <= value <= spec.high:
        raise InvalidRequest(f"{p.label}: {spec.label} must be between {spec.low:g} and {spec.high:g}, got {value:g}.")
    return value
