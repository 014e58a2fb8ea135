"""Text-to-image tab. The event's function signature is the API: api_name `txt2img`."""

from __future__ import annotations

import gradio as gr

from studio.serving.studio import Studio
from studio.ui.widgets import (ResultsPanel, dispatched, model_examples, prompt_controls, result_outputs, results_panel,
                      run_job)


def build(studio: Studio, native: int) -> tuple[ResultsPanel, dict]:
    """The tab; returns its results panel and its request field -> control map."""
    with gr.Row():
        with gr.Column(scale=1):
            c = prompt_controls("txt2img", studio, native=native, size_from_input=False)
            examples = model_examples(studio)
            if examples:
                gr.Examples([[e] for e in examples], inputs=[c.prompt], label="Prompts this model knows",
                            elem_id="txt2img-examples")
        with gr.Column(scale=1):
            panel = results_panel("txt2img", c.seed)

    def txt2img(prompt, negative_prompt, negative_presets, style, scheduler, steps, cfg_scale,
                width, height, seed, batch_count, batch_size, loras=None, vae=None, clip_skip=1, variants="random",
                references=None, reference_strength=0.5,
                reference_method="reference-only", feature_cache=0,
                progress=gr.Progress(), request: gr.Request = None):
        """Generate images from a prompt. Returns the saved PNGs, their A1111 parameters, the
        full JSON metadata and the seed used."""
        yield from run_job(studio, "txt2img", dict(
            prompt=prompt, negative_prompt=negative_prompt, negative_presets=negative_presets,
            style=style, scheduler=scheduler, steps=steps, cfg_scale=cfg_scale, width=width,
            height=height, seed=seed, batch_count=batch_count, batch_size=batch_size, loras=loras,
            vae=vae, clip_skip=clip_skip, variants=variants,
            references=references, reference_strength=reference_strength,
            reference_method=reference_method, feature_cache=feature_cache), progress, request)

    c.generate.click(txt2img, [c.prompt, c.negative_prompt, c.negative_presets, c.style, c.scheduler,
                               c.steps, c.cfg_scale, c.width, c.height, c.seed, c.batch_count,
                               c.batch_size, *c.addons()],
                     result_outputs(panel), api_name="txt2img", **dispatched(studio))
    return panel, c.fields()
