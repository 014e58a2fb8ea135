"""ControlNet and T2I-Adapter units (studio/control/): the preprocessors' maps, the units as
sd-webui-controlnet's clients send them, tiny random ControlNets (ControlNetModel.from_unet) and a
T2I-Adapter acting on a real tiny SD 1.x pipeline through the engine, single files in ControlNet's
own layout, and the REST interface (alwayson_scripts and the /controlnet routes)."""

from __future__ import annotations

import base64
import io
import json
import os

import numpy as np
import pytest
import torch
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from studio.config import Settings
from studio.control.maps import control_map, fit, pixel_perfect_resolution
from studio.control.models import ControlModels
from studio.control.preprocessors import PREPROCESSORS
from studio.errors import InvalidRequest
from studio.fields import Context
from studio.models.library import Entry
from studio.outputs.metadata import parse_parameters
from studio.requests import Limits
from studio.requests.control import ControlUnit, units
from studio.serving.studio import Studio
from tests.ldm_layout import acting_controlnet, acting_union, controlnet_to_ldm, tiny_pipeline, write_single_file

webuiapi = pytest.importorskip("webuiapi")


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    from diffusers import T2IAdapter
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("control-models")
    (root / "checkpoints").mkdir()
    cn = root / "controlnet"
    cn.mkdir()
    sd1, xl = tiny_pipeline("sd1"), tiny_pipeline("sdxl")
    write_single_file(sd1, "sd1", root / "checkpoints" / "sd1.safetensors")
    acting_controlnet(sd1.unet, (16, 32), seed=1).save_pretrained(cn / "edges")     # 2 pixels a latent, as the VAE
    acting_controlnet(sd1.unet, (16, 32), seed=2).save_pretrained(cn / "lines")
    acting_controlnet(xl.unet, (16, 32), seed=3).save_pretrained(cn / "xl-edges")
    wide = acting_controlnet(sd1.unet, (16, 32, 96, 256), seed=4)                    # the real files' 8
    wide.save_pretrained(cn / "wide")
    save_file(controlnet_to_ldm(wide), cn / "wide_cldm.safetensors")
    save_file(controlnet_to_ldm(wide, prefix=""), cn / "wide_bare.safetensors")
    save_file({k: v.contiguous() for k, v in wide.state_dict().items()}, cn / "wide_keys.safetensors")
    torch.save(controlnet_to_ldm(wide), cn / "wide_cldm.pth")
    torch.manual_seed(5)
    T2IAdapter(in_channels=3, channels=[32, 64], num_res_blocks=1, downscale_factor=2).save_pretrained(cn / "adapter")
    return root


@pytest.fixture(scope="module")
def studio(models_dir, tmp_path_factory):
    s = Studio.from_settings(Settings(model="", models_dir=models_dir, outputs=tmp_path_factory.mktemp("outputs")))
    s.select_model("sd1.safetensors")
    return s


def square(size: int = 64, box=(16, 16, 48, 48), ink=255, paper=0) -> np.ndarray:
    pic = np.full((size, size, 3), paper, np.uint8)
    pic[box[1]:box[3], box[0]:box[2]] = ink
    return pic


def make(studio, mode="txt2img", **kw):
    return studio.make_request(mode, **{"prompt": "a red circle", "seed": 7, "steps": 4, "width": 64,
                                        "height": 64, **kw})


def pixels(studio, mode="txt2img", **kw):
    result = studio.local.run(make(studio, mode, **kw))
    return np.asarray(result.images[0].image, dtype=np.int16), result


EDGES = {"model": "edges", "module": "canny", "image": square()}


# -- preprocessors and maps -------------------------------------------------------------------------

def run_pre(name, pic, a=-1.0, b=-1.0, mask=None, seed=0, size=None):
    unit = ControlUnit(model="", module=name, threshold_a=a, threshold_b=b, processor_res=pic.shape[0])
    h, w = size or pic.shape[:2]
    return control_map(unit, pic, mask, w, h, seed)


def test_edge_preprocessors_draw_white_lines_on_black_where_the_picture_has_edges():
    pic = square()
    edges = run_pre("canny", pic)
    assert edges.shape == (64, 64, 3) and edges.dtype == np.float32
    on = edges[..., 0] > 0.5
    assert on[15:17, 16:48].any() and on[16:48, 47:49].any()       # the square's outline
    assert not on[24:40, 24:40].any() and not on[:8, :8].any()      # not inside it, nor far from it
    with pytest.raises(InvalidRequest, match="low threshold"):
        run_pre("canny", pic, a=200, b=100)
    ink = square(ink=0, paper=255, box=(30, 4, 33, 60))             # a black line on white paper
    for name in ("scribble_xdog", "lineart_standard", "softedge_gradient", "invert"):
        m = run_pre(name, ink)[..., 0]
        assert m[30:32, 30:33].mean() > 0.5 > m[30:32, 5:10].mean(), name
    soft = run_pre("softedge_gradient", pic)[..., 0]
    assert soft[16, 30] > soft[30, 30] and soft.max() <= 1.0


