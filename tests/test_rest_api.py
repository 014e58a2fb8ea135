"""AUTOMATIC1111's REST API (/sdapi/v1), as the programs that speak it use it.

- `webuiapi` (PyPI) drives `python app.py --auth ...` on the tiny model over HTTP: txt2img,
  img2img with a mask, models listed and switched, progress with a preview, interrupt, png-info,
  and HTTP Basic.
- The recorded requests of Open WebUI, SillyTavern, LibreChat, AIYA and the Photoshop plugin
  (tests/fixtures/a1111_clients.json) are replayed in process; each gets what that client reads.
- Errors, options, resize modes, inpainting fills, skip, and who interrupt reaches, in process.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
import zlib

import numpy as np
import pytest
import requests
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from studio.api.routes import api_routes
from studio.config import Settings
from studio.serving.studio import Studio

from .conftest import ROOT, start_server, stop_server

webuiapi = pytest.importorskip("webuiapi")

FIXTURES = json.loads((ROOT / "tests" / "fixtures" / "a1111_clients.json").read_text())
SMALL = dict(width=64, height=64, steps=3)


def b64png(image: Image.Image, data_url: bool = False) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    text = base64.b64encode(buffer.getvalue()).decode()
    return f"data:image/png;base64,{text}" if data_url else text


def decoded(text: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(text)))


def square_mask(size=64, box=(16, 16, 48, 48)) -> Image.Image:
    mask = Image.new("L", (size, size), 0)
    mask.paste(255, box)
    return mask


def noisy(size=64, seed=0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8))


# -- in process -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def own_studio(tiny_model, tmp_path_factory) -> Studio:
    """A studio of this module's own (tests here switch its model)."""
    return Studio.from_settings(Settings(model=str(tiny_model), outputs=tmp_path_factory.mktemp("rest-outputs"),
                                         models_dir=tmp_path_factory.mktemp("rest-models")))


@pytest.fixture(scope="module")
def rest(own_studio) -> TestClient:
    return TestClient(FastAPI(routes=api_routes(own_studio, [])), client=("10.1.2.3", 5000))


def _current_title(rest: TestClient) -> str:
    return rest.get("/sdapi/v1/options").json()["sd_model_checkpoint"]


def _body(value, rest: TestClient, studio: Studio):
    """A recorded body with its placeholders filled and the replay's sizes and steps."""
    text = json.dumps(value)
    text = text.replace("INIT_IMAGE_DATA_URL", b64png(noisy(64), data_url=True))
    text = text.replace("MASK_DATA_URL", b64png(square_mask(), data_url=True))
    text = text.replace("FIRST_STYLE", next(iter(studio.local.presets.styles)))
    body = json.loads(text)
    if body == "CURRENT_MODEL_TITLE":
        return {"sd_model_checkpoint": _current_title(rest)}
    if body == "GET_OPTIONS_CURRENT_MODEL":     # Open WebUI posts the whole dict back
        return rest.get("/sdapi/v1/options").json()
    if isinstance(body, dict) and "prompt" in body:
        body.update(FIXTURES["replay"])
    return body


def _read(value, path: str):
    """Every value at a dotted path (`*` every element, `info!key` inside the JSON string)."""
    values = [value]
    for part in path.replace("!", ".!").split("."):
        if part.startswith("!"):
            values = [json.loads(v) for v in values]
            part = part[1:]
        if part == "*":
            values = [x for v in values for x in v]
        elif part:
            values = [v[int(part)] if isinstance(v, list) else v[part] for v in values]
    return values


KINDS = {"str": str, "int": int, "number": (int, float), "dict": dict, "list": list}


def _check(answer, read: str) -> None:
    path, _, kind = read.rpartition(":")
    values = _read(answer, path)
    assert values, f"nothing at {path}"
    for value in values:
        if kind == "png":
            image = decoded(value)
            assert image.format == "PNG" and "Steps: " in image.info["parameters"]
        else:
            assert isinstance(value, KINDS[kind]) and not isinstance(value, bool), (path, value)


