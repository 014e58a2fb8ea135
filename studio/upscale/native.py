"""A text-to-image size far above the model's own (a side more than OVERSIZE times its native
side, where a model repeats its subject and takes minutes): drawn at the native size with the
asked shape, then upscaled to the size asked for, each picture saved both ways with a note. A1111
clients send 512x512 whatever the model (the embedded one draws 64 px); a size up to twice the
native side (SD 1.5 at 768 or 1024, SDXL at 2048) is drawn as asked, as A1111 does.

The upscaled picture keeps the drawn one's parameters with Extras' keys (`Postprocess upscale
to`, `Postprocess upscaler`), so PNG Info gives back the request that drew it."""

from __future__ import annotations

from typing import Callable

from studio.requests import MIN_SIDE
from studio.serving.sequence import Sequence
from studio.requests.tools import without_tools
from studio.serving.sequence import ComposedResult
from studio.upscale.hires import saved_upscale

OVERSIZE = 2.0
UPSCALER = "Lanczos"


def _side(value) -> int:
    try:
        return int(float(value or 0))
    except (TypeError, ValueError):
        return 0             # the request's own check says what is wrong with it


def oversized(studio, raw: dict) -> tuple[int, int] | None:
    """The size asked for when a side of it is more than OVERSIZE times the model's native side."""
    native = studio.model_info().native_size
    width, height = _side(raw.get("width")) or native, _side(raw.get("height")) or native   # 0: the native side
    return (width, height) if max(width, height) > OVERSIZE * native else None


def drawn_size(size: tuple[int, int], native: int) -> tuple[int, int]:
    """The asked shape with its long side at the native size, on the latent grid."""
    factor = max(size) / native
    return tuple(max(MIN_SIDE, round(side / factor / 8) * 8) for side in size)


def plan_from_native(studio, raw: dict):
    """The request that is drawn, checked before anything runs (the size asked for too: within
    this studio's limits, as if it were drawn)."""
    size = oversized(studio, raw)
    fields = without_tools(raw)
    studio.make_request("txt2img", **{**fields, "width": size[0], "height": size[1]})
    drawn = drawn_size(size, studio.model_info().native_size)
    return studio.make_request("txt2img", **{**fields, "width": drawn[0], "height": drawn[1]})


def run_from_native(studio, raw: dict, sequence: Sequence,
                    on_progress: Callable[[float, str], None] | None = None) -> ComposedResult:
    size, native = oversized(studio, raw), studio.model_info().native_size
    drawn = drawn_size(size, native)
    first = plan_from_native(studio, raw)
    say = on_progress or (lambda done, text: None)
    made = sequence.run(first, lambda u: u.kind == "progress" and say(u.done / u.total, f"Step {u.done}/{u.total}"))
    result = ComposedResult()
    if made is None or made.stopped or not made.images:
        result.stopped, result.notes = made is None or made.stopped, made.notes if made else ["Stopped."]
        return result
    result.first_pass, result.seed = made.images, made.seed
    result.notes = [*made.notes, f"{size[0]}x{size[1]} is more than {OVERSIZE:g}x {studio.model_info().name}'s native "
                                 f"{native} px side (where it repeats its subject): drawn at {drawn[0]}x{drawn[1]} "
                                 f"and upscaled by {UPSCALER}; the hires fix draws detail in at the bigger size."]
    keys = {"Postprocess upscale to": f"{size[0]}x{size[1]}", "Postprocess upscaler": UPSCALER}
    for picture in made.images:
        done = saved_upscale(picture, size, UPSCALER, keys, sequence, final_size=False, crop=True)
        if done is None:
            result.stopped = True
            break
        result.images += done.images
    return result
