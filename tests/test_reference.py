"""Reference images named by {image} tags, applied with reference-only attention."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from studio.errors import InvalidRequest
from studio.generation.reference import Reference, select, take_reference_tags
from studio.requests import make_request


def test_tags_and_selection():
    assert take_reference_tags("a {image} cat, {image:sky} ok") == ("a cat, ok", [None, "sky"])
    a, b = Reference("green", Image.new("RGB", (8, 8))), Reference("sky", Image.new("RGB", (8, 8)))
    assert select([a, b], [None]) == [a] and select([a, b], ["sky"]) == [b]
    assert select([a, b], []) == [a, b] and select([], []) == []
    with pytest.raises(InvalidRequest, match="none is attached"):
        select([], [None])
    with pytest.raises(InvalidRequest, match="no reference named 'moon'"):
        select([a, b], ["moon"])


def _green(size=64):
    img = Image.new("RGB", (size, size), (128, 128, 128))
    img.paste((30, 170, 60), (16, 16, 48, 48))
    return img


def px(result):
    return np.asarray(result.images[0].image, dtype=np.int16)


def test_strength_zero_is_the_plain_image_and_strength_changes_it(studio, tmp_path):
    path = tmp_path / "green.png"
    _green().save(path)
    base = dict(prompt="a circle {image}", seed=5, steps=3)
    plain = px(studio.local.run(make_request(prompt="a circle", seed=5, steps=3)))
    zero = studio.local.run(make_request(references=[str(path)], reference_strength=0, **base))
    assert np.array_equal(px(zero), plain)
    assert any("strength is 0" in n for n in zero.notes)
    guided = studio.local.run(make_request(references=[str(path)], reference_strength=0.8, **base))
    assert not np.array_equal(px(guided), plain)   # (how much: the embedded-model figure)
    meta = guided.images[0].data
    assert meta["references"][0]["name"] == "green" and meta["reference_strength"] == 0.8
    again = studio.local.run(make_request(references=[str(path)], reference_strength=0.8, **base))
    assert np.array_equal(px(again), px(guided))              # reproducible
    # the UNet is back to its own attention afterwards
    assert np.array_equal(px(studio.local.run(make_request(prompt="a circle", seed=5, steps=3))), plain)


def test_reference_in_img2img_and_inpaint(studio):
    ref = _green()
    for mode, extra in [("img2img", {}), ("inpaint", {"mask": Image.new("L", (64, 64), 255)})]:
        r = studio.local.run(make_request(mode=mode, image=Image.new("RGB", (64, 64), "white"), prompt="x {image}",
                                    references=[("green", ref)], reference_strength=0.6, seed=1,
                                    steps=4, strength=0.8, **extra))
        assert r.images[0].path.is_file()


def test_bad_references_get_messages(studio, tmp_path):
    with pytest.raises(InvalidRequest, match="none is attached"):
        studio.local.run(make_request(prompt="a {image}", steps=2))
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image")
    with pytest.raises(InvalidRequest, match="'junk'.*could not be read"):
        make_request(prompt="x", references=[str(junk)])
    with pytest.raises(InvalidRequest, match="expected an image"):
        make_request(prompt="x", references=[b"bytes"])
    with pytest.raises(InvalidRequest, match="Reference strength"):
        make_request(prompt="x", reference_strength=2)


def test_ip_adapter_without_weights_is_a_clear_message(tiny_model, tmp_path):
    from studio.config import Settings
    from studio.serving.studio import Studio
    s = Studio.from_settings(Settings(model=str(tiny_model), models_dir=tmp_path / "models",
                                      outputs=tmp_path / "out"))
    with pytest.raises(InvalidRequest, match="IP-Adapter needs its weights in models/ip-adapter"):
        s.local.run(make_request(prompt="a {image}", references=[("g", _green())], reference_method="ip-adapter",
                           steps=2))


def test_ip_adapter_with_local_weights(tiny_model, tmp_path):
    from studio.config import Settings
    from studio.serving.studio import Studio
    from tests.ldm_layout import write_ip_adapter
    s = Studio.from_settings(Settings(model=str(tiny_model), models_dir=tmp_path / "models",
                                      outputs=tmp_path / "out"))
    write_ip_adapter(s.local.manager.base().unet, tmp_path / "models" / "ip-adapter")
    plain = px(s.local.run(make_request(prompt="a circle", seed=2, steps=3)))
    guided = s.local.run(make_request(prompt="a circle {image}", references=[("g", _green())], seed=2, steps=3,
                                reference_method="ip-adapter", reference_strength=1.0))
    assert not np.array_equal(px(guided), plain)
    assert guided.images[0].data["ip_adapter"]["file"] == "ip-adapter_tiny.safetensors"
    # removed afterwards: the plain image comes back exactly, in every tab
    assert np.array_equal(px(s.local.run(make_request(prompt="a circle", seed=2, steps=3))), plain)
    s.local.run(make_request(mode="img2img", image=_green(), prompt="x {image}", references=[("g", _green())],
                       reference_method="ip-adapter", steps=3, strength=0.7))