def test_tile_blur_inpaint_and_shuffle_keep_what_their_models_expect():
    rng = np.random.default_rng(0)
    pic = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    tile = PREPROCESSORS["tile_resample"].run(pic, 4.0, 0, None, 0)
    assert tile.shape == (16, 16, 3)
    assert run_pre("blur_gaussian", pic, a=3.0).std() < pic.std() / 255 / 3
    mask = np.zeros((64, 64), np.uint8)
    mask[:, 32:] = 255
    painted = run_pre("inpaint", pic, mask=mask)
    assert (painted[:, 33:] == -1).all() and (painted[:, :31] >= 0).all()
    with pytest.raises(InvalidRequest, match="needs a mask"):
        run_pre("inpaint", pic)
    a, b, other = run_pre("shuffle", pic, seed=1), run_pre("shuffle", pic, seed=1), run_pre("shuffle", pic, seed=2)
    assert np.array_equal(a, b) and not np.array_equal(a, other)
    assert abs(a.mean() - pic.mean() / 255) < 0.03 and np.abs(a - pic / 255).mean() > 0.1


def test_maps_fit_the_picture_as_the_three_resize_modes_say():
    wide = np.zeros((50, 100, 3), np.float32)
    wide[:, :10] = 1.0                                                    # a white band on the left
    assert fit(wide, 64, 64, "just resize").shape == (64, 64, 3)
    crop = fit(wide, 64, 64, "crop and resize")                          # covers: the band is cut off
    assert crop.shape == (64, 64, 3) and crop[:, :4].max() < 0.5
    filled = fit(wide, 64, 64, "resize and fill", fill=0.25)             # fits: padded above and below
    assert np.allclose(filled[:10], 0.25) and np.allclose(filled[-10:], 0.25) and filled[32, 1, 0] > 0.9
    assert pixel_perfect_resolution((1024, 512), (512, 512), "crop and resize") == 512
    assert pixel_perfect_resolution((1024, 512), (512, 512), "resize and fill") == 256


# -- units as clients send them ---------------------------------------------------------------------

def read(value, known=("edges", "sd15/canny.safetensors")):
    ctx = Context("txt2img", Limits(), {"controlnets": list(known), "preprocessors": ["canny", "none"]})
    return units("ControlNet", value, ctx)


def test_units_take_sd_webui_controlnets_fields_names_and_numbers():
    pic = Image.fromarray(square())
    sent = webuiapi.ControlNetUnit(image=pic, module="canny", model="canny [d14c016b]", weight=0.8,
                                   resize_mode="Just Resize", control_mode=2, guidance_start=0.1,
                                   guidance_end=0.9).to_dict()
    sent["image"] = pic                          # the REST layer decodes the base64
    (u,) = read([sent, {"model": "None", "image": pic}, {"enabled": False, "model": "edges", "image": pic}])
    assert (u.model, u.module, u.weight, u.resize_mode, u.control_mode, u.start, u.end) == (
        "sd15/canny.safetensors", "canny", 0.8, "just resize", "control", 0.1, 0.9)
    assert u.image.shape == (64, 64, 3) and (u.threshold_a, u.threshold_b) == (64, 64)
    (n,) = read({"model": "edges", "image": pic, "resize_mode": 2, "control_mode": "My prompt is more important",
                 "some_future_key": 1})
    assert (n.resize_mode, n.control_mode, n.module) == ("resize and fill", "prompt", "none")
    assert read([]) == () and read(None) == ()


@pytest.mark.parametrize("value, message", [
    ({"model": "nope", "image": square()}, "Unknown ControlNet model 'nope'"),
    ({"model": "edges", "module": "depth_zoe", "image": square()}, "Unknown preprocessor"),
    ({"model": "edges", "weight": 3}, "weight must be between 0 and 2"),
    ({"model": "edges", "guidance_start": 0.8, "guidance_end": 0.2}, "start .* is after the end"),
    ({"model": "edges", "control_mode": 7}, "control mode must be one of"),
    ({"model": "edges", "resize_mode": "Stretch"}, "resize mode must be one of"),
    ({"model": "edges", "image": "not a picture at all"}, "Invalid encoded image"),
    ({"model": "edges", "image": "/etc/hostname"}, "Invalid encoded image"),        # a text is never a path
    ([{"model": "edges"}] * 4, "at most 3"),
    ("edges", "must be a list of unit settings"),
    ([42], "must be an object"),
])
def test_bad_units_get_a_message_that_names_the_setting(value, message):
    with pytest.raises(InvalidRequest, match=message):
        read(value)


def test_a_unit_with_no_picture_in_text_to_image_is_refused(studio):
    with pytest.raises(InvalidRequest, match="unit 1 has no control picture"):
        make(studio, control=[{"model": "edges", "module": "canny"}])


# -- through the engine ----------------------------------------------------------------------------