@pytest.mark.parametrize("client", sorted(FIXTURES["clients"]))
def test_recorded_clients_get_what_they_read(client, rest, own_studio):
    for call in FIXTURES["clients"][client]["calls"]:
        body = _body(call.get("body"), rest, own_studio) if "body" in call else None
        response = rest.request(call["method"], call["path"], headers=call.get("headers") or {},
                                json=body)
        assert response.status_code == 200, (client, call["path"], response.text)
        answer = response.json()
        for read in call["reads"]:
            _check(answer, read)
        if call.get("then_png_info"):        # AIYA and the plugin read every picture back
            info = rest.post("/sdapi/v1/png-info", json={"image": "data:image/png;base64," + answer["images"][0]}).json()
            assert info["info"] == json.loads(answer["info"])["infotexts"][0]
            assert info["parameters"]["Seed"] == str(json.loads(answer["info"])["all_seeds"][0])


def test_txt2img_answer_and_saved_picture(rest, own_studio):
    answer = rest.post("/sdapi/v1/txt2img", json={"prompt": "a red circle [a:b:2]", "seed": 9, "batch_size": 2,
                                                  "sampler_name": "DPM++ 2M Karras", "styles": ["nope"],
                                                  "unknown_field": {"x": 1}, **SMALL}).json()
    info = json.loads(answer["info"])
    for key in ("prompt", "all_prompts", "negative_prompt", "seed", "all_seeds", "subseed", "width", "height",
                "sampler_name", "cfg_scale", "steps", "batch_size", "sd_model_name", "sd_model_hash",
                "denoising_strength", "index_of_first_image", "infotexts", "styles", "clip_skip", "version"):
        assert key in info, key
    assert info["all_seeds"] == [9, 10] and info["sampler_name"] == "DPM++ 2M" and len(answer["images"]) == 2
    assert answer["parameters"]["scheduler"] == "karras" and answer["parameters"]["sampler_name"] == "DPM++ 2M"
    # the picture sent is the one saved, byte for byte, with its parameters chunk
    saved = sorted(own_studio.local.outputs.root.rglob("*-9.png"))[-1]
    assert base64.b64decode(answer["images"][0]) == saved.read_bytes()
    assert decoded(answer["images"][0]).info["parameters"] == info["infotexts"][0]


def test_a_caller_that_sends_no_size_gets_the_models_native_size(rest, own_studio):
    """A1111 answers 512x512 when a body has no width/height; here the model's own size (a chatbot
    need not know it), written in `info`; img2img keeps the picture's size."""
    native = own_studio.model_info().native_size
    answer = rest.post("/sdapi/v1/txt2img", json={"prompt": "a red circle", "steps": 2, "seed": 3}).json()
    info = json.loads(answer["info"])
    assert decoded(answer["images"][0]).size == (native, native) and (info["width"], info["height"]) == (native, native)
    answer = rest.post("/sdapi/v1/img2img", json={"prompt": "a red circle", "steps": 2, "seed": 3,
                                                  "init_images": [b64png(noisy(96))]}).json()
    assert decoded(answer["images"][0]).size == (96, 96)


def test_a_size_far_above_the_models_is_drawn_at_its_own_and_upscaled(rest, own_studio):
    """A1111 clients send 512x512 whatever the model: above twice the native side the picture is
    drawn at the native size (the asked shape) and upscaled to the size asked for, both saved, with
    a note; twice the native side is drawn as asked."""
    from studio.outputs.metadata import parse_parameters, read_metadata
    from studio.upscale import txt2img_tool
    native = own_studio.model_info().native_size
    assert txt2img_tool(own_studio, {"width": 2 * native, "height": 2 * native}) is None
    body = {"prompt": "a red circle", "steps": 2, "seed": 12, "width": 8 * native, "height": 4 * native}
    answer = rest.post("/sdapi/v1/txt2img", json=body)
    assert answer.status_code == 200, answer.text
    info = json.loads(answer.json()["info"])
    assert decoded(answer.json()["images"][0]).size == (8 * native, 4 * native)
    assert (info["width"], info["height"]) == (8 * native, 4 * native)
    assert any("drawn at" in n and "upscaled" in n for n in info["notes"])
    upscaled = max(own_studio.local.outputs.root.rglob("*-upscale.png"), key=lambda p: p.stat().st_mtime_ns)
    fields = parse_parameters(read_metadata(upscaled)[0])[2]
    assert fields["Size"] == f"{native}x{native}"           # the asked shape, but no side under 64
    assert fields["Postprocess upscale to"] == f"{8 * native}x{4 * native}"
    assert fields["Seed"] == "12"
    too_big = rest.post("/sdapi/v1/txt2img", json={**body, "width": 4096, "height": 0})
    assert too_big.status_code == 400 and "Width must be between" in too_big.json()["detail"]


