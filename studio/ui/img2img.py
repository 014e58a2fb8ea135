"""Image-to-image tab: an input image plus strength. API: api_name `img2img`, its parameters the
input `image`, then the request's fields that the tab shows (studio/requests/request.py)."""

from __future__ import annotations

import gradio as gr

from studio.serving.studio import Studio
from studio.ui import live, plots
from studio.ui.form import Form
from studio.requests.tools import without_tools
from studio.ui.jobs import dispatched, event_function, run_job, run_tool_job
from studio.upscale import img2img_tool
from studio.ui.widgets import ResultsPanel, prompt_controls, result_outputs, results_panel

DOC = "Repaint an input image guided by a prompt; `strength` 0 keeps it, 1 replaces it."


def build(studio: Studio, native: int) -> tuple[ResultsPanel, gr.Image, Form]:
    """The tab; returns its results panel, input image and form (request field -> control map)."""
    form = Form.of("img2img", studio)
    with gr.Row():
        with gr.Column(scale=1):
            image = gr.Image(label="Input image", type="pil", image_mode=None, format="png",
                             sources=["upload", "clipboard"], elem_id="img2img-image", height=320)
            form.lay_out("input")
            generate, _ = prompt_controls(form, native=native, size_from_input=True)
        with gr.Column(scale=1):
            live_panel = live.panel("img2img")
            panel = results_panel("img2img", form.controls["seed"])

    def img2img(raw: dict, progress, request):
        tool = img2img_tool(studio, raw)
        if tool is not None:
            yield from run_tool_job(studio, tool, raw, progress, request)
        else:
            yield from run_job(studio, "img2img", without_tools(raw), progress, request)

    inputs, params = form.inputs(image), form.params("image")
    form.click(generate)(event_function(img2img, params, DOC), inputs, result_outputs(panel), api_name="img2img",
                         **dispatched(studio))
    live.wire(studio, "img2img", live_panel, inputs, params, form.controls["seed"], generate, result_outputs(panel))
    plots.build(studio, inputs, params, panel, mode="img2img")
    return panel, image, form
