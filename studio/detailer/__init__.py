"""The detailer (what ADetailer does, built in as Fooocus and Forge users expect): after a picture
is made, a detector finds regions (detectors.py), and each is redrawn as inpainting of a crop at
the model's own size with its own prompt and strength, pasted back with a feathered mask
(detail.py) — ordinary inpainting requests through the dispatcher, composed after the tab's own
run (a plain generation, the hires fix, SD upscale)."""
