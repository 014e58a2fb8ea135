"""The History tab: the images saved in the outputs folder, newest first (API: /history)."""

from __future__ import annotations

import gradio as gr

from studio.outputs.metadata import read_metadata
from studio.serving.studio import Studio


def build(studio: Studio) -> None:
    gallery = gr.Gallery(label="Saved images, newest first", columns=6, height=520, format="png",
                         interactive=False, elem_id="history-gallery")
    refresh = gr.Button("🔄 Refresh", elem_id="history-refresh")

    def history(limit: int = 100) -> list[dict]:
        """The newest saved images: file, seed and prompt of each (read from its metadata)."""
        out = []
        for path in studio.outputs.history(max(1, min(int(limit or 100), 1000))):
            try:
                data = read_metadata(path)[1] or {}
            except Exception:  # noqa: BLE001 - a file someone else put there
                data = {}
            out.append({"file": str(path), "seed": data.get("seed"), "prompt": data.get("prompt")})
        return out

    def show():
        return [(h["file"], f"seed {h['seed']}") for h in history(100)]

    refresh.click(show, None, gallery, api_visibility="private", queue=False)
    gr.api(history, api_name="history")
    return gallery, show
