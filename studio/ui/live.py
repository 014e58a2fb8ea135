"""The Live switch of a tab: the picture follows the prompt as it is typed, the sliders as they
move and the canvas as it is painted (studio/live). Each change is one request in the
dispatcher's live lane; Gradio's `always_last` sends at most one more call while one runs, and
the lane keeps one waiting job per session, the newest. Live off or Generate cancels it. The
picture is held, not saved, until Keep saves it with its metadata into the results panel.

API (txt2img's controls): `/live` returns one picture and its parameters, not saved."""

from __future__ import annotations

import dataclasses
import inspect
import time
from typing import Any, Callable

import gradio as gr

from studio.errors import StudioError
from studio.live.session import LiveSession, draw_seed, live_fields
from studio.serving.studio import Studio
from studio.ui.jobs import login, panel_values, raw_fields, who


@dataclasses.dataclass
class LivePanel:
    enabled: gr.Checkbox
    keep: gr.Button
    picture: gr.Image
    status: gr.Markdown
    state: gr.State


def panel(tab: str) -> LivePanel:
    """The switch, Keep, the live picture and its status line (made where the tab places them)."""
    with gr.Row(equal_height=True):
        enabled = gr.Checkbox(False, label="⚡ Live: the picture follows your changes (fixed seed)",
                              elem_id=f"{tab}-live", scale=3)
        keep = gr.Button("Keep", visible=False, elem_id=f"{tab}-live-keep", scale=1, min_width=80)
    picture = gr.Image(label="Live", type="pil", format="png", interactive=False, visible=False,
                       elem_id=f"{tab}-live-picture", height=320)
    status = gr.Markdown("", elem_id=f"{tab}-live-status")
    return LivePanel(enabled, keep, picture, status, gr.State(LiveSession()))


def live_picture(studio: Studio, mode: str, raw: dict[str, Any], request: gr.Request | None):
    """(result or None, seconds): one live picture for these controls; None when newer input
    replaced it. Bad input raises StudioError (a message, never a trace)."""
    made = studio.make_request(mode, **raw_fields(studio, live_fields(raw)))
    user, session = who(request)
    began = time.monotonic()
    result = studio.live(made, user=user, session=session)
    return result, time.monotonic() - began


def wire(studio: Studio, mode: str, live: LivePanel, inputs: list, params: list[tuple[str, Any]], seed: gr.Number,
         generate: gr.Button, results: list, adapt: Callable[[dict], dict] | None = None,
         api: str | None = None) -> None:
    """`inputs` and `params`: the tab's generation inputs and (the request field each sets, its
    API default); `adapt` turns them into request fields (the inpainting editor); `api`: the
    name of an endpoint taking the same parameters."""
    names = [name for name, _ in params]

    def frame(request: gr.Request, enabled, session, *values):     # (request first: Gradio fills it in)
        if not enabled:
            return gr.skip(), gr.skip(), session
        try:
            raw = dict(zip(names, values))
            result, seconds = live_picture(studio, mode, adapt(raw) if adapt else raw, request)
        except (StudioError, gr.Error) as exc:
            return gr.skip(), f"Live: {exc}", session
        if result is None or not result.images:
            return gr.skip(), gr.skip(), session
        session.frame(result.images[0], seconds)
        return result.images[0].image, session.status(), session

    def toggle(enabled, seed_value, request: gr.Request = None):
        if not enabled:
            user, session = who(request)
            studio.stop_live(session, user)
        fixed = draw_seed() if enabled and (seed_value is None or int(seed_value) < 0) else gr.skip()
        return (gr.Image(visible=bool(enabled)), gr.Button(visible=bool(enabled)),
                "" if not enabled else "Live: drawing…", fixed)

    def keep(session, request: gr.Request = None):
        if session.picture is None:
            raise gr.Error("Nothing to keep yet: switch Live on and change something.")
        path = studio.keep(session.picture, login(request))
        gr.Info(f"Kept as {path.name}")
        kept = dataclasses.replace(session.picture, path=path)
        return panel_values([kept], [], kept.seed)

    io = dict(inputs=[live.enabled, live.state, *inputs], outputs=[live.picture, live.status, live.state],
              api_visibility="private", show_progress="hidden", concurrency_id="live",
              concurrency_limit=studio.queue_size + 2 if studio.queue_size else 32)
    triggers = [c.input for c in inputs if hasattr(c, "input")]
    gr.on(triggers, frame, trigger_mode="always_last", **io)
    live.enabled.change(toggle, [live.enabled, seed], [live.picture, live.keep, live.status, seed],
                        api_visibility="private", queue=False).then(frame, **io)

    def cancel(request: gr.Request = None):
        user, session = who(request)
        studio.stop_live(session, user)

    generate.click(cancel, None, None, api_visibility="private", queue=False)
    live.keep.click(keep, [live.state], results, api_visibility="private", queue=False)
    if api:
        _api(studio, mode, inputs, params, api, adapt)


def _api(studio: Studio, mode: str, inputs: list, params: list[tuple[str, Any]], api_name: str,
         adapt: Callable[[dict], dict] | None) -> None:
    """A gradio_client endpoint with the tab's parameters: one picture and its parameters text."""
    def live_api(*args):
        *values, request = args           # Gradio puts the request where the signature below has it
        try:
            raw = dict(zip([name for name, _ in params], values))
            result, _ = live_picture(studio, mode, adapt(raw) if adapt else raw, request)
        except StudioError as exc:
            raise gr.Error(str(exc)) from None
        if result is None or not result.images:
            raise gr.Error("Replaced by a newer live request from the same session.")
        return result.images[0].image, result.images[0].parameters

    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    live_api.__signature__ = inspect.Signature([inspect.Parameter(name, kind, default=default)
                                                for name, default in params]
                                               + [inspect.Parameter("request", kind, default=None)])
    live_api.__annotations__ = {"request": gr.Request}
    live_api.__doc__ = (f"One picture for these controls ({mode}), made in the live lane and not saved "
                        "(call the tab's own endpoint to save one). Returns the picture and its parameters.")
    with gr.Row(visible=False):
        picture = gr.Image(type="pil", format="png", elem_id=f"{mode}-live-api-picture")
        text = gr.Textbox(elem_id=f"{mode}-live-api-parameters")
        button = gr.Button(elem_id=f"{mode}-live-api-button")
    button.click(live_api, inputs, [picture, text], api_name=api_name, concurrency_id="live",
                 concurrency_limit=studio.queue_size + 2 if studio.queue_size else 32)
