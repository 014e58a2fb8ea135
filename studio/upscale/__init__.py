"""Bigger pictures, as callers that compose jobs: the hires fix (a txt2img pass, upscaled, then an
img2img pass: hires.py) and Extras (a picture upscaled and saved with its source's parameters:
extras.py). The upscale itself is a job of the dispatcher (studio/generation/upscale.py over
studio/models/upscalers.py)."""