def test_the_sd_upscale_script_as_a1111s_api_tests_send_it(rest):
    """script_name "sd upscale", script_args [info, overlap, upscaler, scale] (A1111's own API test
    sends ["", 8, "Lanczos", 2.0]; an upscaler may also be an index into /upscalers); /scripts and
    /script-info list it; it is an img2img script (txt2img: 422)."""
    assert "sd upscale" in rest.get("/sdapi/v1/scripts").json()["img2img"]
    (info,) = rest.get("/sdapi/v1/script-info").json()
    assert info["name"] == "sd upscale" and [a["label"] for a in info["args"]][1:] == ["Tile overlap", "Upscaler",
                                                                                     "Scale Factor"]
    for upscaler in ("Lanczos", 1):
        answer = rest.post("/sdapi/v1/img2img", json={"init_images": [b64png(noisy())], "prompt": "a red circle",
                                                      "steps": 4, "seed": 2, "denoising_strength": 0.3,
                                                      "width": 64, "height": 64, "script_name": "sd upscale",
                                                      "script_args": ["", 8, upscaler, 2.0]})
        assert answer.status_code == 200, answer.text
        assert decoded(answer.json()["images"][0]).size == (128, 128)
        assert "SD upscale upscaler: Lanczos" in json.loads(answer.json()["info"])["infotexts"][0]
    refused = rest.post("/sdapi/v1/txt2img", json={"prompt": "x", "script_name": "sd upscale", **SMALL})
    assert refused.status_code == 422


def test_subseed_is_the_variation_seed(rest):
    """A1111's subseed and subseed_strength: the seed stays, the subseeds count up, both recorded;
    img2img says it ignored them."""
    answer = rest.post("/sdapi/v1/txt2img", json={"prompt": "a red circle", "seed": 4, "subseed": 40,
                                                  "subseed_strength": 0.2, "batch_size": 2, **SMALL}).json()
    info = json.loads(answer["info"])
    assert info["all_seeds"] == [4, 4] and info["all_subseeds"] == [40, 41] and info["subseed_strength"] == 0.2
    assert "Variation seed: 41, Variation seed strength: 0.2" in info["infotexts"][1]
    assert decoded(answer["images"][0]).tobytes() != decoded(answer["images"][1]).tobytes()
    answer = rest.post("/sdapi/v1/img2img", json={"init_images": [b64png(noisy())], "subseed_strength": 0.5,
                                                  **SMALL}).json()
    info = json.loads(answer["info"])
    assert "subseed_strength was ignored" in " ".join(info["notes"]) and info["subseed_strength"] == 0


