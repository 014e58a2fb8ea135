"""Variation seeds (A1111's subseed): the starting noise slerped from the seed's toward the
variation seed's, on the tiny model (real generation, CPU)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from studio.errors import InvalidRequest
from studio.outputs.metadata import read_metadata
from studio.outputs.pnginfo import read_info
from studio.requests import make_request


def pixels(result, i=0):
    return np.asarray(result.images[i].image.convert("RGB"), dtype=np.int16)


def run(studio, **kw):
    return studio.local.run(make_request(**{"prompt": "a red circle", "steps": 4, **kw}))


def test_strength_0_is_the_seed_and_1_the_variation_seed_exactly(studio):
    seed_alone, variation_alone = run(studio, seed=11), run(studio, seed=22)
    at_0 = run(studio, seed=11, variation_seed=22, variation_strength=0.0)
    at_1 = run(studio, seed=11, variation_seed=22, variation_strength=1.0)
    between = run(studio, seed=11, variation_seed=22, variation_strength=0.5)
    assert np.array_equal(pixels(at_0), pixels(seed_alone))
    assert np.array_equal(pixels(at_1), pixels(variation_alone))
    assert not np.array_equal(pixels(seed_alone), pixels(variation_alone))
    to_seed = np.abs(pixels(between) - pixels(seed_alone)).mean()
    to_variation = np.abs(pixels(between) - pixels(variation_alone)).mean()
    assert to_seed > 0 and to_variation > 0


def test_a_small_strength_stays_closer_to_the_seed_than_another_seed(studio):
    base, other = run(studio, seed=5), run(studio, seed=6)
    near = run(studio, seed=5, variation_seed=6, variation_strength=0.1)
    assert np.abs(pixels(near) - pixels(base)).mean() < np.abs(pixels(other) - pixels(base)).mean()


def test_a_batch_keeps_the_seed_and_counts_the_variation_seeds_up(studio):
    result = run(studio, seed=7, variation_seed=100, variation_strength=0.3, batch_count=2)
    assert [g.seed for g in result.images] == [7, 7]
    records = [g.data for g in result.images]
    assert [r["variation_seed"] for r in records] == [100, 101]
    assert "Variation seed: 100, Variation seed strength: 0.3" in result.images[0].parameters
    assert not np.array_equal(pixels(result, 0), pixels(result, 1))
    # the second picture is made again from its own record
    again = run(studio, seed=7, variation_seed=101, variation_strength=0.3)
    assert np.array_equal(pixels(again), pixels(result, 1))


def test_a_random_variation_seed_is_chosen_and_recorded(studio):
    result = run(studio, seed=3, variation_strength=0.5)
    recorded = result.images[0].data["variation_seed"]
    assert isinstance(recorded, int) and result.images[0].data["request"]["variation_seed"] == -1
    again = run(studio, seed=3, variation_seed=recorded, variation_strength=0.5)
    assert np.array_equal(pixels(again), pixels(result))


def test_no_strength_writes_no_variation_keys(studio):
    result = run(studio, seed=3, variation_seed=9)
    assert "Variation seed" not in result.images[0].parameters
    assert result.images[0].data["variation_seed"] is None


def test_png_info_reads_the_variation_back(studio):
    result = run(studio, seed=8, variation_seed=80, variation_strength=0.25)
    path = result.images[0].path
    info = read_info(Image.open(path))
    assert info.fields["variation_seed"] == 80 and info.fields["variation_strength"] == 0.25
    assert info.settings["Variation seed"] == "80"
    # an A1111 picture with only the parameters text gives the same fields
    from PIL.PngImagePlugin import PngInfo
    chunk = PngInfo()
    chunk.add_text("parameters", read_metadata(path)[0])
    a1111 = path.with_name("a1111.png")
    Image.open(path).save(a1111, pnginfo=chunk)
    fields = read_info(Image.open(a1111)).fields
    assert fields["variation_seed"] == 80 and fields["variation_strength"] == 0.25 and fields["seed"] == 8


@pytest.mark.parametrize("raw, message", [
    (dict(variation_strength=1.5), "Variation strength must be between 0 and 1"),
    (dict(variation_strength="x"), "Variation strength must be a number"),
    (dict(variation_seed=-2, variation_strength=0.5), "Variation seed must be between"),
])
def test_bad_variation_values_are_refused(raw, message):
    with pytest.raises(InvalidRequest, match=message):
        make_request(prompt="x", **raw)


def test_variations_are_for_text_to_image():
    image = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(InvalidRequest, match="text to image only"):
        make_request(mode="img2img", prompt="x", image=image, variation_strength=0.5)
