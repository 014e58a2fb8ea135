"""Bigger pictures: upscalers (Lanczos, Nearest, model upscalers through spandrel, tiled) and the
hires fix (a txt2img pass, upscaled, then an img2img pass), as compositions of ordinary requests
(issue 21)."""