def test_a_unit_changes_the_picture_and_one_that_does_nothing_gives_the_plain_picture_bit_for_bit(studio):
    plain, _ = pixels(studio)
    controlled, result = pixels(studio, control=[EDGES])
    assert np.abs(controlled - plain).mean() > 0.5
    for idle in ({**EDGES, "weight": 0}, {**EDGES, "enabled": False}, {**EDGES, "guidance_start": 1.0},
                 {**EDGES, "guidance_end": 0.0}):
        same, _ = pixels(studio, control=[idle])
        assert np.array_equal(same, plain), idle
    again, _ = pixels(studio, control=[EDGES])
    assert np.array_equal(again, controlled)                          # reproducible
    late, _ = pixels(studio, control=[{**EDGES, "guidance_start": 0.5}])
    assert 0 < np.abs(late - plain).mean() < np.abs(controlled - plain).mean()


def test_control_modes_and_several_units_each_make_their_own_picture(studio):
    pictures = {str(mode): pixels(studio, control=[{**EDGES, "control_mode": mode}])[0] for mode in (0, 1, 2)}
    pictures["two"] = pixels(studio, control=[EDGES, {**EDGES, "model": "lines", "module": "invert"}])[0]
    pictures["adapter"] = pixels(studio, control=[{**EDGES, "model": "adapter"}])[0]
    names = list(pictures)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert np.abs(pictures[a] - pictures[b]).mean() > 0.1, (a, b)
    plain, _ = pixels(studio)
    assert np.array_equal(pixels(studio, control=[{**EDGES, "model": "adapter", "weight": 0}])[0], plain)


def test_image_to_image_and_inpainting_use_their_own_picture_when_the_unit_has_none(studio):
    rng = np.random.default_rng(3)
    picture = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    mask = np.zeros((64, 64), np.uint8)
    mask[16:48, 16:48] = 255
    unit = {"model": "edges", "module": "canny"}
    for mode, extra in (("img2img", {}), ("inpaint", {"mask": mask})):
        plain, _ = pixels(studio, mode, image=picture, strength=0.8, **extra)
        own, _ = pixels(studio, mode, image=picture, strength=0.8, control=[unit], **extra)
        given, _ = pixels(studio, mode, image=picture, strength=0.8, control=[{**unit, "image": square()}], **extra)
        inside = (slice(16, 48), slice(16, 48))                  # what inpainting redraws
        assert np.abs(own - plain)[inside].mean() > 0.2 and np.abs(own - given)[inside].mean() > 0.2, mode
    painted, _ = pixels(studio, "inpaint", image=picture, mask=mask, strength=0.8,
                        control=[{**unit, "module": "inpaint"}])
    assert np.array_equal(painted[:8, :8], picture[:8, :8].astype(np.int16))   # outside the mask: the input's


def test_the_record_says_each_unit_as_sd_webui_controlnet_writes_it(studio):
    _, result = pixels(studio, control=[{**EDGES, "weight": 0.7, "control_mode": 1}])
    image = result.images[0]
    _, _, fields = parse_parameters(image.parameters)
    unit = fields["ControlNet 0"]
    assert unit.startswith("Module: canny, Model: edges [") and "Weight: 0.7" in unit
    assert "Threshold A: 100, Threshold B: 200" in unit and "Control Mode: My prompt is more important" in unit
    (saved,) = image.data["controlnet"]
    assert saved["model"] == "edges" and len(saved["sha256"]) == 64 and saved["weight"] == 0.7
    assert image.data["request"]["control"][0]["module"] == "canny"


def test_single_files_in_controlnets_own_layout_load_as_their_diffusers_folder(studio, models_dir):
    cache, lib = ControlModels(), studio.local.library
    folder = cache.get(lib.get("controlnet", "wide"), "cpu", torch.float32, False).module.state_dict()
    for name in ("wide_cldm.safetensors", "wide_bare.safetensors", "wide_keys.safetensors"):
        loaded = cache.get(lib.get("controlnet", name), "cpu", torch.float32, False).module.state_dict()
        assert loaded.keys() == folder.keys(), name
        assert all(torch.equal(loaded[k], folder[k]) for k in folder), name
    pickle = Entry("controlnet", "wide_cldm.pth", models_dir / "controlnet" / "wide_cldm.pth")
    with pytest.raises(InvalidRequest, match="--allow-pickle"):
        cache.get(pickle, "cpu", torch.float32, False)
    loaded = cache.get(pickle, "cpu", torch.float32, True).module.state_dict()
    assert all(torch.equal(loaded[k], folder[k]) for k in folder)
    assert "wide_cldm.pth" not in studio.names("controlnet")       # not offered without --allow-pickle


@pytest.mark.parametrize("model, message", [
    ("xl-edges", "made for models with 192-wide text embeddings; the loaded model has 64"),
    ("wide", "reads its picture at 8 pixels a latent; the loaded model has 2"),
])
def test_a_control_model_for_another_model_is_a_clear_message(studio, model, message):
    with pytest.raises(InvalidRequest, match=message):
        studio.local.run(make(studio, control=[{**EDGES, "model": model}]))


