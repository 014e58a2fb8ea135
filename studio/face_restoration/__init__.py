"""Face restoration (what A1111's "Restore faces" and Extras' GFPGAN / CodeFormer do): faces found
by a detector file (detect.py: OpenCV's YuNet), each cropped square around the face, redrawn at
the restorer's size by a restorer file (restorers.py: GFPGAN, RestoreFormer, CodeFormer read by
spandrel) and pasted back through a feathered mask, blended by visibility (restore.py).

It runs inside a postprocessing job (an UpscaleRequest with `faces` set:
studio/generation/upscale.py), so it waits its turn and runs where the generations run; the
tabs compose that job after their own run (studio/upscale/faces.py)."""
