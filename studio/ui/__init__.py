"""The Gradio Blocks app: the tabs over one Studio. Builds widgets and wires events only; a tab's
request controls are built from the field tables (form.py)."""

from __future__ import annotations

import gradio as gr

from studio.errors import StudioError
from studio.finetune.jobs import TrainingJobs
from studio.serving.studio import Studio
from studio.ui import animation, extras, fewstep, finetune, history, img2img, inpaint, model_bar, pnginfo, txt2img
from studio.ui.widgets import ResultsPanel, prompt_hint

TITLE = "Stable Diffusion Studio"


def build_ui(studio: Studio, training: TrainingJobs | None = None) -> gr.Blocks:
    """The tabs over `studio`; the Train tab over `training` (None: training is not set up)."""
    try:
        native = studio.model_info().native_size
    except StudioError:
        native = 512
    with gr.Blocks(title=TITLE) as demo:
        gr.Markdown(f"## {TITLE}")
        switched = model_bar.build(studio)
        with gr.Tabs(elem_id="tabs") as tabs:
            with gr.Tab("Text to image", id="txt2img", elem_id="tab-txt2img"):
                t2i, t2i_form = txt2img.build(studio, native)
            with gr.Tab("Image to image", id="img2img", elem_id="tab-img2img"):
                i2i, i2i_image, i2i_form = img2img.build(studio, native)
            with gr.Tab("Inpainting", id="inpaint", elem_id="tab-inpaint"):
                inp, editor, inp_form = inpaint.build(studio, native)
            with gr.Tab("Animation", id="animation", elem_id="tab-animation"):
                animation.build(studio)
            with gr.Tab("Train", id="train", elem_id="tab-train"):
                try_it, attach_jobs, train_jobs = finetune.build(studio, training)
            with gr.Tab("Extras", id="extras", elem_id="tab-extras"):
                extras.build(studio)
            with gr.Tab("PNG Info", id="pnginfo", elem_id="tab-pnginfo"):
                picture, picture_fields, send = pnginfo.build()
            with gr.Tab("History", id="history", elem_id="tab-history") as history_tab:
                show_history, history_outputs, to_pnginfo, history_paths, history_selected = history.build(studio)
        history_tab.select(show_history, None, history_outputs, **history.IN_ORDER)
        to_pnginfo.click(lambda p, s: (_pick(p, s), gr.Tabs(selected="pnginfo")), [history_paths, history_selected],
                         [picture, tabs], api_visibility="private", queue=False)
        for panel in (t2i, i2i, inp):
            _wire_send(panel, tabs, i2i_image, editor)
        pnginfo.wire(send, picture_fields, picture, tabs, {
            "txt2img": (t2i_form, None, None), "img2img": (i2i_form, i2i_image, lambda path: path),
            "inpaint": (inp_form, editor, _editor_value)})
        # what the model knows, next to each tab's prompt, follows a model switch
        hints = [b for b in demo.blocks.values() if str(getattr(b, "elem_id", "")).endswith("-prompt-hint")]
        switched.then(lambda: [prompt_hint(studio)] * len(hints), None, hints, api_visibility="private",
                      queue=False)
        fewstep.wire(demo, switched, studio, [f.controls for f in (t2i_form, i2i_form, inp_form)])
        demo.load(attach_jobs, None, train_jobs, api_visibility="private", queue=False)

        def try_it_in_txt2img(job_id, request: gr.Request):
            return finetune.try_prompt(training, job_id, finetune.owner(request)), gr.Tabs(selected="txt2img")

        try_it.click(try_it_in_txt2img, train_jobs[0], [t2i_form.controls["prompt"], tabs], api_visibility="private",
                     queue=False)
    return demo


def _pick(paths: list[str], selected: int) -> str:
    if not paths:
        raise gr.Error("Generate an image first.")
    return paths[selected if 0 <= selected < len(paths) else 0]


def _wire_send(panel: ResultsPanel, tabs: gr.Tabs, i2i_image: gr.Image, editor: gr.ImageEditor):
    panel.to_img2img.click(lambda p, s: (_pick(p, s), gr.Tabs(selected="img2img")),
                           [panel.paths, panel.selected], [i2i_image, tabs],
                           api_visibility="private", queue=False)
    panel.to_inpaint.click(lambda p, s: (_editor_value(_pick(p, s)), gr.Tabs(selected="inpaint")),
                           [panel.paths, panel.selected], [editor, tabs],
                           api_visibility="private", queue=False)


def _editor_value(path: str) -> dict:
    return {"background": path, "layers": [], "composite": path}
