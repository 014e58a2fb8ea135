"""The API, as a program or chatbot would use it: gradio_client against `python app.py`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from gradio_client import Client, handle_file
from PIL import Image

from studio.outputs.metadata import read_metadata

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def client(server):
    return Client(server.url, verbose=False)


def _first_png(gallery) -> str:
    path = gallery[0]["image"]
    with open(path, "rb") as f:
        assert f.read(8) == PNG_SIGNATURE, "the API must return PNG, not webp"
    return path


def test_endpoints_have_the_request_field_names(client):
    api = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    names = {k: [p["parameter_name"] for p in v["parameters"]] for k, v in api.items()}
    sampling = ["cfg_scale", "distilled_cfg", "shift", "t5_tokens"]
    common = ["prompt", "negative_prompt", "negative_presets", "style", "scheduler", "steps", *sampling,
              "width", "height", "seed", "batch_count", "batch_size"]
    addons = ["loras", "vae", "clip_skip", "variants", "references", "reference_strength",
              "reference_method", "regions_ratio", "base_ratio", "regions_mask", "control", "feature_cache", "tiling"]
    txt2img = [*common[:10], "slg_scale", *common[10:]]        # SD 3.5's skip-layer guidance: text-to-image
    faces = ["restore_faces", "face_restorer", "face_detector", "face_visibility", "codeformer_weight", "face_confidence"]
    detailer = faces + ["ad_enable", "ad_model", "ad_confidence", "ad_prompt", "ad_negative_prompt",
                        "ad_denoising_strength", "ad_dilate_erode", "ad_mask_blur", "ad_inpaint_padding"]
    assert names["/txt2img"] == txt2img + addons + ["variation_seed", "variation_strength", "hires", "hires_scale",
                                                    "hires_steps", "hires_strength", "hires_upscaler"] + detailer
    assert names["/img2img"] == ["image"] + common + ["strength"] + addons + ["sd_upscale", "sd_upscale_scale",
                                                                             "sd_upscale_overlap",
                                                                             "sd_upscale_upscaler"] + detailer
    assert names["/inpaint"] == ["image", "mask"] + common + ["strength", "mask_blur",
                                                               "only_masked", "only_masked_padding"] + addons


def test_txt2img_over_the_api(client, server):
    gallery, info, params, seed = client.predict(
        prompt="a red circle", negative_presets=["bad hands"], steps=3, seed=11, batch_size=2,
        api_name="/txt2img")
    assert len(gallery) == 2 and seed == 11
    path = _first_png(gallery)
    assert "Seed: 11" in info and "Negative prompt: bad hands" in info
    assert [p["seed"] for p in params] == [11, 12]
    saved = sorted(server.outputs.rglob("*-11.png"))
    assert saved, "the image was not saved under --outputs"
    assert np.array_equal(np.asarray(Image.open(path)), np.asarray(Image.open(saved[-1])))
    assert read_metadata(saved[-1])[1]["request"]["negative_presets"] == ["bad hands"]


def test_a_size_far_above_the_models_over_the_gradio_api(client, server):
    """The txt2img tab's function routes a size above twice the native side to studio/upscale/native.py:
    the upscaled picture first, the drawn one after it (as the hires fix shows its passes)."""
    gallery, info, params, seed = client.predict(prompt="a red circle", steps=2, seed=23, width=320, height=320,
                                                 api_name="/txt2img")
    sizes = [Image.open(_first_png([g])).size for g in gallery]
    assert sizes == [(320, 320), (64, 64)] and "Postprocess upscale to: 320x320" in info


def test_sd_upscale_from_the_img2img_tab_over_the_gradio_api(client, server):
    picture = server.outputs.parent / "sd-upscale-input.png"
    Image.new("RGB", (64, 64), (200, 40, 40)).save(picture)
    gallery, info, params, seed = client.predict(image=handle_file(str(picture)), prompt="a red circle", steps=4,
                                                 strength=0.3, seed=3, sd_upscale=True, sd_upscale_scale=2,
                                                 api_name="/img2img")
    assert Image.open(_first_png(gallery)).size == (128, 128) and "SD upscale scale: 2" in info


def test_xyz_plot_and_prompt_matrix_over_the_api(client, server):
    """/xyz_plot takes the txt2img fields plus the axes; the grid comes first, then the cells,
    all saved; /prompt_matrix the same for a prompt split by |; bad axes get a clear error."""
    gallery, info, params, seed = client.predict(
        prompt="a red circle", steps=2, seed=5, x_type="Seed", x_values="5-6", y_type="CFG scale",
        y_values="4, 8", api_name="/xyz_plot")
    assert len(gallery) == 5 and [p["seed"] for p in params] == [5, 6, 5, 6]
    grid = Image.open(_first_png(gallery))
    assert grid.width > 2 * params[0]["width"]
    saved = sorted(server.outputs.rglob("*-grid.png"))[-1]
    assert "X Type: Seed, X Values: 5-6, Y Type: CFG scale" in read_metadata(saved)[0]
    gallery, *_ = client.predict(prompt="a red circle|on a blue background", steps=2, seed=1,
                                 api_name="/prompt_matrix")
    assert len(gallery) == 3
    with pytest.raises(Exception, match="not a number or a range"):
        client.predict(prompt="x", steps=2, x_type="Steps", x_values="__import__('os')", api_name="/xyz_plot")
    names = [p["parameter_name"] for p in client.view_api(return_format="dict", print_info=False)
             ["named_endpoints"]["/xyz_plot"]["parameters"]]
    assert names[0] == "prompt" and names[-6:] == ["x_type", "x_values", "y_type", "y_values", "z_type", "z_values"]


def test_hires_fix_over_the_api(client, server):
    gallery, info, params, seed = client.predict(
        prompt="a red circle", steps=2, seed=31, hires=True, hires_scale=2, hires_steps=2, hires_strength=0.5,
        api_name="/txt2img")
    assert len(gallery) == 2 and seed == 31
    final, first = (Image.open(g["image"]) for g in gallery)
    assert final.size == (2 * first.width, 2 * first.height)
    assert "Hires upscale: 2, Hires steps: 2, Hires upscaler: Lanczos" in info
    with pytest.raises(Exception, match="Width must be between 64 and 2048, got 4096"):
        client.predict(prompt="x", steps=2, width=1024, height=64, hires=True, hires_scale=4, api_name="/txt2img")


def test_upscale_over_the_api(client, server, tmp_path):
    src = tmp_path / "small.png"
    Image.new("RGB", (40, 30), (200, 20, 20)).save(src)
    path, info = client.predict(image=handle_file(str(src)), upscaler="Nearest", scale=3, api_name="/upscale")
    assert Image.open(path).size == (120, 90) and info == "Postprocess upscale by: 3, Postprocess upscaler: Nearest"
    saved = sorted(server.outputs.rglob("*-upscale.png"))[-1]
    assert open(path, "rb").read() == saved.read_bytes()
    with pytest.raises(Exception, match="R-ESRGAN 4x\\+ is not in the list of choices"):
        client.predict(image=handle_file(str(src)), upscaler="R-ESRGAN 4x+", api_name="/upscale")


def test_img2img_over_the_api(client, tmp_path):
    src = tmp_path / "in.png"
    Image.new("RGB", (68, 64), (10, 200, 10)).save(src)
    gallery, info, params, seed = client.predict(
        image=handle_file(str(src)), prompt="a circle", strength=0.5, steps=4, seed=3,
        api_name="/img2img")
    _first_png(gallery)
    assert params[0]["mode"] == "img2img" and "Denoising strength: 0.5" in info
    # the notes reach API clients in each image's record; the parameters text stays pure infotext
    assert params[0]["notes"] == ["The input is 68x64; generated at 64x64 (a multiple of 8)."]
    assert info.splitlines()[-1].startswith("Steps: ")


def test_inpaint_over_the_api(client, tmp_path):
    src, mask = tmp_path / "in.png", tmp_path / "mask.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(src)
    m = Image.new("L", (64, 64), 0)
    m.paste(255, (16, 16, 48, 48))
    m.save(mask)
    gallery, info, params, seed = client.predict(
        image=handle_file(str(src)), mask=handle_file(str(mask)), prompt="a blue square",
        steps=3, seed=5, mask_blur=0, api_name="/inpaint")
    out = np.asarray(Image.open(_first_png(gallery)).convert("RGB"))
    outside = np.asarray(m) == 0
    assert np.array_equal(out[outside], np.asarray(Image.open(src))[outside])
    assert params[0]["mode"] == "inpaint" and "Mask blur: 0" in info


@pytest.mark.parametrize("kwargs, message", [
    (dict(prompt="x", width=100), "multiple of 8"),
    # Gradio's own slider and dropdown checks answer first here; either message names the limit.
    (dict(prompt="x", steps=500), "(Steps must be between 1 and 150|greater than maximum value 150)"),
    (dict(prompt="x", scheduler="Nope"), "(Unknown scheduler|Nope)"),
])
def test_bad_input_gives_a_message_and_the_server_keeps_serving(client, kwargs, message):
    with pytest.raises(Exception, match=message):
        client.predict(api_name="/txt2img", **kwargs)
    gallery, *_ = client.predict(prompt="still alive", steps=2, seed=1, api_name="/txt2img")
    assert len(gallery) == 1


def test_empty_mask_over_the_api(client, tmp_path):
    src, mask = tmp_path / "in.png", tmp_path / "mask.png"
    Image.new("RGB", (64, 64), "white").save(src)
    Image.new("L", (64, 64), 0).save(mask)
    with pytest.raises(Exception, match="mask is empty"):
        client.predict(image=handle_file(str(src)), mask=handle_file(str(mask)), prompt="x",
                       api_name="/inpaint")


def test_prompt_language_and_references_over_the_api(client, tmp_path):
    ref = tmp_path / "green.png"
    Image.new("RGB", (64, 64), (30, 170, 60)).save(ref)
    gallery, info, params, seed = client.predict(
        prompt="a [red:blue:0.5] circle {image} (-blurry)", references=[handle_file(str(ref))],
        reference_strength=0.7, steps=4, seed=3, api_name="/txt2img")
    meta = params[0]
    assert meta["references"][0]["name"] == "green" and meta["reference_strength"] == 0.7
    assert meta["parsed"]["moved_to_negative"] == ["blurry"]
    assert meta["request"]["prompt"] == "a [red:blue:0.5] circle {image} (-blurry)"
    explained = client.predict(prompt="(a (red:1.5)) BREAK b", negative_prompt="", negative_presets=[],
                               style="None", steps=4, api_name="/explain_prompt")
    assert len(explained["per step"][0]["chunks"]) == 2


def test_live_previews_stream_before_the_saved_image(client, server):
    # long enough (150 steps, batch 8) that previews (at most two a second) come before the end
    job = client.submit(prompt="a red circle", steps=150, seed=21, batch_size=8, api_name="/txt2img")
    gallery, info, params, seed = job.result(timeout=300)
    outputs = job.outputs()
    assert len(outputs) >= 2, "no preview was streamed"
    previews = [o[0] for o in outputs[:-1]]
    assert all(len(g) == 1 and g[0]["caption"] == "preview" for g in previews)
    assert len(gallery) == 8 and all(g["caption"].startswith("seed ") for g in gallery)
    assert all(p["seed"] == 21 + i for i, p in enumerate(params))


def test_outpaint_over_the_api(client, tmp_path):
    src = tmp_path / "wide.png"
    Image.new("RGB", (64, 64), (20, 200, 20)).save(src)
    gallery, info, params, seed = client.predict(image=handle_file(str(src)), prompt="a red circle", steps=2, seed=8,
                                                 strength=1.0, left=16, right=32, fill="mirror", band=8,
                                                 api_name="/outpaint")
    out = np.asarray(Image.open(_first_png(gallery)).convert("RGB"))
    assert out.shape == (64, 112, 3) and seed == 8
    assert (out[:, 16 + 8:16 + 64 - 8] == (20, 200, 20)).all()     # the picture, outside the band
    assert "Outpaint pixels: left 16 right 32 up 0 down 0, Outpaint fill: mirror" in info


def test_live_over_the_api_returns_a_picture_it_does_not_save(client, server):
    """/live takes txt2img's controls and answers with one picture and its parameters, held in
    the live lane and not written to the outputs folder; the same request through /txt2img saves
    the same picture."""
    api = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    assert [p["parameter_name"] for p in api["/live"]["parameters"]][:3] == ["prompt", "negative_prompt",
                                                                            "negative_presets"]
    before = set(server.outputs.rglob("*.png"))
    picture, info = client.predict(prompt="a blue square", steps=3, seed=21, batch_size=4, api_name="/live")
    assert "Seed: 21" in info and set(server.outputs.rglob("*.png")) == before
    gallery, *_ = client.predict(prompt="a blue square", steps=3, seed=21, api_name="/txt2img")
    assert np.array_equal(np.asarray(Image.open(picture).convert("RGB")),
                          np.asarray(Image.open(_first_png(gallery)).convert("RGB")))
    with pytest.raises(Exception, match="(?i)steps|minimum"):
        client.predict(prompt="x", steps=0, api_name="/live")


def test_five_rapid_live_changes_run_at_most_two_and_end_on_the_last(server):
    """A program typing through /live (one client: one session): five changes 0.3 s apart while a
    long picture is being made; the first runs, each later one replaces the one waiting, so at
    most two pictures are made, and the last is the last text's."""
    import time
    client = Client(server.url, verbose=False)
    client.predict(prompt="warm up", steps=2, api_name="/live")      # the model loaded before the burst
    texts = ["a", "a r", "a re", "a red", "a red circle"]
    jobs = []
    for text in texts:             # (the lane keeps the request that reaches it last: 0.3 s apart, in order)
        jobs.append(client.submit(prompt=text, steps=100, seed=3, api_name="/live"))   # ~4 s a picture
        time.sleep(0.3)
    outcomes = []
    for job in jobs:
        try:
            outcomes.append(job.result(timeout=180)[1])
        except Exception as exc:  # noqa: BLE001 - a replaced request ends with a message
            outcomes.append(exc)
    made = [o for o in outcomes if isinstance(o, str)]
    assert len(made) <= 2, outcomes
    assert isinstance(outcomes[-1], str) and outcomes[-1].startswith("a red circle\n"), outcomes
    assert all("Replaced by a newer live request" in str(o) for o in outcomes[1:-1] if not isinstance(o, str))