def test_plot_axes_set_the_first_units_weight_end_and_preprocessor(studio):
    from studio.plots.plot import make_xyz_plot, run_plot
    from studio.serving.sequence import Sequence

    base = {"prompt": "a red circle", "seed": 7, "steps": 4, "width": 64, "height": 64, "control": [EDGES]}
    plot = make_xyz_plot(studio, base, [("ControlNet weight", "0, 1"), ("ControlNet preprocessor", "canny, invert"),
                                        ("ControlNet end", "0.5, 1")])
    assert plot.count == 8 and plot.x_labels == ["ControlNet weight: 0", "ControlNet weight: 1"]
    result = run_plot(plot, Sequence(studio, user="plots", session="plots"))
    plain, _ = pixels(studio)
    for (x, y, z), picture in result.images.items():
        alone, _ = pixels(studio, control=[{**EDGES, "weight": [0, 1][x], "module": ["canny", "invert"][y],
                                            "guidance_end": [0.5, 1][z]}])
        assert np.array_equal(np.asarray(picture.image, dtype=np.int16), alone), (x, y, z)
        assert np.array_equal(alone, plain) == (x == 0), (x, y, z)
    with pytest.raises(InvalidRequest, match="enable a ControlNet unit first"):
        make_xyz_plot(studio, {**base, "control": []}, [("ControlNet weight", "0, 1")])


@pytest.fixture(scope="module")
def families(tmp_path_factory):
    """SD 2.x and SDXL single files, each with a ControlNet of its own; SDXL also with a
    ControlNet-Union of 8 control types (ProMax's) and one of 6."""
    root = tmp_path_factory.mktemp("control-families")
    (root / "checkpoints").mkdir()
    for family in ("sd2", "sdxl"):
        pipe = tiny_pipeline(family)
        write_single_file(pipe, family, root / "checkpoints" / f"{family}.safetensors")
        acting_controlnet(pipe.unet, (16, 32), seed=7).save_pretrained(root / "controlnet" / f"{family}-edges")
    acting_union(pipe.unet, (16, 32), seed=8).save_pretrained(root / "controlnet" / "union-promax")
    acting_union(pipe.unet, (16, 32), seed=8, control_types=6).save_pretrained(root / "controlnet" / "union")
    return Studio.from_settings(Settings(model="", models_dir=root, outputs=tmp_path_factory.mktemp("outputs")))


def test_sd2_sdxl_and_union_controlnets_act_and_weight_zero_is_the_plain_picture(families):
    for family in ("sd2", "sdxl"):
        families.select_model(f"{family}.safetensors")
        plain, _ = pixels(families)
        unit = {"model": f"{family}-edges", "module": "canny", "image": square()}
        assert np.abs(pixels(families, control=[unit])[0] - plain).mean() > 0.5, family
        assert np.array_equal(pixels(families, control=[{**unit, "weight": 0}])[0], plain), family
    union = {"model": "union-promax", "image": square()}
    canny, result = pixels(families, control=[{**union, "module": "canny"}])
    assert 'Control Type: canny' in result.images[0].parameters
    typed, _ = pixels(families, control=[{**union, "module": "canny", "control_type": "depth"}])
    tile, _ = pixels(families, control=[{**union, "module": "tile_resample"}])
    assert np.abs(canny - plain).mean() > 0.5 and np.abs(canny - typed).mean() > 0.1 and np.abs(canny - tile).mean() > 0.1
    with pytest.raises(InvalidRequest, match="knows 6 control types; 'tile' is not one of them"):
        pixels(families, control=[{**union, "model": "union", "module": "tile_resample"}])


# -- REST ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def rest(studio) -> TestClient:
    from studio.api.routes import api_routes
    return TestClient(FastAPI(routes=api_routes(studio, [])))


def b64(array: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def answer_pixels(response) -> np.ndarray:
    assert response.status_code == 200, response.text
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(response.json()["images"][0]))), dtype=np.int16)


