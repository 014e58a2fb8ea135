"""The model picker above the tabs: the models folder, the --model source and the embedded model.

API: `/select_model(model)` switches (names only, as listed by `/list_models`; a hub id must be in
the local cache) and returns the banner text; `/list_models(rescan)` returns the names.
"""

from __future__ import annotations

import gradio as gr

from studio.errors import StudioError
from studio.models.memory import MEMORY_HELP, MEMORY_MODES
from studio.serving.studio import Studio


def build(studio: Studio):
    """The picker row and the banner; returns the model-switch event (to chain updates to)."""
    with gr.Row(equal_height=True):
        picker = gr.Dropdown(studio.model_choices(), value=studio.current_choice(), label="Model",
                             allow_custom_value=True, scale=4, elem_id="model-picker",
                             info="models/checkpoints (single files or diffusers folders), or a "
                                  "hub id already in the local cache")
        refresh = gr.Button("🔄 Refresh", scale=0, min_width=60, elem_id="model-refresh")
        memory = gr.Dropdown(list(MEMORY_MODES), value=studio.memory_mode(), label="Memory", scale=1,
                             elem_id="model-memory",
                             info="; ".join(f"{k}: {v}" for k, v in MEMORY_HELP.items() if k != "none"))
    banner = gr.Markdown(model_banner(studio), elem_id="model-banner")

    def select_model(model: str) -> str:
        """Switch to a model by its name in the list (see list_models). It loads at the next
        generation. Returns a description of it: name, family, native size."""
        try:
            studio.select_model(model)
        except StudioError as exc:
            raise gr.Error(str(exc)) from None
        return model_banner(studio)

    def list_models(rescan: bool = True) -> list[str]:
        """The names select_model accepts (rescan: read the models folder again first)."""
        return studio.model_choices(rescan=bool(rescan))

    def set_memory(mode: str) -> str:
        """Memory savers: auto, none, low (attention slicing, VAE slicing/tiling), offload or
        sequential (CPU offload, CUDA only). Returns the model description."""
        try:
            gr.Info(studio.set_memory(str(mode)))
        except StudioError as exc:
            raise gr.Error(str(exc)) from None
        return model_banner(studio)

    def on_refresh():
        return gr.Dropdown(choices=list_models(True), value=studio.current_choice())

    # one at a time; a switch waits for the running generation (the model lock) and frees its memory after
    switched = picker.input(select_model, [picker], [banner], api_name="select_model",
                 concurrency_id="gpu", concurrency_limit=1)
    memory.input(set_memory, [memory], [banner], api_name="set_memory",
                 concurrency_id="gpu", concurrency_limit=1)
    refresh.click(on_refresh, None, [picker], api_visibility="private", queue=False)
    gr.api(list_models, api_name="list_models")
    return switched


def model_banner(studio: Studio) -> str:
    try:
        info = studio.model_info()
    except StudioError as exc:
        return f"**Model problem:** {exc}"
    text = (f"**Model:** {info.name} · {info.family} · native size {info.native_size}×"
            f"{info.native_size}" + (" · inpainting model" if info.inpaint_only else ""))
    text += f" · {studio.where_jobs_run()}"
    if info.notice:
        text += f"\n\n{'⚠️ ' if info.kind == 'placeholder' else ''}{info.notice}"
    if info.few_step:
        text += f"\n\n⚡ {info.few_step.banner()}"
    if studio.safety_on():
        text += f"\n\n🛡 {studio.safety_status().capitalize()}."
    return text
