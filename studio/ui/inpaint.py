"""Inpainting tab: paint the mask on the image in the browser (the painted layer's alpha is the
mask), or upload a mask. The browser event is private; the API endpoint `inpaint` takes plain
`image` and `mask` files instead of the editor's layers."""

from __future__ import annotations

import gradio as gr
from PIL import Image, ImageChops

from studio.serving.studio import Studio
from studio.ui import live, outpaint
from studio.ui.form import Form
from studio.ui.jobs import dispatched, event_function, run_job
from studio.ui.widgets import ResultsPanel, prompt_controls, result_outputs, results_panel


def editor_to_image_and_mask(editor: dict | None, uploaded_mask) -> tuple:
    """The editor's background as the image; the union of its layers' alpha as the mask, unless
    a mask was uploaded (white = repaint)."""
    if not editor or editor.get("background") is None:
        raise gr.Error("Upload an image to inpaint first.")
    image = editor["background"]
    if uploaded_mask is not None:
        return image, uploaded_mask
    mask = Image.new("L", image.size, 0)
    for layer in editor.get("layers") or []:
        if layer is None:
            continue
        alpha = layer.convert("RGBA").getchannel("A")
        if alpha.size != image.size:
            alpha = alpha.resize(image.size, Image.NEAREST)
        mask = ImageChops.lighter(mask, alpha)
    return image, mask


DOC = ("Repaint the masked part of `image` (mask: white or opaque = repaint). Unmasked pixels come back "
       "exactly as they were.")


def build(studio: Studio, native: int) -> tuple[ResultsPanel, gr.ImageEditor, Form]:
    """The tab; returns its results panel, editor and form (request field -> control map)."""
    form = Form.of("inpaint", studio)
    with gr.Row():
        with gr.Column(scale=1):
            editor = gr.ImageEditor(
                label="Image — paint over what to repaint", type="pil", image_mode="RGBA",
                format="png", sources=["upload", "clipboard"], elem_id="inpaint-editor",
                brush=gr.Brush(colors=["#ffffff"], color_mode="fixed", default_size=24),
                eraser=gr.Eraser(default_size=24), height=420, layers=False)
            with gr.Accordion("Or upload a mask (white = repaint)", open=False):
                mask_upload = gr.Image(label="Mask", type="pil", image_mode=None, format="png",
                                       sources=["upload"], elem_id="inpaint-mask-upload")
            form.lay_out("input")
            generate, _ = prompt_controls(form, native=native, size_from_input=True)
            outpaint_panel = gr.Accordion("Outpaint: extend the canvas and paint the new strips", open=False,
                                          elem_id="outpaint-panel")
        with gr.Column(scale=1):
            live_panel = live.panel("inpaint")
            panel = results_panel("inpaint", form.controls["seed"])

    def inpaint(raw: dict, progress, request):
        yield from run_job(studio, "inpaint", raw, progress, request)

    def from_editor(raw: dict) -> dict:
        image, mask = editor_to_image_and_mask(raw.pop("editor"), raw.pop("uploaded_mask"))
        return {**raw, "image": image, "mask": mask}

    def inpaint_from_editor(raw: dict, progress, request):
        yield from inpaint(from_editor(raw), progress, request)

    shared, fields = form.inputs(), form.params()
    browser = ("editor", "uploaded_mask")
    form.click(generate)(event_function(inpaint_from_editor, form.params(*browser), DOC), [editor, mask_upload] + shared,
                         result_outputs(panel), api_visibility="private", **dispatched(studio))

    # The API endpoint: plain image and mask inputs (hidden in the page).
    with gr.Row(visible=False):
        api_image = gr.Image(type="pil", image_mode=None, format="png", elem_id="inpaint-api-image")
        api_mask = gr.Image(type="pil", image_mode=None, format="png", elem_id="inpaint-api-mask")
        api_button = gr.Button(elem_id="inpaint-api-button")
    api_button.click(event_function(inpaint, form.params("image", "mask"), DOC), [api_image, api_mask] + shared,
                     result_outputs(panel), api_name="inpaint", **dispatched(studio))
    live.wire(studio, "inpaint", live_panel, [editor, mask_upload] + shared, form.params(*browser),
              form.controls["seed"], generate, result_outputs(panel), adapt=from_editor)
    outpaint.build(studio, editor, api_image, [(f, c) for f, c in zip(fields, shared) if f[0] not in outpaint.UNUSED],
                   panel, outpaint_panel)
    return panel, editor, form