def test_animate_over_the_api_returns_a_playable_video_and_refuses_hostile_schedules(client, server):
    """/animate takes the animation settings (and pictures, a video, a name to resume): a program
    gets the MP4 and GIF back; the frames are saved under outputs/animations; a schedule that
    tries to reach Python gets a clear error, and the server goes on."""
    from studio.animation.settings import AnimationSettings
    api = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    names = [p["parameter_name"] for p in api["/animate"]["parameters"]]
    assert names[:4] == ["mode", "frames", "fps", "prompts"] and names[-4:] == ["start", "end", "video", "resume"]
    assert set(AnimationSettings.__dataclass_fields__) <= set(names)
    video, strip, status, files = client.predict(
        mode="travel", frames=4, fps=4, seed=9, steps="0:(3)", prompts="0: a red circle\n3: a blue square",
        formats=["mp4", "gif"], api_name="/animate")
    path = video["video"] if isinstance(video, dict) else video
    assert open(path, "rb").read(12)[4:8] == b"ftyp"                         # an MP4 container
    assert sorted(Path(f).suffix for f in files) == [".gif", ".mp4"] and "4 frames" in status
    frames = sorted(server.outputs.glob("animations/*/frame_*.png"))
    assert len(frames) == 4
    with pytest.raises(Exception, match="not allowed|may be called"):
        client.predict(mode="2d", frames=3, zoom="0:(__import__('os').getcwd())", api_name="/animate")
    with pytest.raises(Exception, match="Video mode needs a video"):
        client.predict(mode="video", frames=3, api_name="/animate")
    assert client.predict(prompt="still here", steps=2, api_name="/live")
