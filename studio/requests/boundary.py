"""The boundary: `make_request(...)` takes raw values (from widgets, gradio_client or JSON, so
strings, floats and None are all possible), checks each field of the request's table once
(request.py: every field the mode uses, in the table's order, so that of several mistakes the
first field's is reported), then what only a pair of fields can say, and returns a frozen request
the engine can trust. Checks that need the loaded model (its size limits, a 9-channel UNet) are
the engine's first step.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from studio.errors import InvalidRequest
from studio.fields import Context
from studio.requests.control import has_picture
from studio.requests.request import MIN_SIDE, MODES, REGION_KEYWORDS, GenerationRequest, Limits, request_fields
from studio.samplers import scheduler_names


def _size_within_pixels(r: GenerationRequest, ctx: Context) -> None:
    if r.width and r.height and r.width * r.height > ctx.limits.max_pixels:
        raise InvalidRequest(f"{r.width}x{r.height} is {r.width * r.height:,} pixels; this studio allows "
                             f"at most {ctx.limits.max_pixels:,}.")


def _input_size_within_limits(r: GenerationRequest, ctx: Context) -> None:
    """Width or height 0 means the input's own: it too must be within this studio's size."""
    if r.mode == "txt2img" or r.image is None or (r.width and r.height):
        return
    lim, (ih, iw) = ctx.limits, r.image.shape[:2]
    width, height = r.width or iw // 8 * 8, r.height or ih // 8 * 8
    if max(width, height) <= lim.max_side and width * height <= lim.max_pixels:
        return
    scale = min(lim.max_side / max(width, height), (lim.max_pixels / (width * height)) ** 0.5)
    fit = (max(MIN_SIDE, int(width * scale) // 8 * 8), max(MIN_SIDE, int(height * scale) // 8 * 8))
    raise InvalidRequest(f"The input is {iw}x{ih}, larger than this studio makes ({lim.max_side} px a side, "
                         f"{lim.max_pixels:,} pixels): set the width and height, for example {fit[0]}x{fit[1]}"
                         + (" (the picture is pasted back at the input's size)." if r.mode == "inpaint" else "."))


def _variation_in_txt2img(r: GenerationRequest, ctx: Context) -> None:
    if r.variation_strength and r.mode != "txt2img":
        raise InvalidRequest("Variation seeds work in text to image only (here the starting noise is mixed "
                             "with the input picture); set the variation strength to 0.")


def _mask_fits_the_image(r: GenerationRequest, ctx: Context) -> None:
    if r.mode == "inpaint" and r.mask.shape[:2] != r.image.shape[:2]:
        (mh, mw), (ih, iw) = r.mask.shape[:2], r.image.shape[:2]
        raise InvalidRequest(f"The mask is {mw}x{mh} but the image is {iw}x{ih}; they must be the same size.")


def _a_denoising_step_is_left(r: GenerationRequest, ctx: Context) -> None:
    if r.mode != "txt2img" and 0 < r.strength and int(r.steps * r.strength) < 1:
        raise InvalidRequest(f"Strength {r.strength:g} x {r.steps} steps leaves no denoising step; raise "
                             "the strength or the steps.")


def _control_has_pictures(r: GenerationRequest, ctx: Context) -> None:
    for i, unit in enumerate(r.control, 1):
        if not has_picture(unit, r.mode):
            raise InvalidRequest(f"ControlNet unit {i} has no control picture: upload one (or draw on the "
                                 "sketch pad).")


def _painted_regions_have_prompts(r: GenerationRequest, ctx: Context) -> None:
    if r.regions_mask is not None and not REGION_KEYWORDS.search(r.prompt):
        raise InvalidRequest("Regions are painted but the prompt has none: write the unpainted part's prompt, "
                             "then each colour's, separated by ADDCOL (red first, then green, blue...).")


# what only two fields together can say, checked after every field on its own
PAIRS: tuple[Callable[[GenerationRequest, Context], None], ...] = (
    _size_within_pixels, _input_size_within_limits, _variation_in_txt2img, _mask_fits_the_image, _a_denoising_step_is_left,
    _control_has_pictures, _painted_regions_have_prompts)


def make_request(*, mode: str = "txt2img", limits: Limits = Limits(),
                 known_presets: Sequence[str] | None = None, known_styles: Sequence[str] | None = None,
                 known_loras: Sequence[str] | None = None, known_vaes: Sequence[str] | None = None,
                 known_controlnets: Sequence[str] | None = None, known_preprocessors: Sequence[str] | None = None,
                 **raw: Any) -> GenerationRequest:
    """Check raw inputs once and return a trusted request, or raise InvalidRequest. The names a
    field may take are checked against the `known_*` lists given (None: not checked)."""
    if mode not in MODES:
        raise InvalidRequest(f"Unknown mode {mode!r}; expected one of {', '.join(MODES)}.")
    unknown = set(raw) - set(GenerationRequest.__dataclass_fields__) - {"mode"}
    if unknown:
        raise InvalidRequest(f"Unknown parameter(s): {', '.join(sorted(unknown))}.")
    ctx = Context(mode, limits, {"presets": known_presets, "styles": known_styles, "loras": known_loras,
                                 "vaes": known_vaes, "samplers": scheduler_names(),
                                 "controlnets": known_controlnets, "preprocessors": known_preprocessors})
    values = {f.name: f.parse(raw.get(f.name, f.default), ctx) for f in request_fields() if mode in f.modes}
    request = GenerationRequest(mode=mode, **values)
    for check in PAIRS:
        check(request, ctx)
    return request