def test_rest_units_as_webuiapi_sends_them_and_the_controlnet_routes(rest, studio):
    body = {"prompt": "a red circle", "seed": 7, "steps": 4, "width": 64, "height": 64}
    plain = answer_pixels(rest.post("/sdapi/v1/txt2img", json=body))
    title = rest.get("/controlnet/model_list").json()["model_list"]
    edges = next(t for t in title if t.startswith("edges ["))
    unit = webuiapi.ControlNetUnit(image=Image.fromarray(square()), module="canny", model=edges).to_dict()
    controlled = answer_pixels(rest.post("/sdapi/v1/txt2img", json={**body, "alwayson_scripts": {
        "ControlNet": {"args": [unit]}}}))
    assert np.abs(controlled - plain).mean() > 0.5
    assert np.array_equal(answer_pixels(rest.post("/sdapi/v1/txt2img", json={**body, "alwayson_scripts": {
        "controlnet": {"args": [{**unit, "enabled": False}]}}})), plain)
    init = {**body, "init_images": [b64(square())], "denoising_strength": 0.8}
    assert answer_pixels(rest.post("/sdapi/v1/img2img", json={**init, "alwayson_scripts": {"controlnet": {"args": [
        {"model": "edges", "module": "canny"}]}}})).shape == (64, 64, 3)
    assert rest.get("/controlnet/version").json() == {"version": 2}
    modules = rest.get("/controlnet/module_list").json()
    assert "canny" in modules["module_list"] and modules["module_detail"]["canny"]["sliders"][1]["value"] == 100
    assert rest.get("/controlnet/settings").json()["control_net_unit_count"] == 3
    detected = rest.post("/controlnet/detect", json={"controlnet_module": "canny", "controlnet_input_images": [
        b64(square())], "controlnet_processor_res": 64})
    assert detected.status_code == 200, detected.text
    edges_map = np.asarray(Image.open(io.BytesIO(base64.b64decode(detected.json()["images"][0]))))
    assert edges_map.shape == (64, 64, 3) and edges_map[15:17, 20:40].max() == 255 and edges_map[32, 32].max() == 0


@pytest.mark.parametrize("unit, status, detail", [
    ({"model": "nope", "image": b64(square())}, 400, "Unknown ControlNet model 'nope'"),
    ({"model": "edges", "image": "not base64!"}, 400, "not base64"),
    ({"model": "edges", "image": base64.b64encode(b"GIF89a" + b"\0" * 20).decode()}, 400, "not a picture"),
    ({"model": "edges", "image": 42}, 400, "must be a base64 picture"),
    ({"model": "edges", "module": "canny", "image": "", "weight": 1}, 400, "no control picture"),
])
def test_rest_bad_units_are_a_4xx_with_a_detail(rest, unit, status, detail):
    r = rest.post("/sdapi/v1/txt2img", json={"prompt": "x", "steps": 2, "width": 64, "height": 64,
                                             "alwayson_scripts": {"controlnet": {"args": [unit]}}})
    assert r.status_code == status and detail in r.json()["detail"], r.text


def test_a_control_picture_that_is_a_decompression_bomb_is_refused(rest):
    buffer = io.BytesIO()
    Image.new("L", (20000, 20000)).save(buffer, format="PNG")
    r = rest.post("/sdapi/v1/txt2img", json={"prompt": "x", "steps": 2, "width": 64, "height": 64,
                                             "alwayson_scripts": {"controlnet": {"args": [{
                                                 "model": "edges", "image": base64.b64encode(buffer.getvalue()).decode()}]}}})
    assert r.status_code == 400 and "too large" in r.json()["detail"], r.text


# -- gradio_client, as programs call the tabs --------------------------------------------------------

def test_gradio_client_sends_units_as_the_control_field(control_server):
    from gradio_client import Client

    client = Client(control_server.url, verbose=False)
    assert "control_panel" not in str(client.view_api(print_info=False, return_format="dict"))

    def first_picture(**kw):
        gallery, *_ = client.predict(prompt="a red circle", steps=3, seed=5, width=64, height=64, api_name="/txt2img",
                                     **kw)
        return np.asarray(Image.open(gallery[0]["image"]), dtype=np.int16)

    plain = first_picture()
    unit = {"model": "shapes", "module": "canny", "image": "data:image/png;base64," + b64(square())}
    controlled = first_picture(control=[unit])
    assert np.abs(controlled - plain).mean() > 0.5
    assert np.array_equal(first_picture(control=[{**unit, "weight": 0}]), plain)
    with pytest.raises(Exception, match="Unknown ControlNet model 'gone'"):
        first_picture(control=[{**unit, "model": "gone"}])


def test_rest_hires_fix_keeps_the_units_on_both_passes(rest):
    body = {"prompt": "a red circle", "seed": 7, "steps": 4, "width": 64, "height": 64, "enable_hr": True,
            "hr_scale": 1.5, "denoising_strength": 0.6, "hr_upscaler": "Lanczos",
            "alwayson_scripts": {"controlnet": {"args": [{"model": "edges", "module": "canny", "image": b64(square())}]}}}
    r = rest.post("/sdapi/v1/txt2img", json=body)
    assert r.status_code == 200, r.text
    infotexts = json.loads(r.json()["info"])["infotexts"]
    assert len(infotexts) == 1 and "Hires upscale: 1.5" in infotexts[0] and 'ControlNet 0: "Module: canny' in infotexts[0]
    assert answer_pixels(r).shape == (96, 96, 3)


# -- preprocessors with weights ----------------------------------------------------------------------

