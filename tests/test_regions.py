"""Regional prompts (studio/control/regions.py): Regional Prompter's keywords and divide ratios read
into boxes, masks that cover the canvas once at every attention resolution, and masked
cross-attention on a real tiny SD 1.x pipeline: the same prompt in every region is the plain
picture bit for bit, so what differs is the regions' doing."""

from __future__ import annotations

import numpy as np
import pytest

from studio.config import Settings
from studio.control.regions import masks, read_regions
from studio.errors import InvalidRequest
from studio.serving.studio import Studio
from tests.ldm_layout import tiny_pipeline, write_single_file


def test_keywords_and_ratios_become_prompts_and_boxes():
    r = read_regions("a garden ADDCOMM soft light ADDBASE a red circle ADDCOL a cyan square ADDROW grass",
                     "1,1,3;1,1", 0.3)
    assert r.prompts == ("a garden, a red circle", "a garden, a cyan square", "a garden, grass")
    assert r.base == "a garden soft light" and r.base_ratio == 0.3
    assert r.texts == ("a garden soft light", *r.prompts)
    assert r.boxes == ((0.0, 0.0, 0.25, 0.5), (0.25, 0.0, 1.0, 0.5), (0.0, 0.5, 1.0, 1.0))
    equal = read_regions("a ADDCOL b ADDCOL c", "", 0.2)
    assert equal.base is None and equal.base_ratio == 0.0
    assert [round(b[2] - b[0], 4) for b in equal.boxes] == [0.3333] * 3
    assert read_regions("top ADDROW bottom", "1,3", 0.2).boxes == ((0, 0, 1, 0.25), (0, 0.25, 1, 1))
    assert read_regions("a red circle", "", 0.2) is None


@pytest.mark.parametrize("prompt, ratio, message", [
    ("a ADDCOL b", "1,2,3", "has 3 numbers for 1 rows"),
    ("a ADDCOL b ADDROW c", "1,1;1,1", r"describes 2 rows of \[1, 1\] columns; the prompt has 2 rows of \[2, 1\]"),
    ("a ADDCOL b", "1,x", "must be numbers"),
    ("a ADDCOL b", "1,-1", "must be positive"),
    ("a ADDBASE b ADDCOMM c ADDCOL d", "", "ADDCOMM comes first"),
])
def test_bad_ratios_and_keyword_orders_are_explained(prompt, ratio, message):
    with pytest.raises(InvalidRequest, match=message):
        read_regions(prompt, ratio, 0.2)


