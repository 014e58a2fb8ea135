"""The PNG Info tab: drop any picture and see what made it (the studio's record, A1111's
parameters, ComfyUI's graph, InvokeAI's metadata; studio/outputs/pnginfo.py), then send its
settings to a tab. API: `/png_info(image)` returns the text and the settings."""

from __future__ import annotations

from typing import Any

import gradio as gr
import numpy as np

from studio.errors import StudioError
from studio.inputs import decode_base64, load_image
from studio.outputs.pnginfo import TOOL_READ, read_info
from studio.fields import Choice
from studio.requests import request_fields
from studio.ui.form import blank_shown

TARGETS = (("txt2img", "Send to txt2img"), ("img2img", "Send to img2img"), ("inpaint", "Send to inpaint"))


def build():
    """The tab's widgets; returns (picture, settings read from it, {target tab: its send button})."""
    with gr.Row():
        with gr.Column(scale=1):
            picture = gr.Image(label="Picture (PNG, JPEG or WebP with its metadata)", type="filepath",
                               image_mode=None, sources=["upload", "clipboard"], elem_id="pnginfo-image",
                               height=380)
        with gr.Column(scale=1):
            text = gr.Textbox(label="What made it", lines=10, interactive=False, elem_id="pnginfo-text")
            settings = gr.JSON(label="Settings a tab will take", elem_id="pnginfo-fields")
            with gr.Row():
                buttons = {tab: gr.Button(label, elem_id=f"pnginfo-send-{tab}") for tab, label in TARGETS}

    def png_info(image: str) -> tuple[str, dict]:
        """What made a picture: its source tool, prompt, negative prompt and settings, and the
        studio settings (request fields) read from it."""
        if not image:
            return "", {}
        try:
            info = read_info(load_image("Picture", image, mode="keep"))
        except StudioError as exc:
            raise gr.Error(str(exc)) from None
        return describe(info), info.fields

    picture.change(png_info, picture, [text, settings], api_name="png_info", queue=False)
    return picture, settings, buttons


def describe(info) -> str:
    if not info.source:
        return "No generation parameters in this picture."
    text = info.infotext or "\n".join(f"{k}: {v}" for k, v in info.a1111_parameters().items())
    return f"Made with {info.source}" + (f" (model {info.model})" if info.model else "") + ":\n\n" + text


def ui_value(name: str, value: Any) -> Any:
    """A request field's value as its control shows it: a list's "nothing" by its name there
    ("None" style, "Automatic" VAE), the LoRA table as rows."""
    kind = next((f.kind for f in (*request_fields(), *TOOL_READ) if f.name == name), None)
    if isinstance(kind, Choice) and kind.blank:
        return value or blank_shown(kind)
    if name == "loras":
        return [list(row) for row in value or []]
    if name == "control":         # the hidden field programs send: the panel takes the record (restored)
        return gr.skip()
    if name == "regions_mask" and value:      # the painting, back on the painter's canvas
        canvas = np.asarray(decode_base64("Painted regions", value).convert("RGBA"))
        return {"background": canvas, "layers": [], "composite": canvas}
    return value


def offered(control, value: Any) -> Any:
    """The value, if a list control offers it (names of presets, styles, samplers, VAEs this
    studio does not have are left as they are); a multiselect keeps the names it offers."""
    choices = getattr(control, "choices", None)
    if not choices:
        return value
    known = {c[1] if isinstance(c, (tuple, list)) else c for c in choices}
    if isinstance(value, list):
        return [v for v in value if v in known]
    return value if value in known else gr.skip()


def wire(buttons: dict, settings: gr.JSON, picture: gr.Image, tabs: gr.Tabs, targets: dict) -> None:
    """Each send button fills every control of its tab that the picture has a setting for (and
    the picture itself, for img2img and inpainting), then shows that tab."""
    for tab, button in buttons.items():
        form, image_input, image_value = targets[tab]
        controls, restores = form.controls, list(form.restores.items())
        names = list(controls)

        def send(fields, path, names=names, tab=tab, image_value=image_value, controls=controls, restores=restores):
            fields = fields or {}
            values = [offered(controls[n], ui_value(n, fields[n])) if n in fields else gr.skip() for n in names]
            panels = [v for n, (parts, fill) in restores for v in (fill(fields[n]) if n in fields else
                                                                    [gr.skip()] * len(parts))]
            extra = [image_value(path) if path else gr.skip()] if image_value else []
            return [*values, *panels, *extra, gr.Tabs(selected=tab)]

        outputs = [controls[n] for n in names] + [c for _, (parts, _) in restores for c in parts] + \
            ([image_input] if image_value else []) + [tabs]
        button.click(send, [settings, picture], outputs, api_visibility="private", queue=False)