def write_depth_model(folder):
    """A tiny random Depth Anything (transformers) with its image processor, as the hub's folder has them."""
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config, DPTImageProcessor

    backbone = Dinov2Config(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                            image_size=56, patch_size=14, out_features=["stage1", "stage2", "stage3", "stage4"],
                            reshape_hidden_states=False)
    torch.manual_seed(0)
    DepthAnythingForDepthEstimation(DepthAnythingConfig(
        backbone_config=backbone, fusion_hidden_size=16, neck_hidden_sizes=[8, 16, 32, 32], head_hidden_size=8,
        reassemble_hidden_size=32, patch_size=14)).eval().save_pretrained(folder)
    DPTImageProcessor(size={"height": 56, "width": 56}, keep_aspect_ratio=True, ensure_multiple_of=14,
                      do_pad=False).save_pretrained(folder)


def test_depth_needs_its_files_in_models_annotators_and_then_makes_a_depth_map(studio, models_dir):
    unit = {**EDGES, "module": "depth_midas"}            # sd-webui-controlnet's name: the depth model here
    with pytest.raises(InvalidRequest, match="models/annotators/depth-anything/; missing: config.json, "
                                             "model.safetensors, preprocessor_config.json"):
        pixels(studio, control=[unit])
    with pytest.raises(InvalidRequest, match="missing: config.json"):
        studio.detect("depth_anything", square())
    write_depth_model(models_dir / "annotators" / "depth-anything")
    shown = studio.detect("depth_anything", square(), processor_res=64)
    assert shown.shape == (64, 64, 3) and shown.min() == 0 and shown.max() == 255   # scaled to the full range
    controlled, result = pixels(studio, control=[unit])
    plain, _ = pixels(studio)
    assert np.abs(controlled - plain).mean() > 0.5
    assert 'ControlNet 0: "Module: depth_anything' in result.images[0].parameters


def test_normals_from_depth_face_the_way_the_depth_slopes():
    """A ramp nearer to the right faces left (red below the middle), a dome's upper half faces up
    (green above it), and the far background is flat (0.5, 0.5, 1)."""
    from studio.control.annotators import normals_from_depth
    ramp = np.tile(np.linspace(0.5, 1.0, 64, dtype=np.float32), (64, 1))
    n = normals_from_depth(ramp)
    assert n.shape == (64, 64, 3) and n.dtype == np.float32
    inner = n[8:-8, 8:-8]
    assert (inner[..., 0] < 0.45).all() and np.allclose(inner[..., 1], 0.5, atol=1e-6) and (inner[..., 2] > 0.5).all()
    assert np.allclose(np.linalg.norm(n * 2 - 1, axis=2), 1.0, atol=1e-5)
    yy, xx = np.mgrid[0:64, 0:64]
    dome = np.clip(1.0 - ((xx - 32) ** 2 + (yy - 32) ** 2) / 30.0 ** 2, 0, 1).astype(np.float32)
    d = normals_from_depth(dome)
    assert d[20, 32, 1] > 0.55 and d[44, 32, 1] < 0.45          # upper half faces up, lower half down
    assert d[32, 20, 0] < 0.45 and d[32, 44, 0] > 0.55          # left half faces left, right half right
    assert np.allclose(d[0, 0], (0.5, 0.5, 1.0))                # beyond the dome: the flat background


def write_segmentation_model(folder, classes: int = 150):
    """A tiny random SegFormer with its image processor, as the hub's ADE20K folder has them."""
    from transformers import SegformerConfig, SegformerForSemanticSegmentation, SegformerImageProcessor

    torch.manual_seed(0)
    SegformerForSemanticSegmentation(SegformerConfig(
        num_labels=classes, hidden_sizes=[8, 16, 16, 16], depths=[1, 1, 1, 1], num_attention_heads=[1, 1, 1, 1],
        decoder_hidden_size=16)).eval().save_pretrained(folder)
    SegformerImageProcessor(size={"height": 64, "width": 64}).save_pretrained(folder)


def test_normals_and_segmentation_need_their_files_and_then_make_their_maps(studio, models_dir, tmp_path):
    from studio.control.annotators import ade20k_palette
    palette = ade20k_palette()
    assert palette.shape == (150, 3) and tuple(palette[0]) == (120, 120, 120)     # wall
    with pytest.raises(InvalidRequest, match="models/annotators/segformer-ade20k/; missing: config.json"):
        studio.detect("seg_ofade20k", square())                  # sd-webui-controlnet's name runs it
    write_depth_model(models_dir / "annotators" / "depth-anything")
    normals = studio.detect("normal_midas", square(), processor_res=64)
    assert normals.shape == (64, 64, 3) and normals[..., 2].min() >= 127        # every surface faces the viewer
    write_segmentation_model(models_dir / "annotators" / "segformer-ade20k")
    seg = studio.detect("segmentation_ade20k", square(), processor_res=64)
    assert seg.shape == (64, 64, 3)
    colours = {tuple(c) for c in seg.reshape(-1, 3)}
    assert colours <= {tuple(c) for c in palette}                 # every pixel one of ADE20K's colours
    _, result = pixels(studio, control=[{**EDGES, "module": "seg_ufade20k"}])
    assert 'ControlNet 0: "Module: segmentation_ade20k' in result.images[0].parameters
    write_segmentation_model(models_dir / "annotators" / "segformer-ade20k", classes=19)
    with pytest.raises(InvalidRequest, match="has 19 classes; segmentation maps take ADE20K's 150"):
        studio.detect("segmentation_ade20k", square())


