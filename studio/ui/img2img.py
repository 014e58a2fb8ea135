"""Image-to-image tab: an input image plus strength. API: api_name `img2img`."""

from __future__ import annotations

import inspect

import gradio as gr

from studio.serving.studio import Studio
from studio.ui import live, plots
from studio.ui.jobs import dispatched, run_job
from studio.ui.widgets import ResultsPanel, prompt_controls, result_outputs, results_panel


def build(studio: Studio, native: int) -> tuple[ResultsPanel, gr.Image, dict]:
    """The tab; returns its results panel, input image and request field -> control map."""
    with gr.Row():
        with gr.Column(scale=1):
            image = gr.Image(label="Input image", type="pil", image_mode=None, format="png",
                             sources=["upload", "clipboard"], elem_id="img2img-image", height=320)
            strength = gr.Slider(0.0, 1.0, value=0.75, step=0.01, label="Strength (denoising)",
                                 elem_id="img2img-strength")
            c = prompt_controls("img2img", studio, native=native, size_from_input=True)
        with gr.Column(scale=1):
            live_panel = live.panel("img2img")
            panel = results_panel("img2img", c.seed)

    def img2img(image, prompt, negative_prompt, negative_presets, style, scheduler, steps,
                cfg_scale, width, height, seed, batch_count, batch_size, strength, loras=None,
                vae=None, clip_skip=1, variants="random",
                references=None, reference_strength=0.5,
                reference_method="reference-only", feature_cache=0, progress=gr.Progress(), request: gr.Request = None):
        """Repaint an input image guided by a prompt; `strength` 0 keeps it, 1 replaces it."""
        yield from run_job(studio, "img2img", dict(
            image=image, prompt=prompt, negative_prompt=negative_prompt,
            negative_presets=negative_presets, style=style, scheduler=scheduler, steps=steps,
            cfg_scale=cfg_scale, width=width, height=height, seed=seed, batch_count=batch_count,
            batch_size=batch_size, strength=strength, loras=loras, vae=vae, clip_skip=clip_skip, variants=variants,
            references=references, reference_strength=reference_strength,
            reference_method=reference_method, feature_cache=feature_cache),
            progress, request)

    inputs = [image, c.prompt, c.negative_prompt, c.negative_presets, c.style, c.scheduler, c.steps, c.cfg_scale,
              c.width, c.height, c.seed, c.batch_count, c.batch_size, strength, *c.addons()]
    c.generate.click(img2img, inputs, result_outputs(panel), api_name="img2img", **dispatched(studio))
    live.wire(studio, "img2img", live_panel, inputs, live.field_names(img2img, len(inputs)), c.seed, c.generate,
              result_outputs(panel))
    plots.build(studio, inputs, [(p.name, p.default) for p in list(inspect.signature(img2img).parameters.values())
                                 [:len(inputs)]], panel, mode="img2img")
    return panel, image, {**c.fields(), "strength": strength}
