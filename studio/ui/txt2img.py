"""Text-to-image tab. API: api_name `txt2img`, its parameters the request's fields that the tab
shows, then the hires fix's (studio/requests/request.py, hires.py), in the tables' order."""

from __future__ import annotations

import gradio as gr

from studio.errors import StudioError
from studio.inputs import load_image
from studio.outputs.pnginfo import read_info
from studio.serving.studio import Studio
from studio.ui import live, plots
from studio.ui.pnginfo import offered, ui_value
from studio.requests.tools import without_tools
from studio.ui.form import Form
from studio.ui.jobs import dispatched, event_function, run_job, run_tool_job
from studio.upscale import txt2img_tool
from studio.ui.widgets import ResultsPanel, model_examples, prompt_controls, result_outputs, results_panel


MORE_LIKE_THIS_STRENGTH = 0.2     # close to the picture, yet each one visibly its own
MORE_LIKE_THIS_COUNT = 4
DOC = ("Generate images from a prompt. Returns the saved PNGs, their A1111 parameters, the full JSON "
       "metadata and the seed used. With `hires`, each picture is upscaled by `hires_scale` and drawn again "
       "(img2img, `hires_steps`, `hires_strength`): the finished pictures come first, then the first passes.")


def build(studio: Studio, native: int) -> tuple[ResultsPanel, Form]:
    """The tab; returns its results panel and its form (request field -> control map)."""
    form = Form.of("txt2img", studio)
    with gr.Row():
        with gr.Column(scale=1):
            generate, _ = prompt_controls(form, native=native, size_from_input=False)
            examples = model_examples(studio)
            if examples:
                gr.Examples([[e] for e in examples], inputs=[form.controls["prompt"]],
                            label="Prompts this model knows", elem_id="txt2img-examples")
        with gr.Column(scale=1):
            live_panel = live.panel("txt2img")
            panel = results_panel("txt2img", form.controls["seed"])
            more = gr.Button("🎲 More like this: variations of the selected picture", elem_id="txt2img-more-like-this")

    def txt2img(raw: dict, progress, request):
        try:
            tool = txt2img_tool(studio, raw)
        except StudioError as exc:
            raise gr.Error(str(exc)) from None
        if tool is not None:
            yield from run_tool_job(studio, tool, raw, progress, request)
        else:
            yield from run_job(studio, "txt2img", without_tools(raw), progress, request)

    inputs, params = form.inputs(), form.params()
    event = event_function(txt2img, params, DOC)
    form.click(generate)(event, inputs, result_outputs(panel), api_name="txt2img", **dispatched(studio))
    live.wire(studio, "txt2img", live_panel, inputs, params, form.controls["seed"], generate,
              result_outputs(panel), api="live")
    plots.build(studio, inputs, params, panel)
    controls = form.controls
    names = [n for n in controls if n not in ("seed", "variation_seed", "variation_strength", "batch_count")]
    c = form.controls

    def more_like_this(paths, selected):
        """The selected picture's settings, its seed, a random variation seed, a batch of four."""
        if not paths:
            raise gr.Error("Generate a picture first.")
        try:
            fields = read_info(load_image("Picture", paths[selected if 0 <= selected < len(paths) else 0],
                                          mode="keep")).fields
        except StudioError as exc:
            raise gr.Error(str(exc)) from None
        seed = fields.get("seed", -1)
        if fields.get("variation_strength", 0) > 0.5:      # the picture is mostly its variation seed's
            seed = fields.get("variation_seed", seed)
        values = [offered(controls[n], ui_value(n, fields[n])) if n in fields else gr.skip() for n in names]
        return [*values, seed, -1, MORE_LIKE_THIS_STRENGTH, MORE_LIKE_THIS_COUNT]

    more.click(more_like_this, [panel.paths, panel.selected],
               [*(controls[n] for n in names), c["seed"], c["variation_seed"], c["variation_strength"],
                c["batch_count"]], api_visibility="private", queue=False).success(
        event, inputs, result_outputs(panel), api_visibility="private", **dispatched(studio))
    return panel, form
