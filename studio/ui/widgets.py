"""Widgets every tab shares: the prompt controls and their add-ons, the results panel.

No torch or diffusers here; how a tab's event runs its job is studio/ui/jobs.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from studio.errors import StudioError
from studio.requests import CFG_RANGE, STEPS_RANGE, make_request
from studio.samplers import DEFAULT_SCHEDULER, scheduler_names
from studio.serving.studio import Studio
from studio.ui.jobs import AUTOMATIC_VAE, NO_STYLE, lora_rows, stop_job
from studio.upscale.hires import DEFAULT_STRENGTH, LATENT, SCALE_RANGE
from studio.upscale.upscalers import BUILT_IN


@dataclass
class PromptControls:
    prompt: gr.Textbox
    negative_prompt: gr.Textbox
    negative_presets: gr.Dropdown
    style: gr.Dropdown
    scheduler: gr.Dropdown
    steps: gr.Slider
    cfg_scale: gr.Slider
    width: gr.Slider
    height: gr.Slider
    seed: gr.Number
    batch_count: gr.Slider
    batch_size: gr.Slider
    loras: gr.Dataframe
    vae: gr.Dropdown
    clip_skip: gr.Slider
    variants: gr.Radio
    references: gr.File
    reference_strength: gr.Slider
    reference_method: gr.Radio
    feature_cache: gr.Slider
    generate: gr.Button
    stop: gr.Button
    variation_seed: gr.Number | None = None         # text to image only: variation seed, hires fix
    variation_strength: gr.Slider | None = None
    hires: gr.Checkbox | None = None
    hires_scale: gr.Slider | None = None
    hires_steps: gr.Slider | None = None
    hires_strength: gr.Slider | None = None
    hires_upscaler: gr.Dropdown | None = None

    def fields(self) -> dict[str, Any]:
        """Request field name -> the control that sets it (what PNG Info fills in)."""
        names = ("prompt", "negative_prompt", "negative_presets", "style", "scheduler", "steps", "cfg_scale",
                 "width", "height", "seed", "batch_count", "batch_size", "loras", "vae", "clip_skip", "variants",
                 "reference_strength", "reference_method", "feature_cache", "variation_seed", "variation_strength",
                 "hires", "hires_scale", "hires_steps", "hires_strength", "hires_upscaler")
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}

    def addons(self) -> list:
        """The inputs every tab's event ends with (API: loras, vae, clip_skip, variants,
        references, reference_strength, reference_method, feature_cache)."""
        return [self.loras, self.vae, self.clip_skip, self.variants, self.references,
                self.reference_strength, self.reference_method, self.feature_cache]


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


def prompt_controls(tab: str, studio: Studio, *, native: int, size_from_input: bool,
                    txt2img: bool = False) -> PromptControls:
    """Prompt, presets, sampler and size controls, each with an elem_id `<tab>-<field>`; with
    `txt2img`, the variation seed and the hires fix under the seed."""
    presets = studio.presets
    lim = studio.limits
    prompt = gr.Textbox(label="Prompt", lines=3, elem_id=f"{tab}-prompt",
                        placeholder="a red circle on a blue background")
    gr.Markdown(prompt_hint(studio), elem_id=f"{tab}-prompt-hint")
    negative = gr.Textbox("", label="Negative prompt", lines=2, elem_id=f"{tab}-negative-prompt")
    with gr.Row():
        neg_presets = gr.Dropdown(presets.negative_names(), value=[], multiselect=True,
                                  label="Negative presets", elem_id=f"{tab}-negative-presets")
        style = gr.Dropdown([NO_STYLE] + presets.style_names(), value=NO_STYLE, label="Style",
                            elem_id=f"{tab}-style")
    with gr.Row():
        scheduler = gr.Dropdown(scheduler_names(), value=DEFAULT_SCHEDULER, label="Sampler",
                                elem_id=f"{tab}-scheduler")
        steps = gr.Slider(STEPS_RANGE[0], min(STEPS_RANGE[1], lim.max_steps), value=min(20, lim.max_steps),
                          step=1, label="Steps", elem_id=f"{tab}-steps")
        cfg = gr.Slider(*CFG_RANGE, value=7.0, step=0.5, label="CFG scale", elem_id=f"{tab}-cfg-scale")
    low = 0 if size_from_input else 64
    hint = " (0 = the input's size)" if size_from_input else ""
    with gr.Row():
        width = gr.Slider(low, lim.max_side, value=0 if size_from_input else native, step=8,
                          label="Width" + hint, elem_id=f"{tab}-width")
        height = gr.Slider(low, lim.max_side, value=0 if size_from_input else native, step=8,
                           label="Height" + hint, elem_id=f"{tab}-height")
    with gr.Row():
        seed = gr.Number(value=-1, precision=0, label="Seed (-1 = random)", elem_id=f"{tab}-seed")
        random_seed = gr.Button("🎲", elem_id=f"{tab}-random-seed", scale=0, min_width=40)
        batch_count = gr.Slider(1, lim.max_batch_count, value=1, step=1, label="Batch count",
                                elem_id=f"{tab}-batch-count")
        batch_size = gr.Slider(1, lim.max_batch_size, value=1, step=1, label="Batch size",
                               elem_id=f"{tab}-batch-size")
    random_seed.click(lambda: -1, None, seed, api_visibility="private", queue=False)
    variation_seed, variation_strength = variation_controls(tab) if txt2img else (None, None)
    hires = hires_controls(tab, studio) if txt2img else (None,) * 5
    loras, vae, clip_skip, feature_cache = addon_controls(tab, studio)
    variants = gr.Radio([("random per image", "random"), ("every combination", "all")], value="random",
                        label="Prompt variants: {red|blue} and __colors__ (presets/wildcards/colors.txt)",
                        elem_id=f"{tab}-variants")
    references, reference_strength, reference_method = reference_controls(tab)
    explain_controls(tab, studio, [prompt, negative, neg_presets, style, steps, clip_skip])
    with gr.Row():
        generate = gr.Button("Generate", variant="primary", elem_id=f"{tab}-generate")
        stop = gr.Button("Stop", variant="stop", elem_id=f"{tab}-stop")
    def stop_this_session(request: gr.Request) -> None:
        stop_job(studio, request)

    stop.click(stop_this_session, inputs=None, outputs=None, api_visibility="private", queue=False)
    return PromptControls(prompt, negative, neg_presets, style, scheduler, steps, cfg, width, height,
                          seed, batch_count, batch_size, loras, vae, clip_skip, variants, references,
                          reference_strength, reference_method, feature_cache, generate, stop,
                          variation_seed, variation_strength, *hires)


def variation_controls(tab: str) -> tuple[gr.Number, gr.Slider]:
    """A1111's variation seed: the starting noise mixed from the seed's toward this seed's."""
    with gr.Accordion("Variation seed", open=False, elem_id=f"{tab}-variation-panel"):
        with gr.Row():
            variation_seed = gr.Number(value=-1, precision=0, label="Variation seed (-1 = random)",
                                       elem_id=f"{tab}-variation-seed")
            variation_strength = gr.Slider(0, 1, value=0, step=0.01, label="Variation strength",
                                           elem_id=f"{tab}-variation-strength",
                                           info="0 = the seed's picture, 1 = the variation seed's; a batch "
                                                "keeps the seed and counts the variation seed up")
    return variation_seed, variation_strength


