"""Wider pictures: outpainting extends the canvas and inpaints the new strips, one ordinary
inpainting request."""
