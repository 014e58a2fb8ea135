"""Wider pictures: outpainting extends the canvas and inpaints the new strips (issue 21), one
ordinary inpainting request."""
