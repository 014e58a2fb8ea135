"""How a tab's event runs a job: its values as request fields, the request submitted to the
dispatcher (`Studio.submit`) for this browser's user and session, progress and previews on the
way, and the saved pictures as a results panel's outputs. Tools made of several requests (hires
fix, plots, outpainting, animation) run through the same functions.

No torch or diffusers here.
"""

from __future__ import annotations

import inspect
from typing import Any

import gradio as gr

from studio.errors import StudioError
from studio.requests import GenerationRequest
from studio.serving.sequence import Sequence
from studio.serving.studio import Studio
from studio.ui import control as control_panel
from studio.ui.control import panel_units
from studio.ui.form import lora_rows

PREVIEW_EVERY_S = 0.5        # live previews: at most two a second


def stop_job(studio: Studio, request: gr.Request | None) -> None:
    """Stop this browser's jobs: of its session, and of its login (a session name is the client's
    to choose; the login is the server's)."""
    user, session = who(request)
    if request is not None and studio.stop(session, user):
        gr.Info("Stopping after the current step…")


def dispatched(studio: Studio) -> dict:
    """Event settings of the generation events. Gradio lets them all in at once (the waiting ones,
    the running one and one more, which the dispatcher answers "Queue is full"): the dispatcher,
    not Gradio's first-in-first-out queue, decides who goes next. Each waiting event holds one of
    Gradio's worker threads, so an unbounded queue still lets in at most 32."""
    return dict(concurrency_id="generate",
                concurrency_limit=studio.queue_size + 2 if studio.queue_size else 32)


def login(request: gr.Request | None) -> str | None:
    """The login the server checked, when the studio has logins (its space); else None."""
    return getattr(request, "username", None) or None


def who(request: gr.Request | None) -> tuple[str, str]:
    """(user, session): the login name, else the browser session, is who the queue is fair to."""
    session = request.session_hash if request is not None and request.session_hash else "anonymous"
    return getattr(request, "username", None) or session, session


def raw_fields(studio: Studio, raw: dict[str, Any]) -> dict[str, Any]:
    """A tab's values as request fields: the LoRA table's rows a list, and the model the page
    shows now (the job runs on it even if someone switches before it starts). The "nothing" a
    list shows ("None" style, "Automatic" VAE) the request's own check reads as nothing."""
    raw = dict(raw)
    if "loras" in raw:
        raw["loras"] = lora_rows(raw["loras"])
    panel = raw.pop(control_panel.PARAM, None)      # the ControlNet panel's units, unless a program sent some
    if not raw.get("control") and panel_units(panel):
        raw["control"] = panel_units(panel)
    raw.setdefault("model", studio.current_choice())
    return raw


def _make(studio: Studio, mode: str, raw: dict[str, Any]):
    return studio.make_request(mode, **raw_fields(studio, raw))


def run_job(studio: Studio, mode: str, raw: dict[str, Any], progress: gr.Progress,
            request: gr.Request | None):
    """Check the inputs, then run them (`run_request`)."""
    try:
        made = _make(studio, mode, raw)
    except StudioError as exc:
        raise gr.Error(str(exc)) from None
    yield from run_request(studio, made, progress, request)


def run_request(studio: Studio, made: GenerationRequest, progress: gr.Progress, request: gr.Request | None):
    """Submit a checked request to the dispatcher, and yield the outputs of a results panel:
    previews while the job runs, then (gallery, parameters text, parameters JSON, seed used,
    paths). Queue position and progress go to the progress bar."""
    user, session = who(request)
    try:
        job = studio.submit(made, user=user, session=session, preview_every_s=PREVIEW_EVERY_S)
    except StudioError as exc:
        raise gr.Error(str(exc)) from None
    try:
        for update in job.updates():
            if update.kind == "queued":
                progress(0, desc=f"Waiting: {update.ahead} job(s) before yours")
            elif update.kind == "started":
                progress(0, desc="Loading the model…" if not studio.model_loaded() else "Starting…")
            elif update.kind == "progress":
                progress((update.done, update.total), desc=f"Step {update.done}/{update.total}", unit="steps")
            elif update.kind == "preview":
                yield [(update.picture, "preview")], gr.skip(), gr.skip(), gr.skip(), gr.skip()
        result = job.result()
    except StudioError as exc:
        raise gr.Error(str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - the server keeps serving; the log has the trace
        raise gr.Error(f"Generation failed: {type(exc).__name__}: {exc}. The studio is still "
                       "running; the server log has the details.") from None
    finally:
        if not job.finished:        # the event was cancelled (page closed): stop at the next step
            job.stop()
    yield panel_values(result.images, result.notes, result.seed)


def panel_values(images: list, notes: list[str], seed: int | None, lead: list[tuple[str, str]] = ()) -> tuple:
    """A results panel's outputs (gallery, parameters text, JSON, seed used, paths) for saved
    pictures, `lead` (path, caption) shown first (a plot's grid); the notes as warnings."""
    for note in notes:
        gr.Warning(note)
    gallery = [*lead, *((str(g.path), f"seed {g.seed}") for g in images)]
    info = "\n\n".join(g.parameters for g in images) or "\n".join(notes)
    return gallery, info, [g.data for g in images], seed, [path for path, _ in gallery]


def run_composed(studio: Studio, compose, progress: gr.Progress, request: gr.Request | None):
    """Run `compose(sequence, on_progress)` (a tool made of several requests: hires fix, a plot)
    for this browser's user and session, its errors as the page's messages."""
    user, session = who(request)
    try:
        return compose(Sequence(studio, user=user, session=session), lambda done, text: progress(done, desc=text))
    except StudioError as exc:
        raise gr.Error(str(exc)) from None


def run_tool_job(studio: Studio, tool, raw: dict[str, Any], progress: gr.Progress, request: gr.Request | None):
    """A composing txt2img run (the hires fix; a size far above the model's, drawn at its own and
    upscaled: studio/upscale): the finished pictures, the first passes after them."""
    result = run_composed(studio, lambda seq, say: tool(studio, raw_fields(studio, raw), seq, say),
                          progress, request)
    yield panel_values(result.images + result.first_pass, result.notes, result.seed)


def event_function(run, params: list[tuple[str, Any]], doc: str):
    """A Gradio event function whose inputs (its API parameters, in order) are `params`, pairs of
    (name, default; inspect.Parameter.empty = required), handed to `run(raw: dict, progress,
    request)` as one dict: for tools that take a tab's request fields plus their own, without
    spelling the whole list out again."""
    names = [name for name, _ in params]

    def event(*values):
        *fields, progress, request = values
        yield from run(dict(zip(names, fields)), progress, request)

    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    event.__signature__ = inspect.Signature(
        [inspect.Parameter(n, kind, default=d) for n, d in params]
        + [inspect.Parameter("progress", kind, default=gr.Progress()), inspect.Parameter("request", kind, default=None)])
    event.__annotations__ = {"request": gr.Request}
    event.__doc__ = doc
    return event
