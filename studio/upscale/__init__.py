"""Bigger and finished pictures, as callers that compose jobs: the hires fix (a txt2img pass,
upscaled, then an img2img pass: hires.py), SD upscale (a picture upscaled, then redrawn tile by
tile: sd_upscale.py), a size far above the model's own (drawn at its native size, upscaled:
native.py), Extras (a picture upscaled and saved with its source's parameters: extras.py) and
Restore faces after a tab's run (faces.py). The upscale and the face restoration are a job of the
dispatcher (studio/generation/upscale.py over studio/models/upscalers.py and
studio/face_restoration)."""

from __future__ import annotations


def txt2img_tool(studio, raw: dict):
    """The composing run a text-to-image request needs (called as tool(studio, raw, sequence,
    on_progress)), or None for a plain generation: the hires fix when it is on; drawing at the
    native size and upscaling for a size far above the model's; either (or the plain generation)
    followed by the finishing tools that are on (Restore faces, the detailer)."""
    from studio.upscale.hires import run_hires
    from studio.upscale.native import oversized, run_from_native
    base = run_hires if raw.get("hires") else run_from_native if oversized(studio, raw) else None
    return finished(base, "txt2img", raw)


def img2img_tool(studio, raw: dict):
    """The composing run an image-to-image request needs, or None: SD upscale when it is on, and
    the finishing tools after it (or after the plain request) when they are on."""
    from studio.requests.sd_upscale import SWITCH
    from studio.upscale.sd_upscale import run_sd_upscale
    base = run_sd_upscale if raw.get(SWITCH) else None
    return finished(base, "img2img", raw)


def finished(base, mode: str, raw: dict):
    """`base` (None: the plain generation) with the finishing tools that are on, in A1111's order:
    faces restored (faces.py), then the detailer (studio/detailer); None when none is."""
    from studio.detailer.detail import with_detailer
    from studio.upscale.faces import with_faces
    if raw.get("restore_faces"):
        base = with_faces(base, mode)
    if raw.get("ad_enable"):
        base = with_detailer(base, mode)
    return base