def test_enable_hr_runs_the_hires_fix(rest, own_studio):
    """enable_hr: the answer has the finished (bigger) pictures with A1111's hires keys, with a
    latent upscaler or a picture one; an unknown upscaler falls back to Lanczos and says so;
    /upscalers and /latent-upscale-modes list what hr_upscaler may name."""
    names = [u["name"] for u in rest.get("/sdapi/v1/upscalers").json()]
    assert names[:3] == ["None", "Lanczos", "Nearest"]
    assert {"name": "Latent (bicubic)"} in rest.get("/sdapi/v1/latent-upscale-modes").json()
    answer = rest.post("/sdapi/v1/txt2img", json={"prompt": "a red circle", "seed": 6, "enable_hr": True,
                                                  "hr_scale": 2, "hr_upscaler": "Latent", "hr_second_pass_steps": 2,
                                                  "denoising_strength": 0.5, "batch_size": 2, **SMALL}).json()
    info = json.loads(answer["info"])
    assert [decoded(i).size for i in answer["images"]] == [(128, 128)] * 2 and info["all_seeds"] == [6, 7]
    assert "Hires upscale: 2, Hires steps: 2, Hires upscaler: Latent" in info["infotexts"][0]
    assert "Steps: 3," in info["infotexts"][0] and "Denoising strength: 0.5" in info["infotexts"][0]
    answer = rest.post("/sdapi/v1/txt2img", json={"prompt": "a red circle", "seed": 6, "enable_hr": True,
                                                  "hr_upscaler": "R-ESRGAN 4x+", **SMALL}).json()
    info = json.loads(answer["info"])
    assert "Hires upscaler: Lanczos" in info["infotexts"][0]
    assert any("'R-ESRGAN 4x+' is not here: used Lanczos" in n for n in info["notes"])
    # A1111's own API test: enable_hr with no upscaler (Latent) and strength 0 -> 200, the first pass upscaled
    answer = rest.post("/sdapi/v1/txt2img", json={"prompt": "a red circle", "seed": 6, "enable_hr": True,
                                                  "denoising_strength": 0, **SMALL})
    assert answer.status_code == 200, answer.text
    info = json.loads(answer.json()["info"])
    assert decoded(answer.json()["images"][0]).size == (128, 128) and "Denoising strength: 0," in info["infotexts"][0]
    bad = rest.post("/sdapi/v1/txt2img", json={"prompt": "x", "enable_hr": True, "hr_scale": 4, "width": 1024,
                                               "height": 64, "steps": 2})
    assert bad.status_code == 400 and "Width must be between" in bad.json()["detail"]


def test_extra_single_image_upscales_and_saves(rest, own_studio):
    """A1111's Extras route (AIYA and the Photoshop plugin call it): the picture comes back
    upscaled, as it was saved; face restoration is refused, not silently skipped."""
    answer = rest.post("/sdapi/v1/extra-single-image", json={"image": b64png(noisy(), data_url=True),
                                                              "upscaler_1": "Lanczos", "upscaling_resize": 2}).json()
    saved = sorted(own_studio.local.outputs.root.rglob("*-upscale.png"))[-1]
    assert decoded(answer["image"]).size == (128, 128) and base64.b64decode(answer["image"]) == saved.read_bytes()
    assert "Postprocess upscale by: 2" in answer["html_info"]
    answer = rest.post("/sdapi/v1/extra-single-image", json={"image": b64png(noisy()), "resize_mode": 1,
                                                              "upscaling_resize_w": 96, "upscaling_resize_h": 80,
                                                              "upscaler_1": "Nearest"}).json()
    assert decoded(answer["image"]).size == (96, 80)
    refused = rest.post("/sdapi/v1/extra-single-image", json={"image": b64png(noisy()), "gfpgan_visibility": 1})
    assert refused.status_code == 400 and "gfpgan file in models/face_restorers" in refused.json()["detail"]


def test_unknown_sampler_falls_back_and_says_so(rest):
    info = json.loads(rest.post("/sdapi/v1/txt2img", json={"sampler_name": "DPM fast", **SMALL}).json()["info"])
    assert info["sampler_name"] == "DPM++ 2M" and "Unknown sampler 'DPM fast': used DPM++ 2M Karras." in info["notes"]


@pytest.mark.parametrize("body, status, detail", [
    ({"width": 100}, 400, "Width must be a multiple of 8"),
    ({"steps": 0}, 400, "Steps must be between"),
    ({"script_name": "x/y/z plot"}, 422, "Script 'x/y/z plot' not found"),
    ({"alwayson_scripts": {"ADetailer": {"args": [{"ad_model": "face_yolov8n.pt"}]}}}, 400, "face_yolov8n.pt"),
    ({"alwayson_scripts": {"AnimateDiff": {"args": [{"enable": True}]}}}, 422, "always on script AnimateDiff not found"),
    ({"override_settings": {"sd_model_checkpoint": "nothing.safetensors"}}, 400, "Model 'nothing.safetensors' not found"),
    ({"override_settings": {"CLIP_stop_at_last_layers": 40}}, 400, "CLIP_stop_at_last_layers must be between"),
])
def test_bad_txt2img_bodies_are_4xx_in_a1111s_shape(rest, body, status, detail):
    response = rest.post("/sdapi/v1/txt2img", json=body)
    assert response.status_code == status
    answer = response.json()
    assert set(answer) == {"error", "detail", "body", "errors"} and detail in answer["detail"]


