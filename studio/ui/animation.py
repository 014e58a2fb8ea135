"""The Animation tab (API: `/animate`): prompt travel, 2D camera motion, video input and a motion
preview, with Deforum-style schedules (a small curve beside each), colour coherence, cadence,
loops, start/end pictures; the frames appear as they finish and the video plays when done."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import gradio as gr
from PIL import Image, ImageDraw

from studio.animation.settings import (CHOICES, FORMATS, INTEGERS, AnimationSettings, from_deforum)
from studio.errors import StudioError
from studio.samplers import scheduler_names
from studio.serving.sequence import Sequence
from studio.serving.studio import Studio
from studio.ui.jobs import dispatched, event_function, login, stop_job, who

D = AnimationSettings()
MODE_LABELS = [("Prompt travel", "travel"), ("2D motion", "2d"), ("Video input", "video"),
               ("Motion preview (no diffusion)", "preview")]
CAMERA = ("zoom", "angle", "translation_x", "translation_y", "center_x", "center_y")
DIFFUSION = ("denoise", "noise", "cfg", "steps", "seed_schedule")
HELP = {"zoom": "zoom per frame (>1 moves in)", "angle": "degrees per frame, counter-clockwise",
        "translation_x": "pixels per frame, right", "translation_y": "pixels per frame, down",
        "center_x": "centre of zoom and turn (0-1)", "center_y": "centre of zoom and turn (0-1)",
        "denoise": "how much img2img changes each frame (Deforum's strength = 1 - denoise)",
        "noise": "pixel noise added before img2img", "cfg": "CFG scale", "steps": "sampling steps",
        "seed_schedule": "seed when the seed mode is 'schedule' (s = the seed)"}
log = logging.getLogger(__name__)
MAX_STRIP = 16                 # frames shown in the strip while rendering


def curve(text: str, frames: int, seed: int, interpolation: str) -> Image.Image | None:
    """A small plot of a schedule over the frames; None when it does not read (the run says why)."""
    from studio.animation.schedule import values
    try:
        series = values(text, max(2, int(frames)), max(0, int(seed)), interpolation)
    except (StudioError, ValueError, TypeError):
        return None
    w, h, pad = 220, 60, 4
    low, high = min(series), max(series)
    span = (high - low) or 1.0
    points = [(pad + (w - 2 * pad) * i / (len(series) - 1), h - pad - (h - 2 * pad) * (v - low) / span)
              for i, v in enumerate(series)]
    img = Image.new("RGB", (w, h), (250, 250, 250))
    draw = ImageDraw.Draw(img)
    draw.line(points, fill=(200, 60, 40), width=2)
    draw.text((pad, 0), f"{high:.4g}", fill=(90, 90, 90))
    draw.text((pad, h - 12), f"{low:.4g}", fill=(90, 90, 90))
    return img


def _schedule_row(name: str) -> tuple[gr.Textbox, gr.Image]:
    with gr.Row(equal_height=True):
        box = gr.Textbox(getattr(D, name), label=f"{name.replace('_', ' ')} — {HELP[name]}", scale=3,
                         elem_id=f"animation-{name.replace('_', '-')}")
        plot = gr.Image(None, show_label=False, interactive=False, height=60, scale=1, container=False,
                        elem_id=f"animation-{name.replace('_', '-')}-curve")
    return box, plot


def build(studio: Studio) -> None:
    c: dict[str, Any] = {}
    with gr.Row():
        with gr.Column(scale=3):
            c["mode"] = gr.Radio(MODE_LABELS, value=D.mode, label="Mode", elem_id="animation-mode")
            c["prompts"] = gr.Textbox(D.prompts, lines=4, elem_id="animation-prompts",
                                      label="Prompts by frame — one `frame: prompt` a line (or Deforum's JSON); "
                                            "`--neg` starts a negative")
            c["negative_prompt"] = gr.Textbox("", label="Negative prompt (every frame)", elem_id="animation-negative")
            with gr.Row():
                c["frames"] = gr.Slider(1, 240, value=D.frames, step=1, label="Frames", elem_id="animation-frames")
                c["fps"] = gr.Slider(1, 60, value=D.fps, step=1, label="Frames a second", elem_id="animation-fps")
                c["seed"] = gr.Number(-1, precision=0, label="Seed (-1 = random)", elem_id="animation-seed")
                c["seed_mode"] = gr.Dropdown(list(CHOICES["seed_mode"]), value=D.seed_mode, label="Seed mode",
                                             elem_id="animation-seed-mode")
            with gr.Row():
                c["scheduler"] = gr.Dropdown(scheduler_names(), value=D.scheduler, label="Sampler",
                                             elem_id="animation-scheduler")
                c["width"] = gr.Slider(0, 1024, value=0, step=8, label="Width (0 = the model's)",
                                       elem_id="animation-width")
                c["height"] = gr.Slider(0, 1024, value=0, step=8, label="Height (0 = the model's)",
                                        elem_id="animation-height")
                c["negative_presets"] = gr.Dropdown(studio.preset_names(), value=[], multiselect=True,
                                                    label="Negative presets", elem_id="animation-negative-presets")
            plots = {}
            with gr.Accordion("Camera (2D motion and preview)", open=False, elem_id="animation-camera"):
                for name in CAMERA:
                    c[name], plots[name] = _schedule_row(name)
                c["border"] = gr.Radio(list(CHOICES["border"]), value=D.border, label="Border",
                                       elem_id="animation-border")
            with gr.Accordion("Diffusion schedules", open=False, elem_id="animation-diffusion"):
                for name in DIFFUSION:
                    c[name], plots[name] = _schedule_row(name)
                c["interpolation"] = gr.Radio(list(CHOICES["interpolation"]), value=D.interpolation,
                                              label="In-betweens", elem_id="animation-interpolation")
            with gr.Accordion("Coherence, cadence, loops", open=False, elem_id="animation-more"):
                with gr.Row():
                    c["blend_prompts"] = gr.Checkbox(D.blend_prompts, label="Blend prompts between keyframes "
                                                     "(off: cut)", elem_id="animation-blend")
                    c["loop"] = gr.Radio(list(CHOICES["loop"]), value=D.loop, label="Loop", elem_id="animation-loop")
                with gr.Row():
                    c["coherence"] = gr.Dropdown(list(CHOICES["coherence"]), value=D.coherence,
                                                 label="Colour coherence", elem_id="animation-coherence")
                    c["coherence_strength"] = gr.Slider(0, 1, value=D.coherence_strength, step=0.05,
                                                        label="Coherence strength", elem_id="animation-coherence-strength")
                    c["reanchor_every"] = gr.Slider(0, 120, value=0, step=1, label="Re-anchor every N frames (0: never)",
                                                    elem_id="animation-reanchor")
                with gr.Row():
                    c["cadence"] = gr.Slider(*INTEGERS["cadence"], value=D.cadence, step=1,
                                             label="Cadence (2D: diffuse every Nth frame)", elem_id="animation-cadence")
                    c["end_blend"] = gr.Slider(0, 120, value=0, step=1, label="Frames pulled toward the end picture",
                                               elem_id="animation-end-blend")
                    c["formats"] = gr.CheckboxGroup(list(FORMATS), value=list(D.formats), label="Write",
                                                    elem_id="animation-formats")
            with gr.Accordion("Start / end pictures, video input, Deforum settings", open=False,
                              elem_id="animation-inputs"):
                with gr.Row():
                    start = gr.Image(type="filepath", label="Start picture (2D)", elem_id="animation-start")
                    end = gr.Image(type="filepath", label="End picture", elem_id="animation-end")
                with gr.Row():
                    video = gr.File(label="Video (video input mode)", file_types=["video"], type="filepath",
                                    elem_id="animation-video")
                    c["video_every"] = gr.Slider(*INTEGERS["video_every"], value=1, step=1,
                                                 label="Every Nth video frame", elem_id="animation-video-every")
                deforum = gr.File(label="Import a Deforum settings file", file_types=[".txt", ".json"],
                                  type="filepath", elem_id="animation-deforum")
            resume = gr.Textbox("", label="Resume (an animation's name; empty: a new one)", elem_id="animation-resume")
            with gr.Row():
                go = gr.Button("Animate", variant="primary", elem_id="animation-go")
                stop = gr.Button("Stop", variant="stop", elem_id="animation-stop")
        with gr.Column(scale=2):
            player = gr.Video(label="Animation", autoplay=True, loop=True, interactive=False, elem_id="animation-video-out")
            strip = gr.Gallery(label="Frames", columns=8, height=180, elem_id="animation-strip")
            status = gr.Markdown("", elem_id="animation-status")
            files = gr.File(label="Files", file_count="multiple", interactive=False, elem_id="animation-files")
    _wire_curves(c, plots)
    _wire_import(c, deforum, status)
    names = [f.name for f in dataclasses.fields(AnimationSettings)]
    controls = [c[n] for n in names]

    def animate(raw: dict, progress, request):
        yield from run_animation(studio, raw, progress, request)

    defaults = D.to_json()
    params = [(n, defaults[n]) for n in names] + [("start", None), ("end", None), ("video", None), ("resume", "")]
    go.click(event_function(animate, params, "Render an animation: the settings (as AnimationSettings), a start "
                            "and an end picture, a video (video mode), or the name of one to resume. Yields "
                            "(video, frames, status, files); the frames are saved under outputs/animations."),
             [*controls, start, end, video, resume], [player, strip, status, files], api_name="animate",
             **dispatched(studio))

    def stop_this_session(request: gr.Request) -> None:
        stop_job(studio, request)

    stop.click(stop_this_session, None, None, api_visibility="private", queue=False)


def _wire_curves(c: dict, plots: dict) -> None:
    for name, plot in plots.items():
        inputs = [c[name], c["frames"], c["seed"], c["interpolation"]]
        for trigger in (c[name], c["frames"], c["interpolation"]):
            trigger.change(curve, inputs, plot, api_visibility="private", queue=False, show_progress="hidden")


def _wire_import(c: dict, deforum: gr.File, status: gr.Markdown) -> None:
    keys = list(c)

    def read(path):
        if not path:
            return [gr.skip()] * (len(keys) + 1)
        try:
            with open(path, encoding="utf-8") as handle:
                raw, notes = from_deforum(handle.read())
        except (StudioError, OSError, UnicodeDecodeError) as exc:
            raise gr.Error(f"Could not import: {exc}") from None
        values = [raw[k] if k in raw else gr.skip() for k in keys]
        return [*values, "Imported " + ", ".join(sorted(raw)) + (". " + " ".join(notes) if notes else ".")]

    deforum.upload(read, deforum, [*(c[k] for k in keys), status], api_visibility="private", queue=False)


def run_animation(studio: Studio, raw: dict, progress: gr.Progress, request: gr.Request | None):
    """Begin (or resume) and render, yielding (video, frame strip, status, files) as frames finish."""
    from studio.animation.start import begin, reopen

    start, end, video, name = raw.pop("start"), raw.pop("end"), raw.pop("video"), (raw.pop("resume") or "").strip()
    user, session = who(request)
    try:
        animation = reopen(studio, name, login(request)) if name else begin(studio, raw, start, end, video,
                                                                           user=login(request))
    except StudioError as exc:
        raise gr.Error(str(exc)) from None
    total, shown = len(animation.plan), []
    progress((animation.done(), total), desc=f"{animation.folder.name}: frame {animation.done()}/{total}")
    sequence = Sequence(studio, user=user, session=session, save=False)
    try:
        for frame in animation.frames(sequence):
            shown = (shown + [str(frame.path)])[-MAX_STRIP:]
            text = f"**{animation.folder.name}**: frame {frame.index + 1}/{total} · about {frame.eta:.0f} s left"
            progress((frame.index + 1, total), desc=text.replace("**", ""))
            yield gr.skip(), list(shown), text, gr.skip()
        if animation.done() < total:
            yield (gr.skip(), gr.skip(), f"Stopped at frame {animation.done()}/{total}; the frames are kept. "
                   f"Resume with the name **{animation.folder.name}**.", gr.skip())
            return
        made = animation.videos()
    except StudioError as exc:
        raise gr.Error(f"{exc} The frames made so far are kept: resume with the name "
                       f"{animation.folder.name}.") from None
    except Exception as exc:  # noqa: BLE001 - the server keeps serving; the log has the trace
        log.exception("Animation %s failed", animation.folder.name)
        raise gr.Error(f"The animation stopped at frame {animation.done()}/{total}: {type(exc).__name__}: {exc}. "
                       f"The frames made so far are kept: resume with the name {animation.folder.name}.") from None
    yield (str(made["mp4"]) if "mp4" in made else None, gr.skip(),
           f"**{animation.folder.name}**: {total} frames at {animation.settings.fps} fps · {animation.folder}",
           [str(p) for p in made.values()])
