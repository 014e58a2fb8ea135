"""The request boundary: every bad input becomes one clear InvalidRequest message."""

from __future__ import annotations

import io

import numpy as np

import pytest
from PIL import Image

from studio.errors import InvalidRequest
from studio.requests import Limits, make_request

IMG = Image.new("RGB", (64, 64), "white")
MASK = Image.new("L", (64, 64), 255)


@pytest.mark.parametrize("kwargs, message", [
    (dict(steps=0), "Steps must be between 1 and 150"),
    (dict(steps=151), "Steps must be between 1 and 150"),
    (dict(steps=2.5), "Steps must be a whole number"),
    (dict(steps="many"), "Steps must be a number"),
    (dict(steps=None), "Steps is missing"),
    (dict(cfg_scale=float("nan")), "CFG scale must be a finite number"),
    (dict(cfg_scale=float("inf")), "CFG scale must be a finite number"),
    (dict(cfg_scale=-1), "CFG scale must be between"),
    (dict(width=100), "Width must be a multiple of 8"),
    (dict(height=30), "Height must be a multiple of 8"),
    (dict(width=32), "Width must be between 64"),
    (dict(width=100000, height=100000), "Width must be between"),
    (dict(seed=-2), "Seed must be between"),
    (dict(seed=2**40), "Seed must be between"),
    (dict(batch_size=0), "Batch size must be between"),
    (dict(batch_count=99), "Batch count must be between"),
    (dict(scheduler="Euler b"), "Unknown scheduler 'Euler b'"),
    (dict(negative_presets=["bad feet"]), "Unknown negative preset 'bad feet'"),
    (dict(style="Baroque"), "Unknown style 'Baroque'"),
    (dict(prompt="x" * 10_001), "limit is 10000"),
    (dict(colour="red"), "Unknown parameter"),
])
def test_bad_txt2img_fields(kwargs, message):
    with pytest.raises(InvalidRequest, match=message):
        make_request(known_presets=["bad hands"], known_styles=["Anime"], **kwargs)


def test_pixel_budget_is_checked_before_anything_is_allocated():
    with pytest.raises(InvalidRequest, match="pixels"):
        make_request(width=2048, height=2048, limits=Limits(max_pixels=1024 * 1024))


def test_good_request_is_normalised():
    r = make_request(prompt="a\x00b\x07c\nd", steps=20.0, width=512.0, seed="12",
                     negative_presets="bad hands", style="None")
    assert r.prompt == "abc\nd" and r.steps == 20 and r.width == 512 and r.seed == 12
    assert r.negative_presets == ("bad hands",) and r.style is None


@pytest.mark.parametrize("image, message", [
    (None, "no image"),
    ("/no/such/file.png", "could not be read"),
    (b"garbage", "expected an image"),
])
def test_unreadable_images(image, message):
    with pytest.raises(InvalidRequest, match=message):
        make_request(mode="img2img", image=image)


def test_truncated_png_is_refused(tmp_path):
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), "red").save(buf, "PNG")
    path = tmp_path / "cut.png"
    path.write_bytes(buf.getvalue()[:60])
    with pytest.raises(InvalidRequest, match="could not be read"):
        make_request(mode="img2img", image=str(path))


@pytest.mark.parametrize("strength", [-0.1, 1.5, float("nan")])
def test_strength_outside_0_1(strength):
    with pytest.raises(InvalidRequest, match="Strength"):
        make_request(mode="img2img", image=IMG, strength=strength)


def test_empty_mask_and_mask_of_another_size():
    with pytest.raises(InvalidRequest, match="mask is empty"):
        make_request(mode="inpaint", image=IMG, mask=Image.new("L", (64, 64), 0))
    with pytest.raises(InvalidRequest, match="same size"):
        make_request(mode="inpaint", image=IMG, mask=Image.new("L", (32, 64), 255))
    with pytest.raises(InvalidRequest, match="no mask"):
        make_request(mode="inpaint", image=IMG, mask=None)


def test_painted_layer_alpha_is_the_mask():
    layer = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    layer.paste((255, 255, 255, 255), (0, 0, 10, 10))
    r = make_request(mode="inpaint", image=IMG, mask=layer)
    assert r.mask.shape == (64, 64) and r.mask[5, 5] == 255 and r.mask[30, 30] == 0


def test_rgba_input_is_flattened_on_white():
    rgba = Image.new("RGBA", (64, 64), (255, 0, 0, 0))
    r = make_request(mode="img2img", image=rgba)
    assert r.image.shape[2] == 3 and tuple(r.image[0, 0]) == (255, 255, 255)


def test_strength_times_steps_below_one_step_is_explained_at_the_boundary():
    with pytest.raises(InvalidRequest, match="Strength 0.01 x 20 steps leaves no denoising step"):
        make_request(mode="img2img", image=IMG, strength=0.01, steps=20)
    assert make_request(mode="img2img", image=IMG, strength=0.05, steps=20).strength == 0.05   # one step
    assert make_request(mode="img2img", image=IMG, strength=0, steps=20).strength == 0       # the input back


def test_a_request_is_plain_data_that_survives_another_process():
    """Images travel as uint8 arrays (read-only), so a request pickles whole for a backend in
    another process and comes back equal, pixels included."""
    import pickle
    layer = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    layer.paste((255, 255, 255, 255), (0, 0, 10, 10))
    r = make_request(mode="inpaint", image=IMG, mask=layer, prompt="a blue square",
                     references=[("green", Image.new("RGB", (32, 32), "green"))])
    assert r.image.dtype == np.uint8 and not r.image.flags.writeable
    back = pickle.loads(pickle.dumps(r))
    assert back == r and np.array_equal(back.image, r.image) and np.array_equal(back.mask, r.mask)
    assert back.reference_images()[0][0] == "green" and back.reference_images()[0][1].getpixel((0, 0)) == (0, 128, 0)
    assert back.input_mask().mode == "L" and back.input_image().size == IMG.size


def test_an_input_sized_picture_is_bounded_by_the_studios_size_too():
    """Width and height 0 mean the input's own size: --max-side and the pixel budget hold for it as
    for a size typed in (issue 38: a 2112x64 input came back 2112x64; at --max-side 128 a 256x256
    input was made at 256)."""
    wide = Image.new("RGB", (2112, 64), "white")
    with pytest.raises(InvalidRequest, match="The input is 2112x64, larger than this studio makes .* for example 2048x"):
        make_request(mode="img2img", image=wide)
    small_studio = Limits(max_side=128, max_pixels=128 * 128)
    with pytest.raises(InvalidRequest, match="set the width and height, for example 128x128 \\(the picture is pasted"):
        make_request(mode="inpaint", image=Image.new("RGB", (256, 256)), mask=Image.new("L", (256, 256), 255),
                     limits=small_studio)
    assert make_request(mode="img2img", image=Image.new("RGB", (256, 256)), width=128, height=128,
                        limits=small_studio).width == 128            # a size within the limits: made
    assert make_request(mode="img2img", image=IMG).width == 0         # a small input: its own size, as before