def test_bad_images_and_bodies(rest):
    assert rest.post("/sdapi/v1/img2img", json={"prompt": "x"}).json()["detail"] == "Init image not found"
    for image, detail in (("not base64!", "not base64"), ("aGVsbG8=", "is not a picture"),
                          ("https://example.com/a.png", "does not fetch URLs")):
        response = rest.post("/sdapi/v1/img2img", json={"init_images": [image], **SMALL})
        assert response.status_code == 400 and detail in response.json()["detail"], response.text
    # a PNG header claiming 60000x60000 is refused before it is decoded
    raw = bytearray(base64.b64decode(b64png(Image.new("RGB", (8, 8)))))
    raw[16:24] = (60000).to_bytes(4, "big") * 2                  # IHDR's width and height
    raw[29:33] = zlib.crc32(bytes(raw[12:29])).to_bytes(4, "big")  # and its checksum
    response = rest.post("/sdapi/v1/png-info", json={"image": base64.b64encode(bytes(raw)).decode()})
    assert response.status_code == 400 and "too large" in response.json()["detail"]
    assert rest.post("/sdapi/v1/txt2img", content=b"{nope", headers={"content-type": "application/json"}).status_code == 422
    assert rest.post("/sdapi/v1/txt2img", json={"steps": "many"}).status_code == 422


def test_options_round_trip_and_refusals(rest):
    options = rest.get("/sdapi/v1/options").json()
    for key in ("sd_model_checkpoint", "sd_checkpoint_hash", "sd_vae", "CLIP_stop_at_last_layers", "samples_format"):
        assert key in options
    assert rest.post("/sdapi/v1/options", json={**options, "not_an_option": 3}).json() is None
    assert rest.post("/sdapi/v1/options", json={"CLIP_stop_at_last_layers": 2}).status_code == 200
    assert rest.get("/sdapi/v1/options").json()["CLIP_stop_at_last_layers"] == 2
    info = json.loads(rest.post("/sdapi/v1/txt2img", json=SMALL).json()["info"])
    assert info["clip_skip"] == 2 and "Clip skip: 2" in info["infotexts"][0]
    rest.post("/sdapi/v1/options", json={"CLIP_stop_at_last_layers": 1})
    for body, detail in (({"sd_model_checkpoint": "missing"}, "not found"), ({"samples_format": "jpg"}, "PNG only"),
                         ({"sd_vae": "none-such.safetensors"}, "Unknown VAE")):
        response = rest.post("/sdapi/v1/options", json=body)
        assert response.status_code == 400 and detail in response.json()["detail"]


def test_every_a1111_option_is_there_and_what_callers_set_is_kept_across_a_restart(rest, own_studio):
    """GET /options has every key of A1111's table (send_seed, eta_noise_seed_delta...) with A1111's
    default; a posted key the studio does not act on, known or not, is kept and comes back, also
    from a new API over the same outputs folder (a restart); what states the studio's behaviour
    (PNG info on) stays; a NaN or a body too big to keep is a 400."""
    from studio.api.catalog import OPTIONS_FILE, Options, a1111_defaults
    options = rest.get("/sdapi/v1/options").json()
    assert set(a1111_defaults()) <= set(options) and len(options) > 200
    assert (options["send_seed"], options["eta_noise_seed_delta"], options["jpeg_quality"]) == (True, 0, 80)
    posted = {**options, "send_seed": False, "eta_noise_seed_delta": 31337, "my_client_setting": {"a": [1, 2]},
              "enable_pnginfo": False}
    assert rest.post("/sdapi/v1/options", json=posted).status_code == 200
    after = rest.get("/sdapi/v1/options").json()
    assert (after["send_seed"], after["eta_noise_seed_delta"], after["my_client_setting"]) == (False, 31337, {"a": [1, 2]})
    assert after["enable_pnginfo"] is True
    assert (own_studio.outputs_root() / OPTIONS_FILE).is_file()
    again = Options(own_studio).get()                       # the API of a restarted studio
    assert (again["send_seed"], again["my_client_setting"]) == (False, {"a": [1, 2]})
    huge = rest.post("/sdapi/v1/options", json={"blob": "x" * (100 << 10)})
    assert huge.status_code == 400 and "at most" in huge.json()["detail"]
    nan = rest.post("/sdapi/v1/options", content=b'{"odd": NaN}', headers={"content-type": "application/json"})
    assert nan.status_code == 400
    rest.post("/sdapi/v1/options", json={"send_seed": True, "eta_noise_seed_delta": 0})