def hires_controls(tab: str, studio: Studio) -> tuple:
    """Hires fix: the picture at the set size, upscaled, then an img2img pass at the bigger size."""
    with gr.Accordion("Hires fix", open=False, elem_id=f"{tab}-hires-panel"):
        hires = gr.Checkbox(False, label="Hires fix: upscale, then a second pass at the bigger size",
                            elem_id=f"{tab}-hires")
        with gr.Row():
            upscaler = gr.Dropdown([*LATENT, *upscaler_choices(studio)], value="Lanczos", label="Upscaler",
                                   elem_id=f"{tab}-hires-upscaler",
                                   info="Latent: the first pass's latents resized (strength 0.5 or more)")
            scale = gr.Slider(*SCALE_RANGE, value=2.0, step=0.05, label="Upscale by", elem_id=f"{tab}-hires-scale")
        with gr.Row():
            steps = gr.Slider(0, min(STEPS_RANGE[1], studio.limits.max_steps), value=0, step=1,
                              label="Hires steps (0 = as many as the first pass)", elem_id=f"{tab}-hires-steps")
            strength = gr.Slider(0, 1, value=DEFAULT_STRENGTH, step=0.01, label="Denoising strength",
                                 elem_id=f"{tab}-hires-strength")
    upscaler.focus(lambda: gr.Dropdown(choices=[*LATENT, *upscaler_choices(studio, rescan=True)]), None, upscaler,
                   api_visibility="private", queue=False)
    return hires, scale, steps, strength, upscaler


