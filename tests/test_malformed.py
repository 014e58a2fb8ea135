"""Malformed and hostile REST input gets a 4xx with a studio message, never a 500 or Python's
own words (issue 38, finding 6), and a body over the limit is refused before it is read (finding 5)."""

from __future__ import annotations

import base64
import io
import json

import pytest
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from starlette.testclient import TestClient

from studio.requests import Limits


@pytest.fixture(scope="module")
def client(tiny_model, tmp_path_factory):
    from studio.api.routes import api_routes
    from studio.config import Settings
    from studio.serving.studio import Studio
    studio = Studio.from_settings(Settings(model=str(tiny_model), outputs=tmp_path_factory.mktemp("out"),
                                           limits=Limits(max_side=128, max_pixels=128 * 128, max_steps=3,
                                                         max_batch_size=2, max_batch_count=2,
                                                         max_body_bytes=2 * 2**20)))
    return TestClient(FastAPI(routes=api_routes(studio, [])), raise_server_exceptions=False)


def _post(client, path: str, text: str | bytes):
    return client.post("/sdapi/v1/" + path, content=text, headers={"Content-Type": "application/json"})


def _png_with_prompt_chunk(text: str) -> str:
    info = PngInfo()
    info.add_text("prompt", text)
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, "PNG", pnginfo=info)
    return base64.b64encode(buffer.getvalue()).decode()


PYTHON_WORDS = ("Traceback", "OverflowError", "RecursionError", "ValueError", "cannot convert", "Exceeds the limit")


@pytest.mark.parametrize("path, body, status, said", [
    ("txt2img", '{"prompt": "x", "steps": NaN}', 400, "NaN is not a number"),
    ("txt2img", '{"prompt": "x", "seed": -Infinity}', 400, "-Infinity is not a number"),
    ("txt2img", '{"prompt": "x", "steps": 2, "width": 64, "height": 64, "seed": 1' + "0" * 400 + "}", 400, "Seed must be a number of a sensible size"),
    ("txt2img", '{"prompt": "x", "seed": 1' + "0" * 5000 + "}", 400, "too many digits"),
    ("txt2img", '{"steps": 2, "width": 64, "height": 64, "override_settings": {"CLIP_stop_at_last_layers": 1e309}}', 400, "CLIP_stop_at_last_layers"),
    ("options", '{"CLIP_stop_at_last_layers": 1e309}', 400, "CLIP_stop_at_last_layers"),
    ("txt2img", "[" * 100_000 + "]" * 100_000, 400, "nested too deeply"),
    ("txt2img", '{"prompt": "x", "steps": "many"}', 422, "steps"),
    ("txt2img", '{"prompt": "x"', 422, "JSON decode error"),
    ("png-info", json.dumps({"image": _png_with_prompt_chunk("[" * 90_000 + "]" * 90_000)}), 200, ""),
])
def test_malformed_bodies_get_a_4xx_in_the_studios_words(client, path, body, status, said):
    answer = _post(client, path, body)
    assert answer.status_code == status, answer.text[:300]
    assert said in answer.text and not any(w in answer.text for w in PYTHON_WORDS), answer.text[:300]


def test_a_body_over_the_limit_is_refused_before_it_is_read(client):
    big = json.dumps({"prompt": "x" * (3 * 2**20)})
    answer = _post(client, "txt2img", big)
    assert answer.status_code == 413 and "at most 2 MB" in answer.json()["detail"]

    def chunks():              # no Content-Length: counted as it arrives
        for _ in range(3):
            yield b" " * 2**20
    answer = client.post("/sdapi/v1/txt2img", content=chunks(), headers={"Content-Type": "application/json"})
    assert answer.status_code == 413


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-10**30, max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8)
FIELDS = ["prompt", "negative_prompt", "steps", "cfg_scale", "width", "height", "seed", "n_iter", "batch_size",
          "sampler_name", "scheduler", "styles", "subseed", "subseed_strength", "enable_hr", "hr_scale",
          "hr_upscaler", "denoising_strength", "override_settings", "tiling", "negative_presets", "variants",
          "feature_cache", "init_images", "mask", "resize_mode", "inpainting_fill", "mask_blur"]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                    HealthCheck.too_slow])
@given(path=st.sampled_from(["txt2img", "img2img", "options", "png-info", "extra-single-image"]),
       body=st.dictionaries(st.sampled_from(FIELDS + ["image", "CLIP_stop_at_last_layers", "upscaler_1"]),
                            JSON_VALUES, max_size=6))
def test_no_body_of_any_shape_gets_a_5xx(client, path, body):
    answer = _post(client, path, json.dumps(body))
    assert answer.status_code < 500, (path, body, answer.text[:300])


def test_init_images_are_counted_and_the_queue_asked_before_any_is_decoded(client):
    """Issue 38, finding 5: 40 init images of 2048x2048 were all decoded (+600 MB) before the 503.
    Here they are not even base64: the answer shows they were never read."""
    many = {"init_images": ["not base64!"] * 40, "steps": 2, "width": 64, "height": 64}
    answer = _post(client, "img2img", json.dumps(many))
    assert answer.status_code == 400 and "40 init images; this studio takes at most 2" in answer.text
    answer = _post(client, "img2img", json.dumps({**many, "init_images": ["not base64!"] * 2}))
    assert answer.status_code == 400 and "not base64" in answer.text          # within bounds: read, refused


def test_a_full_queue_is_said_before_the_pictures_are_read(tiny_model, tmp_path):
    from studio.api.routes import api_routes
    from studio.config import Settings
    from studio.serving.studio import Studio
    studio = Studio.from_settings(Settings(model=str(tiny_model), outputs=tmp_path, queue_size=2))
    rest = TestClient(FastAPI(routes=api_routes(studio, [])), raise_server_exceptions=False)
    answer = _post(rest, "img2img", json.dumps({"init_images": ["not base64!"] * 3, "steps": 2}))
    assert answer.status_code == 503 and "asks for 3" in answer.text