def test_a_checkpoint_is_found_by_any_name(own_studio, rest):
    from studio.api.catalog import find_checkpoint
    models = rest.get("/sdapi/v1/sd-models").json()
    tiny = next(m for m in models if m["sha256"] and "tiny" in m["title"])
    for name in (tiny["title"], tiny["hash"], tiny["sha256"], tiny["model_name"], tiny["title"].upper()):
        assert find_checkpoint(own_studio, name) == own_studio.current_choice()


@pytest.mark.parametrize("mode, expect", [
    (0, "squashed"), (1, "cropped"), (2, "filled")])
def test_resize_modes(rest, mode, expect):
    """denoising 0 gives back the input as fitted: what each resize mode made of a 128x64
    picture (left half red, right half blue) at 64x64."""
    source = Image.new("RGB", (128, 64), (255, 0, 0))
    source.paste((0, 0, 255), (64, 0, 128, 64))
    answer = rest.post("/sdapi/v1/img2img", json={"init_images": [b64png(source)], "resize_mode": mode,
                                                  "denoising_strength": 0, **SMALL}).json()
    out = np.asarray(decoded(answer["images"][0]).convert("RGB")).astype(int)
    assert out.shape == (64, 64, 3)
    red_at_left, blue_at_right = out[32, 8, 0] > 200, out[32, 56, 2] > 200
    if expect == "squashed":          # the whole picture, narrowed: the halves meet in the middle
        assert red_at_left and blue_at_right and out[32, 30, 0] > 200 and out[32, 34, 2] > 200
    elif expect == "cropped":         # the middle 64 columns: 32 red then 32 blue
        assert red_at_left and blue_at_right
    else:                             # the whole picture at 64x32 in the middle, filled above and below
        assert red_at_left and blue_at_right and np.abs(out[32, 30] - out[32, 34]).max() > 200
        assert np.abs(out[2, 30] - out[2, 34]).max() < 120       # above it the fill, a blur
    if expect != "filled":
        assert np.abs(out[2, 30] - out[2, 34]).max() > 200


@pytest.mark.parametrize("fill, invert", [(3, 0), (3, 1), (0, 0), (2, 0)])
def test_inpainting_fill_and_invert(rest, fill, invert):
    """With denoising 0 the answer is the masked area as the fill left it: gray (latent nothing),
    the colours around it (fill) or noise (latent noise); outside the mask the input, exactly."""
    source = noisy(64, seed=3) if fill != 0 else Image.new("RGB", (64, 64), (0, 200, 0))
    answer = rest.post("/sdapi/v1/img2img", json={
        "init_images": [b64png(source)], "mask": b64png(square_mask()), "inpainting_fill": fill,
        "inpainting_mask_invert": invert, "mask_blur": 0, "inpaint_full_res": False, "denoising_strength": 0,
        "seed": 1, **SMALL}).json()
    out, src = np.asarray(decoded(answer["images"][0]).convert("RGB")), np.asarray(source)
    inside = np.asarray(square_mask()) > 0
    masked = ~inside if invert else inside
    assert np.array_equal(out[~masked], src[~masked])
    if fill == 3:
        assert (out[masked] == 127).all()
    elif fill == 0:
        assert np.abs(out[masked].astype(int) - [0, 200, 0]).max() <= 10
    else:
        assert not np.array_equal(out[masked], src[masked]) and out[masked].std() > 40


