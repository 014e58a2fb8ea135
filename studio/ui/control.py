"""The ControlNet panel of the generation tabs: up to three units, each with its control picture
(an upload, a sketch pad drawn with the mouse, or the tab's own input picture), a preprocessor and
its settings, a model from models/controlnet, weight, start/end, control and resize modes, and a
preview of the map it makes.

The panel's values reach the tab's event through a State (kept up to date by the controls'
change events), so they are not API parameters; programs send the request field `control`
instead: a list of unit objects (sd-webui-controlnet's fields, pictures as base64).

No torch or diffusers here.
"""

from __future__ import annotations

from typing import Any

import gradio as gr
import numpy as np

from studio.control.preprocessors import PREPROCESSORS, suggested
from studio.errors import StudioError
from studio.requests.control import CONTROL_MODES, MAX_UNITS, RESIZE_MODES
from studio.serving.studio import Studio

PARAM = "control_panel"        # the State's name among the event's inputs (not an API parameter)
SOURCES = (("upload", "an upload"), ("sketch", "the sketch pad"), ("input", "the tab's input picture"))
KEYS = ("enabled", "source", "image", "sketch", "module", "model", "weight", "guidance_start", "guidance_end",
        "control_mode", "resize_mode", "processor_res", "threshold_a", "threshold_b", "pixel_perfect")
SKETCH_SIZE = 512


def _models(studio: Studio, rescan: bool = False) -> list[str]:
    return studio.names("controlnet", rescan)


def _sketch_picture(value: Any) -> np.ndarray | None:
    """The sketch pad's drawing (white strokes on its black canvas, what scribble models take) as
    RGB; None when nothing is drawn."""
    if not isinstance(value, dict) or value.get("composite") is None:
        return None
    drawn = np.asarray(value["composite"])
    drawn = drawn[..., :3] if drawn.ndim == 3 else np.repeat(drawn[..., None], 3, axis=2)
    return np.ascontiguousarray(drawn, dtype=np.uint8) if drawn.any() else None


def to_unit(value: dict | None) -> dict | None:
    """A unit's panel values as the request field's unit object; None when off."""
    if not value or not value.get("enabled"):
        return None
    unit = {k: value.get(k) for k in KEYS if k not in ("source", "image", "sketch")}
    source = value.get("source")
    if source == "sketch":
        unit["image"] = _sketch_picture(value.get("sketch"))
        if unit["image"] is None:
            raise gr.Error("ControlNet: the sketch pad is empty; draw on it, or pick another source.")
    elif source == "upload":
        unit["image"] = value.get("image")
        if unit["image"] is None:
            raise gr.Error("ControlNet: upload a control picture, or pick another source.")
    return unit


def panel_units(values: list | None) -> list[dict]:
    """The panel's State as the request field's units (enabled ones only)."""
    return [u for u in (to_unit(v) for v in values or []) if u is not None]


def _unit(i: int, tab: str, studio: Studio, state: gr.State, own_picture: bool) -> list:
    p = f"{tab}-control-{i}"
    first = PREPROCESSORS["canny"]
    with gr.Row():
        enabled = gr.Checkbox(False, label="Enable", elem_id=f"{p}-enabled")
        sources = SOURCES if own_picture else SOURCES[:2]
        source = gr.Radio([(label, value) for value, label in sources], value="upload", label="Control picture from",
                          elem_id=f"{p}-source")
    with gr.Row():
        image = gr.Image(type="numpy", image_mode="RGB", label="Control picture", sources=["upload", "clipboard"],
                         elem_id=f"{p}-image", height=360)
        sketch = gr.Sketchpad(_black_canvas(), type="numpy", image_mode="RGBA", label="Sketch pad (white strokes on black)",
                              canvas_size=(SKETCH_SIZE, SKETCH_SIZE), layers=False, elem_id=f"{p}-sketch",
                              brush=gr.Brush(colors=["#ffffff"], color_mode="fixed", default_size=12),
                              height=360)
        shown = gr.Image(label="Preprocessed map", interactive=False, elem_id=f"{p}-map", height=360)
    with gr.Row():
        module = gr.Dropdown([(pre.label, name) for name, pre in PREPROCESSORS.items()], value="canny",
                             label="Preprocessor", elem_id=f"{p}-module")
        model = gr.Dropdown(_models(studio), value=None, label="Model", info="from models/controlnet",
                            elem_id=f"{p}-model")
    with gr.Row():
        weight = gr.Slider(0.0, 2.0, value=1.0, step=0.05, label="Weight", elem_id=f"{p}-weight")
        start = gr.Slider(0.0, 1.0, value=0.0, step=0.01, label="Starting step", elem_id=f"{p}-start")
        end = gr.Slider(0.0, 1.0, value=1.0, step=0.01, label="Ending step", elem_id=f"{p}-end")
    with gr.Row():
        mode = gr.Radio([(title, name) for name, title, _ in CONTROL_MODES], value="balanced", label="Control mode",
                        elem_id=f"{p}-mode")
        resize = gr.Radio([(title, name) for name, title, _ in RESIZE_MODES], value="crop and resize",
                          label="Resize mode", elem_id=f"{p}-resize")
    with gr.Row():
        res = gr.Slider(64, 2048, value=512, step=8, label="Preprocessor resolution", elem_id=f"{p}-res")
        a = gr.Slider(first.a.low, first.a.high, value=first.a.default, step=first.a.step, label=first.a.label,
                      elem_id=f"{p}-a")
        b = gr.Slider(first.b.low, first.b.high, value=first.b.default, step=first.b.step, label=first.b.label,
                      elem_id=f"{p}-b")
        perfect = gr.Checkbox(False, label="Pixel perfect", elem_id=f"{p}-pixel-perfect")
    preview = gr.Button("Preview the map", elem_id=f"{p}-preview", size="sm")
    widgets = [enabled, source, image, sketch, module, model, weight, start, end, mode, resize, res, a, b, perfect]
    pending = gr.State(None)        # thresholds PNG Info put back, for the preprocessor it set (_sliders)

    def keep(values, *unit):
        values = list(values or [None] * MAX_UNITS)
        values[i - 1] = dict(zip(KEYS, unit))
        return values

    # the sketch pad tells of a stroke by `input` (its `change` waits for a new picture)
    for event in [w.change for w in widgets] + [sketch.input]:
        event(keep, [state, *widgets], state, api_visibility="private", queue=False, show_progress="hidden")
    module.change(_sliders, [module, pending], [a, b, res, pending], api_visibility="private", queue=False)
    model.input(lambda m, src, now: suggested(m, src == "sketch") or now, [model, source, module], module,
                api_visibility="private", queue=False)
    model.focus(lambda: gr.Dropdown(choices=_models(studio, rescan=True)), None, model,
                api_visibility="private", queue=False)

    def show(*unit):
        values = dict(zip(KEYS, unit))
        values["enabled"] = True
        try:
            made = to_unit(values)
            if made is None or made.get("image") is None:
                raise gr.Error("The map is made from the tab's input picture when you generate; pick an "
                               "upload or the sketch pad to preview it here.")
            return studio.detect(made["module"], made["image"], processor_res=made["processor_res"],
                                 threshold_a=made["threshold_a"], threshold_b=made["threshold_b"],
                                 resize_mode=made["resize_mode"], pixel_perfect=bool(made["pixel_perfect"]))
        except StudioError as exc:
            raise gr.Error(str(exc)) from None

    preview.click(show, widgets, shown, api_visibility="private", queue=False)
    return widgets, pending


