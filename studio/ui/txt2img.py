"""Text-to-image tab. The event's function signature is the API: api_name `txt2img`."""

from __future__ import annotations

import inspect

import gradio as gr

from studio.errors import StudioError
from studio.inputs import load_image
from studio.outputs.pnginfo import read_info
from studio.serving.studio import Studio
from studio.ui import live, plots
from studio.ui.pnginfo import offered, ui_value
from studio.ui.jobs import dispatched, run_hires_job, run_job
from studio.ui.widgets import ResultsPanel, model_examples, prompt_controls, result_outputs, results_panel


MORE_LIKE_THIS_STRENGTH = 0.2     # close to the picture, yet each one visibly its own
MORE_LIKE_THIS_COUNT = 4


def build(studio: Studio, native: int) -> tuple[ResultsPanel, dict]:
    """The tab; returns its results panel and its request field -> control map."""
    with gr.Row():
        with gr.Column(scale=1):
            c = prompt_controls("txt2img", studio, native=native, size_from_input=False, txt2img=True)
            examples = model_examples(studio)
            if examples:
                gr.Examples([[e] for e in examples], inputs=[c.prompt], label="Prompts this model knows",
                            elem_id="txt2img-examples")
        with gr.Column(scale=1):
            live_panel = live.panel("txt2img")
            panel = results_panel("txt2img", c.seed)
            more = gr.Button("🎲 More like this: variations of the selected picture", elem_id="txt2img-more-like-this")

    def txt2img(prompt, negative_prompt, negative_presets, style, scheduler, steps, cfg_scale,
                width, height, seed, batch_count, batch_size, loras=None, vae=None, clip_skip=1, variants="random",
                references=None, reference_strength=0.5,
                reference_method="reference-only", feature_cache=0, variation_seed=-1, variation_strength=0.0,
                hires=False, hires_scale=2.0, hires_steps=0, hires_strength=0.7, hires_upscaler="Lanczos",
                progress=gr.Progress(), request: gr.Request = None):
        """Generate images from a prompt. Returns the saved PNGs, their A1111 parameters, the
        full JSON metadata and the seed used. With `hires`, each picture is upscaled by
        `hires_scale` and drawn again (img2img, `hires_steps`, `hires_strength`): the finished
        pictures come first, then the first passes."""
        raw = dict(
            prompt=prompt, negative_prompt=negative_prompt, negative_presets=negative_presets,
            style=style, scheduler=scheduler, steps=steps, cfg_scale=cfg_scale, width=width,
            height=height, seed=seed, batch_count=batch_count, batch_size=batch_size, loras=loras,
            vae=vae, clip_skip=clip_skip, variants=variants,
            references=references, reference_strength=reference_strength,
            reference_method=reference_method, feature_cache=feature_cache, variation_seed=variation_seed,
            variation_strength=variation_strength)
        if hires:
            yield from run_hires_job(studio, {**raw, "hires": True, "hires_scale": hires_scale, "hires_steps": hires_steps,
                                              "hires_strength": hires_strength, "hires_upscaler": hires_upscaler},
                                     progress, request)
        else:
            yield from run_job(studio, "txt2img", raw, progress, request)

    inputs = [c.prompt, c.negative_prompt, c.negative_presets, c.style, c.scheduler, c.steps, c.cfg_scale, c.width,
              c.height, c.seed, c.batch_count, c.batch_size, *c.addons(), c.variation_seed, c.variation_strength,
              c.hires, c.hires_scale, c.hires_steps, c.hires_strength, c.hires_upscaler]
    c.generate.click(txt2img, inputs, result_outputs(panel), api_name="txt2img", **dispatched(studio))
    live.wire(studio, "txt2img", live_panel, inputs, live.field_names(txt2img, len(inputs)), c.seed, c.generate,
              result_outputs(panel), api=("live", txt2img))
    plots.build(studio, inputs, [(p.name, p.default) for p in list(inspect.signature(txt2img).parameters.values())
                                 [:len(inputs)]], panel)
    controls = c.fields()
    names = [n for n in controls if n not in ("seed", "variation_seed", "variation_strength", "batch_count")]

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
               [*(controls[n] for n in names), c.seed, c.variation_seed, c.variation_strength, c.batch_count],
               api_visibility="private", queue=False).success(
        txt2img, inputs, result_outputs(panel), api_visibility="private", **dispatched(studio))
    return panel, controls
