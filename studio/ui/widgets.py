"""Widgets every tab shares: the prompt controls and their add-ons, the results panel.

No torch or diffusers here; how a tab's event runs its job is studio/ui/jobs.py.
"""

from __future__ import annotations

from dataclasses import dataclass


import gradio as gr

from studio.errors import StudioError
from studio.serving.studio import Studio
from studio.ui.form import PROMPT_GROUPS, Form
from studio.ui.jobs import stop_job


@dataclass
class ResultsPanel:
    gallery: gr.Gallery
    info: gr.Textbox
    params: gr.JSON
    used_seed: gr.Number
    paths: gr.State
    selected: gr.State
    to_img2img: gr.Button
    to_inpaint: gr.Button


def prompt_controls(form: Form, *, native: int, size_from_input: bool) -> tuple[gr.Button, gr.Button]:
    """The prompt, presets, sampler, size, seed and add-on controls of `form`'s tab (laid out by
    its field table: studio/ui/form.py), the explainer, Generate and Stop; each control has the
    elem_id `<tab>-<field>`. Returns (Generate, Stop)."""
    tab, studio = form.tab, form.studio
    hint = " (0 = the input's size)" if size_from_input else ""
    for side, label in (("width", "Width"), ("height", "Height")):
        form.extra.setdefault(side, dict(minimum=0, value=0, label=label + hint) if size_from_input
                              else dict(value=native))
    form.after["prompt"] = lambda: gr.Markdown(prompt_hint(studio), elem_id=f"{tab}-prompt-hint")
    form.after["seed"] = lambda: _dice(tab, form)
    form.lay_out(*PROMPT_GROUPS)
    explain_controls(tab, studio, [form.controls[n] for n in EXPLAINED])
    with gr.Row():
        generate = gr.Button("Generate", variant="primary", elem_id=f"{tab}-generate")
        stop = gr.Button("Stop", variant="stop", elem_id=f"{tab}-stop")

    def stop_this_session(request: gr.Request) -> None:
        stop_job(studio, request)

    stop.click(stop_this_session, inputs=None, outputs=None, api_visibility="private", queue=False)
    return generate, stop


def _dice(tab: str, form: Form) -> None:
    """🎲 next to the seed: back to a random seed."""
    dice = gr.Button("🎲", elem_id=f"{tab}-random-seed", scale=0, min_width=40)
    dice.click(lambda: -1, None, form.controls["seed"], api_visibility="private", queue=False)


EXPLAINED = ("prompt", "negative_prompt", "negative_presets", "style", "steps", "clip_skip")


def explain_controls(tab: str, studio: Studio, inputs: list) -> None:
    """🔍 Explain prompt (API `/explain_prompt` from the txt2img tab): how the prompt is read."""
    with gr.Accordion("How the prompt is read", open=False, elem_id=f"{tab}-explain-panel"):
        explain_button = gr.Button("🔍 Explain prompt", elem_id=f"{tab}-explain", size="sm")
        explained = gr.JSON(label="chunks, weights, negatives moved, text per step",
                            elem_id=f"{tab}-explained")

    def explain_prompt(prompt, negative_prompt, negative_presets, style, steps, clip_skip=1):
        """How the studio reads a prompt: emphasis weights, 75-token chunks, BREAK, prompt
        editing per step, inline (-negatives) moved, <lora:> tags."""
        try:
            req = studio.make_request("txt2img", prompt=prompt, negative_prompt=negative_prompt,
                                      negative_presets=negative_presets, style=style, steps=steps,
                                      clip_skip=clip_skip)
            return studio.explain_prompt(req)
        except StudioError as exc:
            raise gr.Error(str(exc)) from None

    explain_button.click(explain_prompt, inputs, explained, concurrency_id="gpu", concurrency_limit=1,
                         **({"api_name": "explain_prompt"} if tab == "txt2img" else {"api_visibility": "private"}))


def results_panel(tab: str, seed_box: gr.Number) -> ResultsPanel:
    gallery = gr.Gallery(label="Results", format="png", columns=4, object_fit="contain",
                         height=420, interactive=False, elem_id=f"{tab}-gallery")
    with gr.Row():
        used_seed = gr.Number(label="Seed used", precision=0, interactive=False,
                              elem_id=f"{tab}-used-seed")
        reuse = gr.Button("♻ Reuse seed", elem_id=f"{tab}-reuse-seed")
        to_img2img = gr.Button("Send to img2img", elem_id=f"{tab}-send-img2img")
        to_inpaint = gr.Button("Send to inpaint", elem_id=f"{tab}-send-inpaint")
    info = gr.Textbox(label="Generation parameters", lines=4, interactive=False,
                      elem_id=f"{tab}-info")
    with gr.Accordion("Full parameters (JSON)", open=False):
        params = gr.JSON(label="parameters", elem_id=f"{tab}-params")
    paths = gr.State([])
    selected = gr.State(0)
    reuse.click(lambda s: s if s is not None else -1, used_seed, seed_box, api_visibility="private",
                queue=False)
    gallery.select(selected_index, None, selected, api_visibility="private", queue=False)
    return ResultsPanel(gallery, info, params, used_seed, paths, selected, to_img2img, to_inpaint)


def selected_index(evt: gr.SelectData) -> int:
    return int(evt.index) if isinstance(evt.index, int) else int(evt.index[0])


def result_outputs(panel: ResultsPanel) -> list:
    return [panel.gallery, panel.info, panel.params, panel.used_seed, panel.paths]


def model_examples(studio: Studio) -> tuple[str, ...]:
    try:
        return studio.model_info().examples
    except StudioError:
        return ()


def prompt_hint(studio: Studio) -> str:
    """What the loaded model understands, shown under the prompt when its folder says
    (vocabulary.txt: the embedded model); empty for a real model."""
    try:
        info = studio.model_info()
    except StudioError:
        return ""
    if not info.vocabulary:
        return ""
    return (f"<small>ℹ️ The {info.name} model knows only {info.knows} (for example: "
            f"{info.examples[0] if info.examples else 'a red circle on a blue background'}); other words "
            "are reported as unknown. Load a real model for anything else.</small>")