def upscaler_choices(studio: Studio, rescan: bool = False) -> list[str]:
    return [*BUILT_IN, *_library_names(studio, "upscalers", rescan)]


def reference_controls(tab: str):
    """Reference images for {image} tags, their strength and method."""
    with gr.Accordion("Reference images: {image} in the prompt", open=False, elem_id=f"{tab}-references-panel"):
        references = gr.File(file_count="multiple", file_types=["image"], type="filepath",
                             label="Reference images ({image} = the first; {image:name} by file name)",
                             elem_id=f"{tab}-references")
        reference_strength = gr.Slider(0, 1, value=0.5, step=0.05, label="Reference strength",
                                       info="0 = not used", elem_id=f"{tab}-reference-strength")
        reference_method = gr.Radio(["reference-only", "ip-adapter"], value="reference-only",
                                    label="Method", elem_id=f"{tab}-reference-method",
                                    info="reference-only needs no weights; IP-Adapter needs models/ip-adapter")
    return references, reference_strength, reference_method


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
            req = make_request(prompt=prompt, negative_prompt=negative_prompt,
                               negative_presets=negative_presets,
                               style=None if style == NO_STYLE else style, steps=steps,
                               clip_skip=clip_skip, known_presets=studio.presets.negative_names(),
                               known_styles=studio.presets.style_names())
            return studio.explain_prompt(req)
        except StudioError as exc:
            raise gr.Error(str(exc)) from None

    explain_button.click(explain_prompt, inputs, explained, concurrency_id="gpu", concurrency_limit=1,
                         **({"api_name": "explain_prompt"} if tab == "txt2img" else {"api_visibility": "private"}))


def _library_names(studio: Studio, kind: str, rescan: bool = False) -> list[str]:
    if studio.library is None:
        return []
    return (studio.library.scan() if rescan else studio.library.names())[kind]


def addon_controls(tab: str, studio: Studio):
    """LoRAs with weights, a VAE file and clip skip, from the models folder; the feature cache."""
    with gr.Accordion("LoRA, VAE, clip skip, feature cache", open=False, elem_id=f"{tab}-addons"):
        with gr.Row():
            add_lora = gr.Dropdown(_library_names(studio, "loras"), value=None, label="Add a LoRA",
                                   elem_id=f"{tab}-add-lora", scale=2,
                                   info="from models/loras; set its weight in the table")
            vae = gr.Dropdown([AUTOMATIC_VAE] + _library_names(studio, "vae"), value=AUTOMATIC_VAE,
                              label="VAE", elem_id=f"{tab}-vae", scale=2,
                              info="Automatic: the model's own")
            clip_skip = gr.Slider(1, 12, value=1, step=1, label="Clip skip", elem_id=f"{tab}-clip-skip",
                                  scale=1, info="2 = the penultimate text-encoder layer")
        loras = gr.Dataframe(value=[], headers=["LoRA", "weight"], datatype=["str", "number"],
                             column_count=(2, "fixed"), row_count=(0, "dynamic"),
                             label="LoRAs (delete a row to remove one)", elem_id=f"{tab}-loras")
        feature_cache = gr.Slider(0, 5, value=0, step=1, label="Feature cache (DeepCache)",
                                  elem_id=f"{tab}-feature-cache",
                                  info="0 = off; N = the full UNet every N-th step, the deep features "
                                       "reused in between: faster, a little less faithful")

    def add(name, rows):
        rows = lora_rows(rows)
        if name and all(r[0] != name for r in rows):
            rows.append([name, 1.0])
        return rows, gr.Dropdown(value=None)

    add_lora.input(add, [add_lora, loras], [loras, add_lora], api_visibility="private", queue=False)
    add_lora.focus(lambda: gr.Dropdown(choices=_library_names(studio, "loras", rescan=True)), None,
                   add_lora, api_visibility="private", queue=False)
    vae.focus(lambda: gr.Dropdown(choices=[AUTOMATIC_VAE] + _library_names(studio, "vae", rescan=True)),
              None, vae, api_visibility="private", queue=False)
    return loras, vae, clip_skip, feature_cache


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
