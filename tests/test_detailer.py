"""The detailer (studio/detailer): the shapes detector on the embedded world's own renderings,
each found region redrawn as "only masked" inpainting and pasted back (every pixel outside the
grown, blurred region as it was), recorded with ADetailer's keys, from the tab's function and from
REST in ADetailer's documented form."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from embedded.world import Obj, Scene, object_box, render
from studio.config import Settings
from studio.detailer.detectors import shapes
from studio.outputs.metadata import parse_parameters, read_metadata
from studio.serving.sequence import Sequence
from studio.serving.studio import Studio

PROMPT = "a small red circle in the top left corner on a blue background"
DETAIL = dict(ad_enable=True, ad_model="shapes", ad_prompt="a large red circle in the center on a blue background",
              ad_denoising_strength=0.6, ad_dilate_erode=2, ad_mask_blur=2, ad_inpaint_padding=8)


@pytest.fixture(scope="module")
def studio(tmp_path_factory) -> Studio:
    return Studio.from_settings(Settings(model="", outputs=tmp_path_factory.mktemp("detailer")))


def test_the_shapes_detector_finds_each_shape_where_the_world_drew_it():
    scene = Scene((Obj("star", "yellow", "small", "top left"), Obj("square", "white", "large", "bottom right")), "blue")
    picture = np.asarray(render(scene, 128))
    boxes = shapes(picture, 0.3)
    assert len(boxes) == 2
    for obj in scene.objects:
        want = [round(v * 128) for v in object_box(obj)]
        assert any(max(abs(a - b) for a, b in zip((box.x0, box.y0, box.x1, box.y1), want)) <= 4 for box in boxes), obj
    assert shapes(np.full((64, 64, 3), 90, np.uint8), 0.0) == []          # nothing but background
    assert shapes(picture, 1.01) == []                                    # nothing that confident


def test_each_region_is_redrawn_and_pasted_back_and_recorded(studio):
    from studio.detailer.detail import run_detailer
    raw = dict(prompt=PROMPT, steps=8, seed=3, width=64, height=64, **DETAIL)
    result = run_detailer(studio, raw, Sequence(studio, user="d", session="d"))
    (final,), (plain,) = result.images, result.first_pass
    assert final.path.is_file() and plain.path.is_file() and final.path != plain.path
    boxes = read_metadata(final.path)[1]["adetailer"]["boxes"]
    assert boxes
    near = np.zeros((64, 64), bool)
    margin = DETAIL["ad_dilate_erode"] + DETAIL["ad_mask_blur"] + 1
    for x0, y0, x1, y1, _ in boxes:
        near[max(0, y0 - margin):y1 + margin, max(0, x0 - margin):x1 + margin] = True
    a, b = np.asarray(final.image, dtype=int), np.asarray(plain.image, dtype=int)
    assert np.array_equal(a[~near], b[~near])                  # outside the regions: as it was drawn
    assert np.abs(a[near] - b[near]).mean() > 1                # inside: drawn again
    fields = parse_parameters(read_metadata(final.path)[0])[2]
    assert fields["ADetailer model"] == "shapes" and fields["ADetailer denoising strength"] == "0.6"
    assert fields["ADetailer prompt"] == DETAIL["ad_prompt"] and fields["Seed"] == "3"
    again = run_detailer(studio, raw, Sequence(studio, user="d", session="d")).images[0]
    assert np.array_equal(np.asarray(again.image), np.asarray(final.image))       # same seed, same picture


def test_the_detailer_after_the_hires_fix_and_from_the_tabs_tool_choice(studio):
    from studio.upscale import img2img_tool, txt2img_tool
    from studio.upscale.hires import run_hires
    assert txt2img_tool(studio, {"width": 64}) is None and txt2img_tool(studio, {"hires": True}) is run_hires
    tool = txt2img_tool(studio, {"hires": True, "ad_enable": True})
    raw = dict(prompt=PROMPT, steps=6, seed=5, width=64, height=64, hires=True, hires_scale=2, hires_steps=3,
               hires_strength=0.5, hires_upscaler="Lanczos", **DETAIL)
    result = tool(studio, raw, Sequence(studio, user="d", session="d"))
    assert result.images[0].image.size == (128, 128) and "ADetailer model: shapes" in result.images[0].parameters
    assert "Hires upscale: 2" in result.images[0].parameters and len(result.first_pass) == 2
    assert img2img_tool(studio, {"ad_enable": True}) is not None and img2img_tool(studio, {}) is None


def test_adetailer_over_rest_in_its_documented_form(studio):
    from studio.api.routes import api_routes
    rest = TestClient(FastAPI(routes=api_routes(studio, [])))
    unit = {k: v for k, v in DETAIL.items() if k != "ad_enable"}
    body = {"prompt": PROMPT, "steps": 8, "seed": 3, "width": 64, "height": 64,
            "alwayson_scripts": {"ADetailer": {"args": [True, False, unit]}}}
    answer = rest.post("/sdapi/v1/txt2img", json=body)
    assert answer.status_code == 200, answer.text
    infotext = __import__("json").loads(answer.json()["info"])["infotexts"][0]
    assert "ADetailer model: shapes" in infotext
    off = rest.post("/sdapi/v1/txt2img", json={**body, "alwayson_scripts": {"ADetailer": {"args": [False, False, unit]}}})
    assert "ADetailer" not in __import__("json").loads(off.json()["info"])["infotexts"][0]
    missing = rest.post("/sdapi/v1/txt2img", json={**body, "alwayson_scripts": {
        "ADetailer": {"args": [{"ad_model": "face_yolov8n.pt"}]}}})
    assert missing.status_code == 400 and "face_yolov8n.pt" in missing.json()["detail"]
