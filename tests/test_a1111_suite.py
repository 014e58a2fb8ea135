"""AUTOMATIC1111's own API tests (its test/ folder: test_txt2img.py, test_img2img.py,
test_extras.py, test_utils.py), replayed against the studio's /sdapi/v1 in process: the same
bodies and the same assertions, written here (the originals only check status codes and one
option round trip; where the studio can say more about what came back, it is checked too). A1111's
tests of its own internals (face restorers, torch utilities) call no server and are not replayed.
Its two test pictures are stood in for by a noisy 96 px picture and a centred square mask."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from studio.config import Settings
from studio.serving.studio import Studio


def _b64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


PICTURE = _b64(Image.fromarray(np.random.default_rng(3).integers(0, 255, (96, 96, 3), dtype=np.uint8)))
MASK = Image.new("L", (96, 96), 0)
MASK.paste(255, (24, 24, 72, 72))
MASK = _b64(MASK)

# the bodies A1111's tests start from (its simple_txt2img_request / simple_img2img_request fixtures)
TXT2IMG = {"batch_size": 1, "cfg_scale": 7, "denoising_strength": 0, "enable_hr": False, "eta": 0,
           "firstphase_height": 0, "firstphase_width": 0, "height": 64, "n_iter": 1, "negative_prompt": "",
           "prompt": "example prompt", "restore_faces": False, "s_churn": 0, "s_noise": 1, "s_tmax": 0, "s_tmin": 0,
           "sampler_index": "Euler a", "seed": -1, "seed_resize_from_h": -1, "seed_resize_from_w": -1, "steps": 3,
           "styles": [], "subseed": -1, "subseed_strength": 0, "tiling": False, "width": 64}
IMG2IMG = {"batch_size": 1, "cfg_scale": 7, "denoising_strength": 0.75, "eta": 0, "height": 64,
           "include_init_images": False, "init_images": [PICTURE], "inpaint_full_res": False,
           "inpaint_full_res_padding": 0, "inpainting_fill": 0, "inpainting_mask_invert": False, "mask": None,
           "mask_blur": 4, "n_iter": 1, "negative_prompt": "", "override_settings": {}, "prompt": "example prompt",
           "resize_mode": 0, "restore_faces": False, "s_churn": 0, "s_noise": 1, "s_tmax": 0, "s_tmin": 0,
           "sampler_index": "Euler a", "seed": -1, "seed_resize_from_h": -1, "seed_resize_from_w": -1, "steps": 3,
           "styles": [], "subseed": -1, "subseed_strength": 0, "tiling": False, "width": 64}


@pytest.fixture(scope="module")
def api(tiny_model, tmp_path_factory) -> TestClient:
    from studio.api.routes import api_routes
    studio = Studio.from_settings(Settings(model=str(tiny_model), outputs=tmp_path_factory.mktemp("a1111-suite")))
    return TestClient(FastAPI(routes=api_routes(studio, [])))


def _pictures(answer) -> list[Image.Image]:
    assert answer.status_code == 200, answer.text
    return [Image.open(io.BytesIO(base64.b64decode(text))) for text in answer.json()["images"]]


# -- test_txt2img.py ----------------------------------------------------------------------------

@pytest.mark.parametrize("change, count, size", [
    ({}, 1, (64, 64)),                                                               # simple
    ({"negative_prompt": "example negative prompt"}, 1, (64, 64)),
    ({"prompt": "((emphasis)), (emphasis1:1.1), [to:1], [from::2], [from:to:0.3], [alt|alt1]"}, 1, (64, 64)),
    ({"height": 128}, 1, (64, 128)),                                                 # not square
    ({"enable_hr": True}, 1, (128, 128)),                                            # hires fix, strength 0
    ({"tiling": True}, 1, (64, 64)),
    ({"restore_faces": True}, 1, (64, 64)),
    ({"sampler_index": "PLMS"}, 1, (64, 64)), ({"sampler_index": "DDIM"}, 1, (64, 64)),
    ({"sampler_index": "UniPC"}, 1, (64, 64)),                                       # vanilla samplers
    ({"n_iter": 2}, 2, (64, 64)),                                                    # multiple batches
    ({"batch_size": 2}, 2, (64, 64)),                                                # a batch
])
def test_txt2img_performed(api, change, count, size):
    pictures = _pictures(api.post("/sdapi/v1/txt2img", json={**TXT2IMG, **change}))
    assert [p.size for p in pictures] == [size] * count


# -- test_img2img.py ----------------------------------------------------------------------------

@pytest.mark.parametrize("change, size", [
    ({}, (64, 64)),                                                                  # simple
    ({"mask": MASK}, (64, 64)),                                                      # inpainting
    ({"mask": MASK, "inpainting_mask_invert": True}, (64, 64)),                      # inverted mask
    ({"script_name": "sd upscale", "script_args": ["", 8, "Lanczos", 2.0]}, (192, 192)),   # the 96 px picture x2
])
def test_img2img_performed(api, change, size):
    (picture,) = _pictures(api.post("/sdapi/v1/img2img", json={**IMG2IMG, **change}))
    assert picture.size == size


# -- test_extras.py -----------------------------------------------------------------------------

@pytest.mark.parametrize("payload", [
    {"resize_mode": 0, "show_extras_results": True, "gfpgan_visibility": 0, "codeformer_visibility": 0,
     "codeformer_weight": 0, "upscaling_resize": 2, "upscaling_resize_w": 128, "upscaling_resize_h": 128,
     "upscaling_crop": True, "upscaler_1": "Lanczos", "upscaler_2": "None", "extras_upscaler_2_visibility": 0},
    {},                                                  # A1111's "png info" and "interrogate" tests post these
    {"model": "clip"},                                   # bodies to extra-single-image too
])
def test_extras_performed(api, payload):
    answer = api.post("/sdapi/v1/extra-single-image", json={**payload, "image": PICTURE})
    assert answer.status_code == 200, answer.text
    assert Image.open(io.BytesIO(base64.b64decode(answer.json()["image"]))).size == (192, 192)


# -- test_utils.py ------------------------------------------------------------------------------

def test_options_write(api):
    before = api.get("/sdapi/v1/options").json()["send_seed"]
    assert api.post("/sdapi/v1/options", json={"send_seed": not before}).status_code == 200
    assert api.get("/sdapi/v1/options").json()["send_seed"] == (not before)
    api.post("/sdapi/v1/options", json={"send_seed": before})


@pytest.mark.parametrize("url", ["cmd-flags", "samplers", "upscalers", "sd-models", "hypernetworks", "face-restorers",
                                 "realesrgan-models", "prompt-styles", "embeddings"])
def test_get_api_url(api, url):
    assert api.get(f"/sdapi/v1/{url}").status_code == 200
