"""Inpainting tab: paint the mask on the image in the browser (the painted layer's alpha is the
mask), or upload a mask. The browser event is private; the API endpoint `inpaint` takes plain
`image` and `mask` files instead of the editor's layers."""

from __future__ import annotations

import inspect

import gradio as gr
from PIL import Image, ImageChops

from studio.serving.studio import Studio
from studio.ui import live, outpaint
from studio.ui.jobs import dispatched, run_job
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


def build(studio: Studio, native: int) -> tuple[ResultsPanel, gr.ImageEditor, dict]:
    """The tab; returns its results panel, editor and request field -> control map."""
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
            with gr.Row():
                strength = gr.Slider(0.0, 1.0, value=0.75, step=0.01, label="Strength (denoising)",
                                     elem_id="inpaint-strength")
                mask_blur = gr.Slider(0, 64, value=4, step=1, label="Mask blur",
                                      elem_id="inpaint-mask-blur")
            with gr.Row():
                only_masked = gr.Checkbox(False, label="Only masked (crop around the mask, paste back)",
                                          elem_id="inpaint-only-masked")
                padding = gr.Slider(0, 256, value=32, step=4, label="Only-masked padding (px)",
                                    elem_id="inpaint-padding")
            c = prompt_controls("inpaint", studio, native=native, size_from_input=True)
            outpaint_panel = gr.Accordion("Outpaint: extend the canvas and paint the new strips", open=False,
                                          elem_id="outpaint-panel")
        with gr.Column(scale=1):
            live_panel = live.panel("inpaint")
            panel = results_panel("inpaint", c.seed)

    def inpaint(image, mask, prompt, negative_prompt, negative_presets, style, scheduler, steps,
                cfg_scale, width, height, seed, batch_count, batch_size, strength, mask_blur,
                only_masked, only_masked_padding, loras=None, vae=None, clip_skip=1, variants="random",
                references=None, reference_strength=0.5,
                reference_method="reference-only", feature_cache=0,
                progress=gr.Progress(), request: gr.Request = None):
        """Repaint the masked part of `image` (mask: white or opaque = repaint). Unmasked pixels
        come back exactly as they were."""
        yield from run_job(studio, "inpaint", dict(
            image=image, mask=mask, prompt=prompt, negative_prompt=negative_prompt,
            negative_presets=negative_presets, style=style, scheduler=scheduler, steps=steps,
            cfg_scale=cfg_scale, width=width, height=height, seed=seed, batch_count=batch_count,
            batch_size=batch_size, strength=strength, mask_blur=mask_blur, only_masked=only_masked,
            only_masked_padding=only_masked_padding, loras=loras, vae=vae, clip_skip=clip_skip, variants=variants,
            references=references, reference_strength=reference_strength,
            reference_method=reference_method, feature_cache=feature_cache),
            progress, request)

    def inpaint_from_editor(editor_value, uploaded_mask, *rest, progress=gr.Progress(),
                            request: gr.Request = None):
        image, mask = editor_to_image_and_mask(editor_value, uploaded_mask)
        yield from inpaint(image, mask, *rest, progress=progress, request=request)

    shared = [c.prompt, c.negative_prompt, c.negative_presets, c.style, c.scheduler, c.steps,
              c.cfg_scale, c.width, c.height, c.seed, c.batch_count, c.batch_size, strength,
              mask_blur, only_masked, padding, *c.addons()]
    c.generate.click(inpaint_from_editor, [editor, mask_upload] + shared, result_outputs(panel),
                     api_visibility="private", **dispatched(studio))

    # The API endpoint: plain image and mask inputs (hidden in the page).
    with gr.Row(visible=False):
        api_image = gr.Image(type="pil", image_mode=None, format="png", elem_id="inpaint-api-image")
        api_mask = gr.Image(type="pil", image_mode=None, format="png", elem_id="inpaint-api-mask")
        api_button = gr.Button(elem_id="inpaint-api-button")
    api_button.click(inpaint, [api_image, api_mask] + shared, result_outputs(panel),
                     api_name="inpaint", **dispatched(studio))
    fields = [(p.name, p.default) for p in list(inspect.signature(inpaint).parameters.values())[2:2 + len(shared)]]

    def from_editor(raw: dict) -> dict:
        image, mask = editor_to_image_and_mask(raw.pop("editor"), raw.pop("uploaded_mask"))
        return {**raw, "image": image, "mask": mask}

    live.wire(studio, "inpaint", live_panel, [editor, mask_upload] + shared,
              ["editor", "uploaded_mask", *(name for name, _ in fields)], c.seed, c.generate,
              result_outputs(panel), adapt=from_editor)
    outpaint.build(studio, editor, api_image, [(f, c) for f, c in zip(fields, shared) if f[0] not in outpaint.UNUSED],
                   panel, outpaint_panel)
    return panel, editor, {**c.fields(), "strength": strength, "mask_blur": mask_blur,
                           "only_masked": only_masked, "only_masked_padding": padding}
