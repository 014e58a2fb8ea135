"""Outpainting, under the inpainting controls (API: `/outpaint`): the picture in the editor (or
the API's `image`) on a bigger canvas, the new strips painted with the tab's prompt and settings."""

from __future__ import annotations

import inspect
from typing import Any

import gradio as gr

from studio.errors import StudioError
from studio.outpaint.canvas import BAND_RANGE, FILLS, MAX_EXTEND, outpaint_request, read_extend
from studio.serving.studio import Studio
from studio.ui.jobs import dispatched, event_function, raw_fields, run_request
from studio.ui.widgets import ResultsPanel, result_outputs

UNUSED = ("width", "height", "mask_blur", "only_masked", "only_masked_padding")   # set by the canvas
SIDES = ("left", "right", "up", "down")


def build(studio: Studio, editor: gr.ImageEditor, api_image: gr.Image, fields: list[tuple[tuple[str, Any], Any]],
          panel: ResultsPanel, accordion: gr.Accordion) -> None:
    """`fields`: ((request field, API default), control) of the tab's settings outpainting uses."""
    with accordion:
        with gr.Row():
            sides = [gr.Slider(0, MAX_EXTEND, value=64 if side == "right" else 0, step=8, label=f"{side.title()} (px)",
                               elem_id=f"outpaint-{side}") for side in SIDES]
        with gr.Row():
            fill = gr.Radio(list(FILLS), value="edge", label="Fill the new strips with",
                            info="edge: the border's colours; mirror: the picture reflected; noise: around the edge",
                            elem_id="outpaint-fill")
            band = gr.Slider(*BAND_RANGE, value=16, step=1, label="Blend band (px into the picture)",
                             elem_id="outpaint-band")
        run = gr.Button("Outpaint", variant="primary", elem_id="outpaint-run")

    def outpaint(raw: dict, progress, request):
        image = raw.pop("image")
        if isinstance(image, dict):                 # the editor's value: its background picture
            image = image.get("background")
        if image is None:
            raise gr.Error("Upload a picture to outpaint first.")
        try:
            ext = read_extend(*(raw.pop(side) for side in SIDES), raw.pop("fill"), raw.pop("band"))
            built = outpaint_request(studio, raw_fields(studio, {**raw, "image": image}), ext)
        except StudioError as exc:
            raise gr.Error(str(exc)) from None
        yield from run_request(studio, built, progress, request)

    own = [(side, 64 if side == "right" else 0) for side in SIDES] + [("fill", "edge"), ("band", 16)]
    params = [("image", inspect.Parameter.empty)] + [f for f, _ in fields] + own
    controls = [c for _, c in fields] + sides + [fill, band]
    doc = ("Outpaint: `image` on a canvas bigger by left/right/up/down pixels, the new strips filled "
           "(edge, mirror, noise) and painted with the prompt; the picture's pixels stay as they were "
           "outside the blend band.")
    run.click(event_function(outpaint, params, doc), [editor] + controls, result_outputs(panel),
              api_visibility="private", **dispatched(studio))
    with gr.Row(visible=False):
        api_run = gr.Button(elem_id="outpaint-api-button")
    api_run.click(event_function(outpaint, params, doc), [api_image] + controls, result_outputs(panel),
                  api_name="outpaint", **dispatched(studio))
