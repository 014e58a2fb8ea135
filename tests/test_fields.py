"""One declaration per field (studio/requests/request.py, requests/hires.py): every surface is
built from the table, so a field declared there is in its tabs, their API endpoints, the REST
bodies, the X/Y/Z axes, the infotext and PNG Info, and its check, with nothing else edited."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from studio.config import Settings
from studio.fields import Custom, Number
from studio.requests import make_request, request_fields
from studio.requests.hires import hires_fields

TABS = ("txt2img", "img2img", "inpaint")
PICTURES = {"txt2img": [], "img2img": ["image"], "inpaint": ["image", "mask"]}


@pytest.fixture(scope="module")
def built():
    from studio.serving.studio import Studio
    from studio.ui import build_ui
    studio = Studio.from_settings(Settings(outputs=Path(tempfile.mkdtemp())))
    demo = build_ui(studio)
    api = {name: [p["parameter_name"] for p in ep["parameters"]]
           for name, ep in demo.get_api_info()["named_endpoints"].items()}
    ids = {str(getattr(block, "elem_id", "")) for block in demo.blocks.values()}
    return studio, api, ids


def _tab_fields(tab: str):
    from studio.ui.form import TOOLS
    return [f for f in (*request_fields(), *(TOOLS[tab]() if tab in TOOLS else ())) if f.shown_in(tab)]


@pytest.mark.parametrize("tab", TABS)
def test_every_field_a_tab_shows_has_its_control_and_is_its_endpoints_parameter_in_table_order(built, tab):
    studio, api, ids = built
    fields = _tab_fields(tab)
    assert fields
    for f in fields:
        assert f"{tab}-{f.elem_id}" in ids, f"{f.name}: no control on the {tab} tab"
    names = PICTURES[tab] + [f.name for f in fields]
    assert api[f"/{tab}"] == names
    plot = {"txt2img": "/xyz_plot", "img2img": "/xyz_plot_img2img"}.get(tab)
    if plot:          # the plot takes the tab's fields, then its axes
        assert api[plot] == names + [f"{a}_{part}" for a in "xyz" for part in ("type", "values")]


def test_every_axis_field_is_an_axis_of_the_plot():
    from studio.plots.axes import AXIS_TYPES
    declared = [f.axis_name for f in (*request_fields(), *hires_fields()) if f.axis]
    assert declared and all(name in AXIS_TYPES for name in declared)


def test_every_rest_name_is_in_the_bodies_of_its_modes():
    from studio.api.schema import Img2ImgBody, Txt2ImgBody
    for f in request_fields():
        if f.rest:
            for mode, body in (("txt2img", Txt2ImgBody), ("img2img", Img2ImgBody), ("inpaint", Img2ImgBody)):
                if mode in f.modes:
                    assert f.rest in body.model_fields, (f.name, mode)


def _other_value(f):
    """A value of `f` that is not its default, in range."""
    kind = f.kind
    if isinstance(kind, Number):
        value = kind.high if f.default != kind.high else kind.low
        return int(value) if kind.integer else value
    from studio.fields import Choice, Flag
    if isinstance(kind, Flag):
        return not f.default
    if isinstance(kind, Choice) and kind.options:
        return next(v for v in kind.values() if v != f.default)
    return None


def test_every_infotext_key_written_is_read_back_by_png_info():
    """A field written into the parameters line at a value that is not its default comes back as
    that value from the same text (PNG Info's reader)."""
    from studio.outputs.metadata import format_parameters
    from studio.outputs.pnginfo import read_info
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo
    import io
    checked = 0
    for f in request_fields():
        it = f.infotext
        if it is None or not it.write or isinstance(f.kind, Custom):
            continue
        value = "1,2" if f.name == "regions_ratio" else _other_value(f)
        if value is None:
            continue
        mode = "inpaint" if "txt2img" not in f.modes else "txt2img"
        raw = {f.name: value, "only_masked": True} if mode == "inpaint" else {f.name: value}
        if f.name in ("regions_ratio", "base_ratio"):        # written for a prompt with regions (and a base)
            raw["prompt"] = "sky ADDBASE a ADDCOL b"
        if f.name == "variation_strength":
            raw["variation_seed"] = 5
        request = make_request(mode=mode, image=Image.new("RGB", (64, 64)), mask=Image.new("L", (64, 64), 255),
                               **raw) if mode == "inpaint" else make_request(mode=mode, **raw)
        written = f.written(request)
        assert written is not None, f.name
        info = PngInfo()
        info.add_text("parameters", format_parameters("p", "", {it.key: written}))
        buffer = io.BytesIO()
        Image.new("RGB", (8, 8)).save(buffer, "PNG", pnginfo=info)
        read = read_info(Image.open(io.BytesIO(buffer.getvalue()))).fields
        assert read.get(f.name) == value, (f.name, written, read)
        checked += 1
    assert checked >= 8


def test_a_field_checks_its_own_values_by_its_declaration():
    """Above its range, every number field is refused with a message that names it."""
    from PIL import Image
    from studio.errors import InvalidRequest
    pictures = {"image": Image.new("RGB", (64, 64)), "mask": Image.new("L", (64, 64), 255)}
    checked = 0
    for f in request_fields():
        if isinstance(f.kind, Number):
            mode = "txt2img" if "txt2img" in f.modes else f.modes[-1]
            with pytest.raises(InvalidRequest, match=f.label):
                make_request(mode=mode, **{f.name: f.kind.high + 8}, **({} if mode == "txt2img" else pictures))
            checked += 1
    assert checked >= 12
