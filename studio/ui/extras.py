"""The Extras tab: upscale any picture and restore its faces (API: `/upscale`). The result is saved
with the source's parameters kept and A1111's Postprocess keys added."""

from __future__ import annotations

import gradio as gr

from studio.errors import StudioError
from studio.serving.studio import Studio
from studio.ui.jobs import dispatched, who
from studio.upscale.extras import NONE, SCALE_RANGE, read_settings, upscale_picture
from studio.ui.form import upscaler_choices


def build(studio: Studio) -> gr.Image:
    """The tab; returns its picture input."""
    with gr.Row():
        with gr.Column(scale=1):
            picture = gr.Image(label="Picture", type="filepath", image_mode=None, sources=["upload", "clipboard"],
                               elem_id="extras-image", height=360)
            with gr.Row():
                upscaler = gr.Dropdown(upscaler_choices(studio), value="Lanczos", label="Upscaler",
                                       elem_id="extras-upscaler")
                scale = gr.Slider(*SCALE_RANGE, value=2.0, step=0.05, label="Upscale by", elem_id="extras-scale")
            with gr.Accordion("To a size instead, a second upscaler", open=False):
                with gr.Row():
                    width = gr.Number(0, precision=0, label="Width (0 = by the factor)", elem_id="extras-width")
                    height = gr.Number(0, precision=0, label="Height (0 = follow the width)", elem_id="extras-height")
                    crop = gr.Checkbox(False, label="Crop to fit", elem_id="extras-crop")
                with gr.Row():
                    second = gr.Dropdown([NONE, *upscaler_choices(studio)], value=NONE, label="Second upscaler",
                                         elem_id="extras-upscaler-2")
                    visibility = gr.Slider(0, 1, value=0, step=0.05, label="Its visibility",
                                           elem_id="extras-upscaler-2-visibility")
            with gr.Accordion("Restore faces", open=False, elem_id="extras-faces"):
                with gr.Row():
                    restorer = gr.Dropdown([NONE, *studio.names("face_restorers")], value=NONE,
                                           label="Face restorer (models/face_restorers)", elem_id="extras-face-restorer")
                    face_visibility = gr.Slider(0, 1, value=1, step=0.05, label="Visibility",
                                                elem_id="extras-face-visibility")
                    weight = gr.Slider(0, 1, value=0.5, step=0.05, label="CodeFormer weight (1 = most like the picture)",
                                       elem_id="extras-codeformer-weight")
            run = gr.Button("Upscale", variant="primary", elem_id="extras-run")
        with gr.Column(scale=1):
            result = gr.Image(label="Upscaled (saved)", type="filepath", format="png", interactive=False,
                              elem_id="extras-result", height=420)
            info = gr.Textbox(label="Parameters", lines=4, interactive=False, elem_id="extras-info")

    def upscale(image, upscaler="Lanczos", scale=2.0, width=0, height=0, crop=False, second=NONE,
                second_visibility=0.0, face_restorer=NONE, face_visibility=1.0, codeformer_weight=0.5,
                request: gr.Request = None):
        """Upscale a picture by `scale` (or to width x height) with an upscaler from /upscalers, then
        restore its faces with `face_restorer` (a file of models/face_restorers, or "None");
        returns the saved PNG and its parameters."""
        if not image:
            raise gr.Error("Add a picture first.")
        try:
            user, session = who(request)
            settings = read_settings(studio, upscaler, scale, width, height, crop, second, second_visibility,
                                     face_restorer, face_visibility, codeformer_weight)
            done = upscale_picture(studio, image, settings, user=user, session=session)
        except StudioError as exc:
            raise gr.Error(str(exc)) from None
        return str(done.path), "\n".join([done.parameters, *done.notes])

    for dropdown in (upscaler, second):
        dropdown.focus(lambda d=dropdown: gr.Dropdown(choices=([NONE] if d is second else [])
                                                      + upscaler_choices(studio, rescan=True)),
                       None, dropdown, api_visibility="private", queue=False)
    restorer.focus(lambda: gr.Dropdown(choices=[NONE, *studio.names("face_restorers", rescan=True)]),
                   None, restorer, api_visibility="private", queue=False)
    run.click(upscale, [picture, upscaler, scale, width, height, crop, second, visibility, restorer,
                        face_visibility, weight], [result, info], api_name="upscale", **dispatched(studio))
    return picture
