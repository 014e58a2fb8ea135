"""Bigger pictures, as callers that compose jobs: the hires fix (a txt2img pass, upscaled, then an
img2img pass: hires.py), SD upscale (a picture upscaled, then redrawn tile by tile: sd_upscale.py),
a size far above the model's own (drawn at its native size, upscaled:
native.py) and Extras (a picture upscaled and saved with its source's parameters: extras.py). The
upscale itself is a job of the dispatcher (studio/generation/upscale.py over
studio/models/upscalers.py)."""

from __future__ import annotations


def txt2img_tool(studio, raw: dict):
    """The composing run a text-to-image request needs (called as tool(studio, raw, sequence,
    on_progress)), or None for a plain generation: the hires fix when it is on; drawing at the
    native size and upscaling for a size far above the model's; either (or the plain generation)
    followed by the detailer when it is on (studio/detailer)."""
    from studio.upscale.hires import run_hires
    from studio.upscale.native import oversized, run_from_native
    base = run_hires if raw.get("hires") else run_from_native if oversized(studio, raw) else None
    return _detailed(base, "txt2img") if raw.get("ad_enable") else base


def img2img_tool(studio, raw: dict):
    """The composing run an image-to-image request needs, or None: SD upscale when it is on, and
    the detailer after it (or after the plain request) when that is on."""
    from studio.requests.sd_upscale import SWITCH
    from studio.upscale.sd_upscale import run_sd_upscale
    base = run_sd_upscale if raw.get(SWITCH) else None
    return _detailed(base, "img2img") if raw.get("ad_enable") else base


def _detailed(base, mode: str):
    from studio.detailer.detail import with_detailer
    return with_detailer(base, mode)