def test_png_info_of_other_tools(rest):
    from .test_pnginfo import COMFY_GRAPH, picture_bytes
    image = base64.b64encode(picture_bytes({"prompt": json.dumps(COMFY_GRAPH)})).decode()
    answer = rest.post("/sdapi/v1/png-info", json={"image": image}).json()
    assert answer["parameters"]["Prompt"] == "a lighthouse at dusk" and "prompt" in answer["items"]
    # ComfyUI writes no parameters chunk: `info` is what A1111 would have written for these settings
    assert answer["info"].startswith("a lighthouse at dusk\nNegative prompt: text, watermark\nSteps: 25, ")


def test_skip_drops_the_batch_being_drawn(rest):
    done = {}
    thread = threading.Thread(target=lambda: done.update(r=rest.post("/sdapi/v1/txt2img", json={
        "n_iter": 2, "steps": 150, "width": 64, "height": 64, "seed": 4})))
    thread.start()
    _wait_running(rest)
    assert rest.post("/sdapi/v1/skip").json() is None
    thread.join(120)
    info = json.loads(done["r"].json()["info"])
    assert len(done["r"].json()["images"]) == 1 and any(n.startswith("Skipped batch") for n in info["notes"])


def _wait_running(client, timeout: float = 60.0, **kwargs) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        progress = client.get("/sdapi/v1/progress", **kwargs).json()
        if progress["state"]["sampling_step"] > 0:
            return progress
        time.sleep(0.02)
    raise AssertionError("the job did not start")


def test_interrupt_stops_rest_jobs_never_a_browsers(own_studio, rest):
    """A REST caller's interrupt reaches the REST callers' session only: a browser's job runs on."""
    request = own_studio.make_request("txt2img", prompt="x", steps=150, width=64, height=64, seed=1)
    browser_job = own_studio.submit(request, user="someone", session="browser-1")
    while browser_job.state == "queued":
        time.sleep(0.01)
    assert rest.post("/sdapi/v1/interrupt").json() == {}
    result = browser_job.result(timeout=120)
    assert not result.stopped and len(result.images) == 1


def test_without_logins_the_authorization_header_is_not_read(rest):
    for header in ("Basic ", "Basic Og==", "Basic !!!not-base64", "Bearer abc", ""):
        assert rest.get("/sdapi/v1/sd-models", headers={"Authorization": header}).status_code == 200


# -- webuiapi over HTTP, against python app.py with a login ------------------------------------------

@pytest.fixture(scope="module")
def rest_server(tiny_model, tmp_path_factory):
    base = tmp_path_factory.mktemp("rest-server")
    server = start_server(tiny_model, base / "outputs", base / "server.log", "--auth", "ann:s3cret")
    yield server
    stop_server(server)


@pytest.fixture(scope="module")
def api(rest_server):
    port = int(rest_server.url.rstrip("/").rsplit(":", 1)[1])
    return webuiapi.WebUIApi(host="127.0.0.1", port=port, username="ann", password="s3cret")


def test_webuiapi_txt2img(api, rest_server):
    result = api.txt2img(prompt="a red circle (-blue)", seed=5, sampler_name="DPM++ 2M", scheduler="karras",
                         cfg_scale=6, **SMALL)
    assert result.image.size == (64, 64) and result.info["seed"] == 5
    infotext = result.info["infotexts"][0]
    assert "Sampler: DPM++ 2M, Schedule type: Karras" in infotext and "Negative prompt: blue" in infotext
    assert result.image.info["parameters"] == infotext
    assert sorted(rest_server.outputs.rglob("*-5.png")), "the picture was not saved"


def test_webuiapi_img2img_with_a_mask(api):
    source, mask = noisy(64, seed=8), square_mask()
    result = api.img2img(images=[source], mask_image=mask, prompt="a blue square", inpainting_fill=1,
                         denoising_strength=0.8, mask_blur=0, inpaint_full_res=False, seed=2, **SMALL)
    out, src = np.asarray(result.image.convert("RGB")), np.asarray(source)
    outside = np.asarray(mask) == 0
    assert np.array_equal(out[outside], src[outside]) and not np.array_equal(out[~outside], src[~outside])
    assert result.info["denoising_strength"] == 0.8 and "Mask blur: 0" in result.info["infotexts"][0]