def _black_canvas() -> dict:
    return {"background": np.zeros((SKETCH_SIZE, SKETCH_SIZE, 4), np.uint8) + np.uint8([0, 0, 0, 255]),
            "layers": [], "composite": None}


def _sliders(name: str, pending: dict | None = None):
    """Threshold A/B as the preprocessor names and bounds them (hidden when it has none): at its
    defaults, or at what PNG Info put back for this preprocessor (`pending`, then cleared)."""
    pre = PREPROCESSORS.get(name)
    if pre is None:
        return gr.skip(), gr.skip(), gr.skip(), None
    kept = pending if isinstance(pending, dict) and pending.get("module") == name else {}
    out = []
    for s, key in ((pre.a, "threshold_a"), (pre.b, "threshold_b")):
        value = kept.get(key)
        if s is not None and not (isinstance(value, (int, float)) and s.low <= value <= s.high):
            value = s.default
        out.append(gr.Slider(visible=False, value=-1, minimum=-1) if s is None else
                   gr.Slider(minimum=s.low, maximum=s.high, value=value, step=s.step, label=s.label, visible=True))
    return *out, gr.Slider(visible=pre.resolution), None


def panel(tab: str, studio: Studio) -> tuple[gr.State, list, tuple[list, Any]]:
    """The panel (a closed accordion); returns the State its values are kept in, every unit's
    controls (a Generate reads them all at its click: `collect`), and what PNG Info fills
    (`restored`)."""
    state = gr.State([None] * MAX_UNITS)
    widgets, pendings = [], []
    with gr.Accordion("ControlNet: place things with a picture, a sketch or edges", open=False,
                      elem_id=f"{tab}-control-panel"):
        with gr.Tabs():
            for i in range(1, MAX_UNITS + 1):
                with gr.Tab(f"Unit {i}", elem_id=f"{tab}-control-tab-{i}"):
                    made, pending = _unit(i, tab, studio, state, own_picture=tab != "txt2img")
                    widgets += made
                    pendings.append(pending)
    return state, widgets, ([*widgets, *pendings], lambda units: restored(units, _models(studio)))


def restored(units: Any, models: list[str]) -> list:
    """A picture's recorded units (their settings; the record keeps no pictures) back in the panel,
    in `panel`'s order (every unit's controls, then every unit's pending thresholds): each recorded
    unit enabled with its settings, its control picture left for the artist to give again (the
    picture source is left as it is); a model this studio does not have is left unset; the other
    units off."""
    units = [u for u in units if isinstance(u, dict)] if isinstance(units, list) else []
    values, pendings = [], []
    for i in range(MAX_UNITS):
        u = units[i] if i < len(units) else None
        if u is None:
            values += [False] + [gr.skip()] * (len(KEYS) - 1)
            pendings.append(gr.skip())
            continue
        name = str(u.get("model") or "").rsplit(" [", 1)[0]
        pre = PREPROCESSORS.get(u.get("module"))
        chosen = {**{k: u.get(k) for k in KEYS}, "enabled": True, "source": None, "image": None, "sketch": None,
                  "model": name if name in models else None, "module": u.get("module") if pre else None,
                  "guidance_start": u.get("start"), "guidance_end": u.get("end")}
        for key, s in (("threshold_a", pre and pre.a), ("threshold_b", pre and pre.b)):
            value = chosen[key]      # -1 (the preprocessor's default) or out of its range: _sliders sets it
            chosen[key] = value if s and isinstance(value, (int, float)) and s.low <= value <= s.high else None
        values += [gr.skip() if chosen[k] is None else chosen[k] for k in KEYS]
        pendings.append({"module": u.get("module"), "threshold_a": u.get("threshold_a"),
                         "threshold_b": u.get("threshold_b")})
    return values + pendings


def collect(*values) -> list[dict]:
    """Every unit's controls' values (as `panel` lists them) as the State keeps them."""
    return [dict(zip(KEYS, values[i:i + len(KEYS)])) for i in range(0, len(values), len(KEYS))]