def test_openpose_drawing_puts_each_limb_in_its_colour_between_its_points():
    """COCO keypoints become OpenPose's 18 points (the neck between the shoulders) drawn in its
    colours: the points in full colour, the limbs at 0.6; unseen points and their limbs not drawn."""
    from studio.control.annotators import OPENPOSE_COLOURS, draw_openpose, openpose_points
    coco = np.zeros((17, 2), np.float32)
    coco[5], coco[6] = (80, 60), (40, 60)           # left and right shoulder (the person faces us)
    coco[8], coco[12] = (40, 100), (50, 120)        # right elbow, right hip
    scores = np.zeros(17, np.float32)
    scores[[5, 6, 8, 12]] = 0.9
    points = openpose_points(coco, scores)
    assert points[1] == (60.0, 60.0) and points[2] == (40.0, 60.0) and points[3] == (40.0, 100.0)
    assert points[0] is None and points[4] is None
    drawn = (draw_openpose(160, 128, [points]) * 255).round().astype(np.int16)
    assert tuple(drawn[60, 60]) == OPENPOSE_COLOURS[1]                       # the neck's point
    assert tuple(drawn[80, 40]) == tuple(round(c * 0.6) for c in OPENPOSE_COLOURS[2])   # upper arm: limb 2-3
    assert tuple(drawn[5, 5]) == (0, 0, 0) and tuple(drawn[150, 120]) == (0, 0, 0)
    assert not drawn[100:, 90:].any()                                        # no left arm: nothing drawn there


def write_pose_models(root):
    """Tiny random ViTPose and RT-DETR folders, as the hub's have them."""
    from transformers import (RTDetrConfig, RTDetrForObjectDetection, RTDetrImageProcessor, RTDetrResNetConfig,
                              VitPoseBackboneConfig, VitPoseConfig, VitPoseForPoseEstimation, VitPoseImageProcessor)
    torch.manual_seed(0)
    backbone = VitPoseBackboneConfig(image_size=[64, 48], patch_size=[16, 16], hidden_size=16, num_hidden_layers=1,
                                     num_attention_heads=2, out_indices=[1])
    pose = VitPoseForPoseEstimation(VitPoseConfig(backbone_config=backbone, num_labels=17)).eval()
    with torch.no_grad():
        pose.head.conv.bias.fill_(1.0)         # every heatmap peaks above the drawing threshold
    pose.save_pretrained(root / "vitpose")
    VitPoseImageProcessor(size={"height": 64, "width": 48}).save_pretrained(root / "vitpose")
    resnet = RTDetrResNetConfig(embedding_size=8, hidden_sizes=[8, 16, 16, 16], depths=[1, 1, 1, 1], layer_type="basic",
                                out_features=["stage2", "stage3", "stage4"])
    RTDetrForObjectDetection(RTDetrConfig(
        backbone_config=resnet, d_model=16, encoder_hidden_dim=16, encoder_in_channels=[16, 16, 16], encoder_ffn_dim=32,
        encoder_attention_heads=2, decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=32, num_queries=10,
        num_labels=80, decoder_in_channels=[16, 16, 16], num_feature_levels=3)).eval().save_pretrained(root / "rtdetr-persons")
    RTDetrImageProcessor(size={"height": 64, "width": 64}).save_pretrained(root / "rtdetr-persons")


def test_pose_needs_its_files_and_then_draws_openpose_with_or_without_the_detector(tmp_path):
    from studio.control.annotators import OPENPOSE_COLOURS, POSE, Annotators
    annotators, picture = Annotators(), square(96)
    with pytest.raises(InvalidRequest, match="models/annotators/vitpose/; missing: config.json"):
        annotators.run(POSE, picture, tmp_path)
    write_pose_models(tmp_path)
    allowed = {(0, 0, 0), *OPENPOSE_COLOURS, *(tuple(round(c * 0.6) for c in k) for k in OPENPOSE_COLOURS)}
    for detector in (True, False):
        if not detector:
            (tmp_path / "rtdetr-persons" / "model.safetensors").unlink()     # the whole picture: one person
        drawn = annotators.run(POSE, picture, tmp_path)
        assert drawn.shape == (96, 96, 3) and drawn.dtype == np.float32
        colours = {tuple(c) for c in (drawn * 255).round().astype(int).reshape(-1, 3)}
        assert colours <= allowed                    # black, OpenPose's colours and their limbs' 0.6
    assert len(colours) > 1                          # the whole-picture person: some points drawn