@pytest.mark.parametrize("height, width", [(8, 8), (9, 13), (16, 24)])
def test_masks_cover_every_position_once_at_every_resolution(height, width):
    r = read_regions("a ADDCOL b ADDCOL c ADDROW d", "1,1,2,1;2,1", 0.2)
    for k in range(3):
        h, w = -(-height // 2 ** k), -(-width // 2 ** k)
        m = masks(r, h * w, height, width)
        assert m.shape == (4, h * w, 1) and bool((m.sum(0) == 1).all()), (h, w)
    first = masks(r, height * width, height, width)[0].reshape(height, width)
    assert first[0, 0] == 1 and first[-1, -1] == 0          # the first region: top left


def test_each_position_attends_to_its_own_regions_text_only():
    """A real cross-attention layer: positions in the left column get exactly the attention to
    the left prompt's tokens, the right column's to the right prompt's."""
    import torch
    from diffusers.models.attention_processor import Attention, AttnProcessor2_0

    from studio.control.regions import _RegionalAttention
    torch.manual_seed(0)
    attn = Attention(query_dim=16, cross_attention_dim=8, heads=2, dim_head=8).eval()
    attn.set_processor(AttnProcessor2_0())
    regions = read_regions("left ADDCOL right", "1,3", 0.2)
    hidden, left, right = torch.randn(1, 4 * 8, 16), torch.randn(1, 5, 8), torch.randn(1, 5, 8)
    wrapped = _RegionalAttention(attn.processor, regions, tokens=5, height=4, width=8)
    with torch.no_grad():
        mixed = wrapped(attn, hidden, torch.cat([left, right], dim=1)).reshape(4, 8, 16)
        alone = [attn(hidden, encoder_hidden_states=t).reshape(4, 8, 16) for t in (left, right)]
    assert torch.allclose(mixed[:, :2], alone[0][:, :2]) and torch.allclose(mixed[:, 2:], alone[1][:, 2:])
    assert not torch.allclose(alone[0], alone[1])


# -- through the engine ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    root = tmp_path_factory.mktemp("regions-models")
    (root / "checkpoints").mkdir()
    write_single_file(tiny_pipeline("sd1"), "sd1", root / "checkpoints" / "sd1.safetensors")
    s = Studio.from_settings(Settings(model="", models_dir=root, outputs=tmp_path_factory.mktemp("outputs")))
    s.select_model("sd1.safetensors")
    return s


def pixels(studio, prompt, mode="txt2img", **kw):
    result = studio.local.run(studio.make_request(mode, **{"prompt": prompt, "seed": 3, "steps": 4, "width": 64,
                                                          "height": 64, **kw}))
    return np.asarray(result.images[0].image, dtype=np.int16), result


def test_the_same_prompt_in_every_region_is_the_plain_picture_and_other_prompts_change_their_side(studio):
    plain, _ = pixels(studio, "a red circle")
    assert np.array_equal(pixels(studio, "a red circle ADDCOL a red circle")[0], plain)
    assert np.array_equal(pixels(studio, "a red circle ADDROW a red circle ADDCOL a red circle",
                                 regions_ratio="1,1;1,1,2")[0], plain)
    right, result = pixels(studio, "a red circle ADDCOL a blue square on a green field")
    assert np.abs(right - plain).mean() > 0.5       # (where: the attention test below; the picture mixes it)
    assert "RP Ratios" not in result.images[0].parameters                     # all alike: nothing to say
    picture = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    base, _ = pixels(studio, "a red circle", "img2img", image=picture, strength=0.6)
    assert np.array_equal(pixels(studio, "a red circle ADDCOL a red circle", "img2img", image=picture,
                                 strength=0.6)[0], base)


def test_the_base_prompt_mixes_in_by_its_ratio_and_both_are_recorded(studio):
    regions, _ = pixels(studio, "a red circle ADDCOL a blue square", regions_ratio="1,2")
    none, _ = pixels(studio, "sky ADDBASE a red circle ADDCOL a blue square", regions_ratio="1,2", base_ratio=0)
    assert np.array_equal(none, regions)
    some, result = pixels(studio, "sky ADDBASE a red circle ADDCOL a blue square", regions_ratio="1,2",
                          base_ratio=0.5)
    assert np.abs(some - regions).mean() > 0.3
    text = result.images[0].parameters
    assert 'RP Ratios: "1,2"' in text and "RP Base Ratios: 0.5" in text
    assert result.images[0].data["request"]["regions_ratio"] == "1,2"


def test_prompt_editing_inside_regions_switches_at_its_step_like_the_plain_prompt(studio):
    """The same edited prompt in every region gives the plain edited picture bit for bit (so the
    switch happens at the same step), an edited region differs from both of its texts, and the
    record's schedule shows the regions of each step range joined by BREAK. (The tiny test model
    tells colours apart only faintly: the edited picture is neither fixed one, not far from both.)"""
    plain, _ = pixels(studio, "a [red:blue:0.5] circle")
    same, _ = pixels(studio, "a [red:blue:0.5] circle ADDCOL a [red:blue:0.5] circle")
    assert np.array_equal(same, plain)
    edited, result = pixels(studio, "a [red:blue:0.5] circle ADDCOL a square")
    for fixed in ("a red circle ADDCOL a square", "a blue circle ADDCOL a square"):
        assert not np.array_equal(edited, pixels(studio, fixed)[0])
    schedule = result.images[0].data["parsed"]["schedule"]
    assert [row[1] for row in schedule] == ["a red circle BREAK a square", "a blue circle BREAK a square"]


def test_what_regions_do_not_combine_with_yet_is_refused_with_a_message(studio):
    with pytest.raises(InvalidRequest, match="prompt variants that differ within a batch"):
        pixels(studio, "a {red|blue} circle ADDCOL a square", variants="all", batch_size=2)
    with pytest.raises(InvalidRequest, match="has 3 numbers"):
        pixels(studio, "a ADDCOL b", regions_ratio="1,1,1")


# -- Regional Prompter's REST form ---------------------------------------------------------------

def rp(*args):
    """Regional Prompter's positional arguments as its clients send them (the first 13 of its UI's)."""
    return {"Regional Prompter": {"args": list(args)}}


RP_ON = [True, False, "Matrix", "Columns", "Mask", "Prompt", "1,1", "0.2", False, False, False, "Attention", False]


@pytest.mark.parametrize("prompt, changes, want", [
    ("a red circle BREAK a blue square", {}, ("a red circle ADDCOL a blue square", "1,1")),
    ("a red circle AND a blue square", {}, ("a red circle ADDCOL a blue square", "1,1")),
    ("top BREAK bottom", {3: "Rows", 6: "1,3"}, ("top ADDROW bottom", "1,3")),
    ("top BREAK bottom", {3: "Vertical"}, ("top ADDROW bottom", "1,1")),
    ("garden BREAK a BREAK b BREAK c", {9: True, 6: "1,1,3;1,1"}, ("garden ADDCOMM a ADDCOL b ADDROW c", "1,1,3;1,1")),
    ("garden BREAK sky BREAK a BREAK b", {8: True, 9: True}, ("garden ADDCOMM sky ADDBASE a ADDCOL b", "1,1")),
    ("a ADDCOL b", {}, ("a ADDCOL b", "1,1")),                          # its own keywords, as they are
    ("one prompt", {}, ("one prompt", None)),                           # no region asked for: plain
    ("a BREAK b", {0: False}, ("a BREAK b", None)),                     # not active
])
def test_regional_prompters_arguments_become_the_studios_regions(prompt, changes, want):
    from studio.api.regions import fields
    from studio.api.schema import Txt2ImgBody
    args = [changes.get(i, v) for i, v in enumerate(RP_ON)]
    got = fields(Txt2ImgBody(prompt=prompt, alwayson_scripts=rp(*args)))
    assert (got.get("prompt", prompt), got.get("regions_ratio")) == want


@pytest.mark.parametrize("changes, message", [
    ({2: "Mask"}, "Mask mode is not available here: send the painting as `regions_mask`"),
    ({2: "Prompt"}, "Prompt mode is not available"),
    ({11: "Latent"}, "Latent calculation is not available"),
    ({3: "Diagonal"}, "Columns or Rows"),
    ({3: "Rows", 6: "1,1;1,1"}, "Rows mode with a ';' ratio"),
    ({7: "0.2,0.5"}, "one ratio for every region"),
])
def test_what_regional_prompter_does_and_the_studio_does_not_is_a_4xx_that_says_so(studio, changes, message):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient
    from studio.api.routes import api_routes
    rest = TestClient(FastAPI(routes=api_routes(studio, [])))
    args = [changes.get(i, v) for i, v in enumerate(RP_ON)]
    answer = rest.post("/sdapi/v1/txt2img", json={"prompt": "a BREAK b", "steps": 2, "width": 64, "height": 64,
                                                  "alwayson_scripts": rp(*args)})
    assert answer.status_code == 400 and message in answer.json()["detail"], answer.text


def test_a_rest_call_with_regional_prompter_draws_the_picture_of_its_keywords(studio):
    import base64
    import io
    from fastapi import FastAPI
    from fastapi.testclient import TestClient
    from PIL import Image
    from studio.api.routes import api_routes
    rest = TestClient(FastAPI(routes=api_routes(studio, [])))
    body = {"seed": 3, "steps": 4, "width": 64, "height": 64}
    answer = rest.post("/sdapi/v1/txt2img", json={**body, "prompt": "sky BREAK a red circle BREAK a blue square",
                                                  "alwayson_scripts": rp(*RP_ON[:6], "1,2", "0.3", True)})
    assert answer.status_code == 200, answer.text
    keywords = rest.post("/sdapi/v1/txt2img", json={**body, "prompt": "sky ADDBASE a red circle ADDCOL a blue square",
                                                    "regions_ratio": "1,2", "base_ratio": 0.3})
    got, want = (np.asarray(Image.open(io.BytesIO(base64.b64decode(a.json()["images"][0])))) for a in (answer, keywords))
    assert np.array_equal(got, want)
    plain = rest.post("/sdapi/v1/txt2img", json={**body, "prompt": "sky, a red circle, a blue square"})
    assert not np.array_equal(got, np.asarray(Image.open(io.BytesIO(base64.b64decode(plain.json()["images"][0])))))
    info = answer.json()["info"]
    assert "RP Ratios" in info and "RP Base Ratios: 0.3" in info
    assert "regional prompter" in rest.get("/sdapi/v1/scripts").json()["txt2img"]


# -- painted regions -------------------------------------------------------------------------------

def painting(side=64, **areas):
    """A black canvas with rectangles painted in region colours: colour=(x0, y0, x1, y1)."""
    from studio.requests.parsers import REGION_COLOURS
    rgb = dict(REGION_COLOURS)
    canvas = np.zeros((side, side, 3), np.uint8)
    for colour, (x0, y0, x1, y1) in areas.items():
        canvas[y0:y1, x0:x1] = rgb[colour]
    return canvas


def test_a_painting_becomes_region_labels_and_its_masks_share_each_position_out():
    from studio.fields import Context
    from studio.requests.parsers import regions_mask
    canvas = painting(red=(0, 0, 32, 64), green=(40, 8, 60, 30))
    canvas[0, 0] = (230, 20, 30)                                  # a brush's soft edge: the nearest colour
    labels = regions_mask("Painted regions", {"composite": canvas}, Context())
    assert labels[5, 5] == 1 and labels[10, 50] == 2 and labels[50, 50] == 0 and labels[0, 0] == 1
    assert regions_mask("Painted regions", np.zeros((64, 64, 3), np.uint8), Context()) is None   # nothing painted
    regions = read_regions("field ADDCOL a red circle ADDCOL a cyan square", "", 0.2, labels)
    assert regions.prompts == ("field", "a red circle", "a cyan square") and regions.boxes == ()
    for positions, (h, w) in ((64, (8, 8)), (16, (4, 4)), (4, (2, 2))):
        m = masks(regions, positions, 8, 8).reshape(3, h, w)
        assert np.allclose(m.sum(0).numpy(), 1.0)
    m = masks(regions, 64, 8, 8).reshape(3, 8, 8)
    assert m[1, :, :4].min() == 1 and m[0, 4:, 4:].min() == 1 and 0 < m[2, 1, 5] <= 1


@pytest.mark.parametrize("prompt, ratio, areas, message", [
    ("field ADDCOL a", "", {"red": (0, 0, 8, 8), "green": (8, 8, 16, 16)}, "no prompt for green"),
    ("field ADDCOL a ADDCOL b", "", {"red": (0, 0, 8, 8)}, "for green: nothing is painted"),
    ("field ADDCOL a", "1,2", {"red": (0, 0, 8, 8)}, "leave the divide ratio empty"),
])
def test_paint_and_prompt_that_do_not_match_are_explained(prompt, ratio, areas, message):
    from studio.fields import Context
    from studio.requests.parsers import regions_mask
    with pytest.raises(InvalidRequest, match=message):
        read_regions(prompt, ratio, 0.2, regions_mask("p", painting(**areas), Context()))


def test_painted_regions_act_as_the_same_boxes_would_and_need_region_prompts(studio):
    left = painting(red=(0, 0, 32, 64))
    painted, result = pixels(studio, "a blue square ADDCOL a red circle", regions_mask=left)
    boxes, _ = pixels(studio, "a red circle ADDCOL a blue square")
    assert np.array_equal(painted, boxes)
    # the saved picture keeps the painting (a small PNG); PNG Info puts it back on the painter's canvas
    from studio.fields import Context
    from studio.outputs.pnginfo import read_info
    from studio.requests.parsers import regions_mask
    from studio.ui.pnginfo import ui_value
    from PIL import Image
    restored = read_info(Image.open(result.images[0].path)).fields["regions_mask"]
    assert isinstance(restored, str) and len(restored) < 1000
    labels = regions_mask("Painted regions", ui_value("regions_mask", restored), Context())
    assert np.array_equal(labels, regions_mask("Painted regions", left, Context()))
    plain, _ = pixels(studio, "a red circle")
    assert np.array_equal(pixels(studio, "a red circle ADDCOL a red circle", regions_mask=left)[0], plain)
    with pytest.raises(InvalidRequest, match="Regions are painted but the prompt has none"):
        pixels(studio, "a red circle", regions_mask=left)


def test_rest_takes_painted_regions_as_a_base64_picture(studio):
    import base64
    import io
    from fastapi import FastAPI
    from fastapi.testclient import TestClient
    from PIL import Image
    from studio.api.routes import api_routes
    rest = TestClient(FastAPI(routes=api_routes(studio, [])))
    buffer = io.BytesIO()
    Image.fromarray(painting(red=(0, 0, 32, 64))).save(buffer, format="PNG")
    body = {"seed": 3, "steps": 4, "width": 64, "height": 64}
    painted = rest.post("/sdapi/v1/txt2img", json={**body, "prompt": "a blue square ADDCOL a red circle",
                                                   "regions_mask": base64.b64encode(buffer.getvalue()).decode()})
    boxes = rest.post("/sdapi/v1/txt2img", json={**body, "prompt": "a red circle ADDCOL a blue square"})
    assert painted.status_code == 200, painted.text
    got, want = (np.asarray(Image.open(io.BytesIO(base64.b64decode(a.json()["images"][0])))) for a in (painted, boxes))
    assert np.array_equal(got, want)
    refused = rest.post("/sdapi/v1/txt2img", json={**body, "prompt": "a ADDCOL b", "regions_mask": "/etc/passwd"})
    assert refused.status_code == 400


def test_the_regions_evaluation_scores_halves_and_its_prompts_say_each_layout():
    from embedded.evaluate_regions import both_right, main, prompts
    from embedded.world import Obj, Scene, render
    a, b = Obj("circle", "orange", "large", "left"), Obj("square", "cyan", "large", "right")
    plain, regional, based = prompts(a, b, "black", "columns")
    assert plain == "an orange circle on the left and a cyan square on the right on a black background"
    assert regional.count("ADDCOL") == 1 and based == f"{plain} ADDBASE {regional}"
    assert "ADDROW" in prompts(a, b, "black", "rows")[1]
    drawn = np.asarray(render(Scene((a, b), "black")))
    assert both_right(drawn, a, b, "black", "columns")["both"]
    assert not both_right(drawn, b, a, "black", "columns")["both"]          # swapped sides do not count
    figures = main(["--n", "1"])
    assert set(figures["columns"]) == {"one prompt", "regions", "one prompt as the regions' base"}
