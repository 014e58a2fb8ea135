"""Tiling (seamless textures): a tiled picture continues across its edges, along the axes asked
for only, and the layers are as they were afterwards (bench/tiling.py prints the figures)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest

from bench.tiling import measure


@pytest.fixture(scope="module")
def embedded():
    from studio.config import Settings
    from studio.serving.studio import Studio
    return Studio.from_settings(Settings(outputs=Path(tempfile.mkdtemp())))


def test_a_tiled_picture_continues_across_the_edges_asked_for(embedded):
    ratios = measure(embedded, seeds=6, steps=8, modes=("off", "x", "y", "both"))
    (off_x, off_y), (x_x, x_y), (y_x, y_y), (both_x, both_y) = (ratios[m] for m in ("off", "x", "y", "both"))
    assert off_x > 1.2 and off_y > 1.2, ratios          # untiled: the edges do not meet
    assert both_x < 1.0 and both_y < 1.0, ratios        # tiled: the seam is as smooth as the inside
    # one way only: that seam as smooth as tiled, the other far rougher than tiled (not "as it was
    # untiled": the picture itself changes, and with it that seam, by a fifth or so on 6 seeds)
    assert x_x < 0.6 * off_x and x_y > 1.5 * both_y, ratios
    assert y_y < 0.6 * off_y and y_x > 1.5 * both_x, ratios


def test_tiling_is_recorded_and_leaves_the_model_as_it_was(embedded):
    plain = dict(prompt="a red circle", steps=2, seed=1)
    before = embedded.local.run(embedded.make_request("txt2img", **plain), save=False).images[0]
    request = embedded.make_request("txt2img", tiling=True, **plain)
    assert request.tiling == "both"                      # A1111's `tiling: true`
    tiled = embedded.local.run(request, save=False).images[0]
    assert "Tiling: True" in tiled.parameters and tiled.data["request"]["tiling"] == "both"
    assert not np.array_equal(np.asarray(before.image), np.asarray(tiled.image))
    after = embedded.local.run(embedded.make_request("txt2img", **plain), save=False).images[0]
    assert np.array_equal(np.asarray(before.image), np.asarray(after.image))
    assert "Tiling" not in before.parameters


def test_a1111_clients_tiling_true_asks_for_both_edges(embedded):
    """A REST body's `tiling: true` (A1111's field) is the studio's tiling on both edges, with no
    "not available" note any more."""
    from studio.api.catalog import Options
    from studio.api.convert import txt2img
    from studio.api.schema import Txt2ImgBody
    translated = txt2img(Txt2ImgBody(prompt="a red circle", tiling=True, steps=2, width=64, height=64), embedded,
                         Options(embedded))
    assert translated.requests[0].tiling == "both" and not any("Tiling" in n for n in translated.notes)
    plain = txt2img(Txt2ImgBody(prompt="a red circle", steps=2, width=64, height=64), embedded, Options(embedded))
    assert plain.requests[0].tiling == "off"