def test_webuiapi_lists_and_switches_models(api):
    titles = api.util_get_model_names()
    embedded = next(t for t in titles if t.startswith("embedded"))
    tiny = next(t for t in titles if "tiny" in t)
    api.util_set_model(embedded, find_closest=False)
    assert api.util_get_current_model() == embedded
    result = api.txt2img(prompt="a red circle on a blue background", seed=1, **SMALL)
    assert result.info["sd_model_name"] == "embedded-shapes"
    api.util_set_model(tiny, find_closest=False)
    assert api.util_get_current_model().startswith(tiny.split(" [")[0])
    assert [s["name"] for s in api.get_samplers()][:2] == ["Euler a", "Euler"]


def test_webuiapi_progress_preview_interrupt(api):
    done = {}
    thread = threading.Thread(target=lambda: done.update(r=api.txt2img(prompt="x", seed=3, steps=150,
                                                                       width=64, height=64)))
    thread.start()
    deadline, progress = time.time() + 60, {}
    while time.time() < deadline:
        progress = api.get_progress()
        if progress["current_image"] and progress["progress"] > 0:
            break
        time.sleep(0.05)
    assert progress["state"]["job_count"] == 1 and 0 < progress["progress"] < 1
    assert decoded(progress["current_image"]).size[0] > 0 and progress["eta_relative"] >= 0
    api.interrupt()
    thread.join(120)
    assert done["r"].info["interrupted"] is True and done["r"].images == []
    api.util_wait_for_ready(check_interval=0.1)     # idle: progress 0 and job_count 0


def test_webuiapi_png_info(api):
    image = api.txt2img(prompt="a green star", seed=21, **SMALL).image
    result = api.png_info(image)
    assert result.info.startswith("a green star\nNegative prompt:") and result.parameters["Seed"] == "21"


def test_basic_auth_guards_every_route(rest_server):
    base = rest_server.url.rstrip("/") + "/sdapi/v1"
    for path in ("/loras", "/sd-models", "/options", "/progress"):
        for auth in (None, ("ann", "wrong"), ("bob", "s3cret")):
            response = requests.get(base + path, auth=auth, timeout=10)
            assert response.status_code == 401, (path, auth)
            assert response.json()["detail"] == "Incorrect username or password"
            assert response.headers["WWW-Authenticate"] == "Basic"
    assert requests.get(base + "/loras", auth=("ann", "s3cret"), timeout=10).status_code == 200
    assert requests.get(rest_server.url.rstrip("/") + "/openapi.json", timeout=10).status_code == 401
    docs = requests.get(rest_server.url.rstrip("/") + "/openapi.json", auth=("ann", "s3cret"), timeout=10).json()
    assert "/sdapi/v1/txt2img" in docs["paths"] and "/controlnet/detect" in docs["paths"]
    assert all(p.startswith(("/sdapi/v1/", "/controlnet/")) for p in docs["paths"])
    assert requests.get(rest_server.url + "controlnet/model_list", timeout=10).status_code == 401


def test_no_api_flag(tiny_model, tmp_path):
    server = start_server(tiny_model, tmp_path / "outputs", tmp_path / "server.log", "--no-api")
    try:
        assert requests.get(server.url + "sdapi/v1/sd-models", timeout=10).status_code == 404
    finally:
        stop_server(server)


def test_embeddings_and_loras_listed_after_a_refresh(own_studio, rest):
    from safetensors.numpy import save_file
    root = own_studio.local.library.root
    (root / "embeddings").mkdir(exist_ok=True)
    (root / "loras").mkdir(exist_ok=True)
    save_file({"emb_params": np.zeros((3, 768), np.float16)}, str(root / "embeddings" / "badhand.safetensors"))
    save_file({"x": np.zeros((1,), np.float16)}, str(root / "loras" / "foxes.safetensors"))
    assert rest.post("/sdapi/v1/refresh-embeddings").status_code == 200
    assert rest.get("/sdapi/v1/embeddings").json()["loaded"]["badhand"]["shape"] == 768
    assert rest.get("/sdapi/v1/embeddings").json()["loaded"]["badhand"]["vectors"] == 3
    assert rest.get("/sdapi/v1/loras").json() == [{"name": "foxes", "alias": "foxes", "path": "foxes.safetensors",
                                                   "metadata": {}, "family": ""}]    # its keys say no family