def test_units_on_a_compiled_unet_match_the_eager_picture_without_a_graph_a_step(models_dir, tmp_path):
    import shutil

    import torch._dynamo
    if not shutil.which("g++"):
        if os.environ.get("STUDIO_REQUIRE_COMPILER"):
            pytest.fail("g++ is required here: torch.compile's CPU backend builds C++")
        pytest.skip("no C++ compiler for torch.compile's CPU backend")
    pictures = {}
    for compiled in (False, True):
        s = Studio.from_settings(Settings(model="", models_dir=models_dir, outputs=tmp_path / str(compiled),
                                          fast="on", compile=compiled, compile_cache=tmp_path / "cache"))
        s.select_model("sd1.safetensors")
        pictures[compiled] = pixels(s, control=[EDGES])[0]
        graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
        assert np.array_equal(pixels(s, control=[EDGES, {**EDGES, "model": "lines", "weight": 0.5}])[0],
                              pixels(s, control=[EDGES, {**EDGES, "model": "lines", "weight": 0.5}])[0])
        if compiled:      # two runs of 4 steps with other units: at most the one graph more
            assert torch._dynamo.utils.counters["stats"]["unique_graphs"] - graphs <= 1
    assert np.abs(pictures[True] - pictures[False]).max() <= 3


def test_only_masked_inpainting_takes_the_units_map_of_the_same_crop(studio):
    """'Only masked' inpaints a crop around the mask scaled to the picture size; each unit's map
    is made of that same crop of its picture (the square's corner lands mid-map, not where the
    whole picture has it), the pixels outside the mask stay, and weight 0 is the plain picture."""
    from PIL import Image
    from studio.control.units import control_maps
    mask = np.zeros((64, 64), np.uint8)
    mask[40:56, 40:56] = 255
    kw = dict(image=square(), mask=mask, only_masked=True, only_masked_padding=0, mask_blur=0)
    request = make(studio, "inpaint", control=[{**EDGES, "processor_res": 64}], **kw)
    (map_,) = control_maps(request, 64, 64, 7, None, Image.fromarray(mask))
    edges = map_[..., 0] > 0.5
    # the crop (40..56 of 64) holds the square's corner at (48, 48): in the map at (48 - 40) * 4 = 32
    assert edges[:28, 29:36].any(axis=1).all() and edges[29:36, :28].any(axis=0).all()
    assert not edges[38:].any() and not edges[:, 38:].any()      # beyond the corner: nothing
    assert not edges[:28, 12:20].any()                           # the whole picture's left edge (x = 16): not here
    controlled, result = pixels(studio, "inpaint", control=[{**EDGES, "processor_res": 64}], **kw)
    plain, _ = pixels(studio, "inpaint", **kw)
    outside = mask == 0
    assert np.abs(controlled - square().astype(np.int16))[outside].max() <= 2   # pasted back: the rest unchanged
    assert np.abs(controlled - plain)[~outside].mean() > 0.5
    assert np.array_equal(pixels(studio, "inpaint", control=[{**EDGES, "weight": 0}], **kw)[0], plain)
    assert 'ControlNet 0: "Module: canny' in result.images[0].parameters


def test_png_info_puts_a_pictures_units_back_in_the_panel_and_never_as_pictureless_units():
    """A picture's recorded units (settings, no pictures) go back into the panel's controls: each
    enabled with its settings, the picture left to give; a model this studio lacks stays unset;
    thresholds out of the preprocessor's range are left to _sliders. The hidden field programs
    send is never filled from a record (a Generate would then run units without pictures)."""
    import gradio as gr
    from studio.requests.control import ControlUnit
    from studio.ui.control import KEYS, _sliders, restored
    from studio.ui.pnginfo import ui_value
    recorded = [ControlUnit(model="shapes", module="canny", weight=0.6, start=0.1, end=0.8, threshold_a=50,
                            threshold_b=-1, control_mode="control").settings(),
                ControlUnit(model="gone [0123abcd]", module="invert").settings()]
    recorded = json.loads(json.dumps(recorded))          # as the JSON record keeps them
    values = restored(recorded, ["shapes"])
    n = len(KEYS)
    first, second, third = (dict(zip(KEYS, values[i * n:(i + 1) * n])) for i in range(3))
    assert first["enabled"] is True and first["module"] == "canny" and first["model"] == "shapes"
    assert (first["weight"], first["guidance_start"], first["guidance_end"]) == (0.6, 0.1, 0.8)
    assert first["control_mode"] == "control" and first["threshold_a"] == 50
    assert all(isinstance(first[k], type(gr.skip())) for k in ("source", "image", "sketch", "threshold_b"))
    assert second["enabled"] is True and isinstance(second["model"], type(gr.skip()))
    assert third["enabled"] is False
    pending = values[3 * n]
    a, b, _, cleared = _sliders("canny", pending)
    assert (a.value, b.value, cleared) == (50, 200, None)          # the record's low threshold, the default high
    assert _sliders("canny", None)[0].value == 100
    assert isinstance(ui_value("control", recorded), type(gr.skip()))
