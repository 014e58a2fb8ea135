"""Outpainting: the canvas, its fills and mask, and a real inpainting pass on the tiny model that
keeps every original pixel outside the blend band."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from studio.errors import InvalidRequest
from studio.outpaint.canvas import Extend, extend_canvas, outpaint_request, read_extend


def picture(w=40, h=24, seed=0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def test_the_canvas_and_mask_of_each_fill():
    image = picture()
    original = np.asarray(image)
    ext = Extend(left=16, right=0, up=8, down=0, fill="edge", band=4)
    canvas, mask = extend_canvas(image, ext, seed=1)
    c, m = np.asarray(canvas), np.asarray(mask)
    assert canvas.size == (56, 32) and mask.size == (56, 32)
    assert np.array_equal(c[8:, 16:], original)                      # the picture where it was
    assert np.array_equal(c[8:, :16], np.repeat(original[:, :1], 16, axis=1))   # edge colours outward
    assert (m[:8] == 255).all() and (m[:, :16] == 255).all()          # the new strips
    assert m[8 + 10, 16:][:4].tolist() == [255, 191, 128, 64] and (m[8 + 10, 16 + 4:] == 0).all()  # the band
    assert (m[8 + 4:, 16 + 4:] == 0).all()
    mirror = np.asarray(extend_canvas(image, Extend(0, 30, 0, 0, "mirror", 0), 1)[0])
    assert np.array_equal(mirror[:, 40:70], original[:, ::-1][:, :30])
    noise_a = np.asarray(extend_canvas(image, Extend(8, 0, 0, 0, "noise"), 5)[0])
    noise_b = np.asarray(extend_canvas(image, Extend(8, 0, 0, 0, "noise"), 5)[0])
    assert np.array_equal(noise_a, noise_b) and np.array_equal(noise_a[:, 8:], original)
    assert not np.array_equal(noise_a[:, :8], np.repeat(original[:, :1], 8, axis=1))


def test_a_mirror_wider_than_the_picture_still_fills():
    canvas, _ = extend_canvas(picture(10, 10), Extend(0, 35, 0, 0, "mirror", 0), 1)
    assert canvas.size == (45, 10)


@pytest.mark.parametrize("args, message", [
    ((0, 0, 0, 0), "at least one side"),
    ((-8, 0, 0, 0), "Left \\(pixels to add\\) must be between 0 and 1024"),
    ((8, 0, 0, 0, "blur"), "Fill must be one of edge, mirror, noise"),
    ((8, 0, 0, 0, "edge", 500), "Blend band must be between 0 and 128"),
])
def test_bad_outpaint_settings_are_refused(args, message):
    with pytest.raises(InvalidRequest, match=message):
        read_extend(*args)


def test_outpainting_keeps_the_original_pixels_outside_the_band(studio):
    image = picture(64, 64, seed=2)
    ext = read_extend(32, 0, 0, 16, "edge", 8)
    request = outpaint_request(studio, dict(image=image, prompt="a red circle", steps=3, seed=4, strength=1.0), ext)
    assert request.mode == "inpaint" and request.mask_blur == 0 and request.seed == 4
    result = studio.local.run(request).images[0]
    out = np.asarray(result.image.convert("RGB"))
    assert result.image.size == (96, 80)
    # outside the band (8 px from the left edge; the bottom edge too) every pixel is the original
    assert np.array_equal(out[:64 - 8, 32 + 8:], np.asarray(image)[:64 - 8, 8:])
    assert not np.array_equal(out[:, :32], np.asarray(extend_canvas(image, ext, 4)[0])[:, :32])
    assert "Outpaint pixels: left 32 right 0 up 0 down 16, Outpaint fill: edge, Outpaint band: 8" in result.parameters


def test_a_canvas_over_the_limits_is_refused(studio):
    with pytest.raises(InvalidRequest, match="The canvas would be 2064x64"):
        outpaint_request(studio, dict(image=picture(64, 64), prompt="x"), read_extend(1000, 1000, 0, 0))
