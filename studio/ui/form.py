"""A tab's controls, built from the field tables (studio/requests/request.py, requests/hires.py):
a field's kind says which control shows it; its declaration gives the label, range, default,
help and group; LAYOUT says how a tab lays the groups out. A tab's event takes the controls in
the table's order, so its API parameters are the field names, in the same order everywhere.

No torch or diffusers here.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any, Callable

import gradio as gr
import numpy as np

from studio.errors import StudioError
from studio.fields import Choice, Field
from studio.requests import request_fields
from studio.requests.hires import LATENT, hires_fields
from studio.requests.detailer import detailer_fields
from studio.requests.face_restoration import face_fields
from studio.requests.sd_upscale import sd_upscale_fields
from studio.detailer.detectors import detector_names
from studio.samplers import scheduler_names
from studio.serving.studio import Studio
from studio.models.upscalers import BUILT_IN

# How a tab lays out the groups of its fields, in this order: (group, container, elem_id suffix).
# "column": one under another; "row": side by side; any other text: a closed accordion of that title.
# A field's group "name:part" puts it in a row with the fields of the same part, inside the group.
LAYOUT = (
    ("prompt", "column", ""),
    ("presets", "row", ""),
    ("sampling", "row", ""),
    ("size", "row", ""),
    ("seed", "row", ""),
    ("variation", "Variation seed", "variation-panel"),
    ("hires", "Hires fix", "hires-panel"),
    ("sd_upscale", "SD upscale", "sd-upscale-panel"),
    ("faces", "Restore faces", "faces-panel"),
    ("detailer", "Detailer (ADetailer)", "detailer-panel"),
    ("addons", "LoRA, VAE, clip skip and more", "addons"),
    ("variants", "column", ""),
    ("references", "Reference images: {image} in the prompt", "references-panel"),
    ("regions", "Regional prompts: ADDCOL / ADDROW in the prompt", "regions-panel"),
    ("control", "column", ""),
)
PROMPT_GROUPS = tuple(group for group, _, _ in LAYOUT)
# a tab's tools with fields of their own, after the request's
TOOLS = {"txt2img": lambda: (*hires_fields(), *face_fields(), *detailer_fields()),
         "img2img": lambda: (*sd_upscale_fields(), *face_fields(), *detailer_fields())}


def blank_shown(kind: Choice) -> str | None:
    """What a list control shows for "nothing" ("None" style, "Automatic" VAE)."""
    return kind.blank[-1] if kind.blank else None


def upscaler_choices(studio: Studio, rescan: bool = False) -> list[str]:
    return [*BUILT_IN, *studio.names("upscalers", rescan)]


# a catalog's choices as a control lists them (rescan: read the models folder again)
CATALOGS: dict[str, Callable[[Studio, bool], list]] = {
    "samplers": lambda studio, rescan: scheduler_names(),
    "presets": lambda studio, rescan: studio.preset_names(),
    "styles": lambda studio, rescan: studio.style_names(),
    "vaes": lambda studio, rescan: studio.names("vae", rescan),
    "hires_upscalers": lambda studio, rescan: [*LATENT, *upscaler_choices(studio, rescan)],
    "upscalers": upscaler_choices,
    "detectors": lambda studio, rescan: detector_names(studio.names("detectors", rescan)),
    "face_restorers": lambda studio, rescan: studio.names("face_restorers", rescan),
    "face_detectors": lambda studio, rescan: studio.names("detectors", rescan),
}
# lists read again when the control is opened
RESCANNED = ("vaes", "hires_upscalers", "upscalers", "detectors", "face_restorers", "face_detectors")


def choices(f: Field, studio: Studio, rescan: bool = False) -> list:
    kind = f.kind
    if isinstance(kind, Choice) and kind.options:
        return [(label, value) for value, label in kind.options] if isinstance(kind.options[0], tuple) \
            else list(kind.options)
    listed = CATALOGS[kind.catalog](studio, rescan)
    shown = blank_shown(kind) if isinstance(kind, Choice) else None
    return [shown, *listed] if shown else listed


def _loaded_arch(studio: Studio) -> str:
    try:
        return studio.model_info().arch
    except StudioError:
        return "sd"


def _common(f: Field, tab: str, extra: dict) -> dict:
    common = dict(label=f.caption or f.label, elem_id=f"{tab}-{f.elem_id}")
    if f.help:
        common["info"] = f.help
    return {**common, **extra}


def control(f: Field, tab: str, studio: Studio, **extra: Any):
    """The control that shows field `f` on `tab` (`extra`: what this tab shows differently); a
    field only some model families read is shown while one of them is loaded (studio/ui/fewstep.py)."""
    kind, widget = f.kind, f.kind.widget
    if f.families is not None:
        extra.setdefault("visible", _loaded_arch(studio) in f.families)
    if widget == "text":
        return gr.Textbox(extra.pop("value", f.default), lines=kind.lines, placeholder=kind.placeholder or None,
                          **_common(f, tab, extra))
    if widget in ("slider", "number"):
        high = min(kind.ui_high or kind.high, kind.high_for(studio.limits))
        value = extra.pop("value", f.default if kind.unset == f.default else min(f.default, high))
        if widget == "number":
            return gr.Number(value=value, precision=0 if kind.integer else None, **_common(f, tab, extra))
        return gr.Slider(extra.pop("minimum", kind.low), high, value=value, step=kind.step, **_common(f, tab, extra))
    if widget == "checkbox":
        return gr.Checkbox(f.default, **_common(f, tab, extra))
    if widget == "multiselect":
        return gr.Dropdown(choices(f, studio), value=list(f.default), multiselect=True, **_common(f, tab, extra))
    value = f.default if f.default is not None else blank_shown(kind)
    if widget == "radio":
        return gr.Radio(choices(f, studio), value=value, **_common(f, tab, extra))
    made = gr.Dropdown(choices(f, studio), value=value, **_common(f, tab, extra))
    if kind.catalog in RESCANNED:
        made.focus(lambda: gr.Dropdown(choices=choices(f, studio, rescan=True)), None, made,
                   api_visibility="private", queue=False)
    return made


# controls of a kind of their own: field name -> builder(field, tab, studio)
CUSTOM: dict[str, Callable] = {}


def custom(name: str):
    def register(builder: Callable) -> Callable:
        CUSTOM[name] = builder
        return builder
    return register


def _lora_choices(studio: Studio, rescan: bool = False) -> list[tuple[str, str]]:
    """(shown, name): each LoRA with the model family it was made for."""
    return [(f"{name}  ({family})" if family else name, name) for name, family in studio.lora_families(rescan)]


@custom("loras")
def lora_table(f: Field, tab: str, studio: Studio):
    """A LoRA picker from models/loras and the table of LoRAs with their weights."""
    add_lora = gr.Dropdown(_lora_choices(studio), value=None, label="Add a LoRA", elem_id=f"{tab}-add-lora",
                           info="from models/loras (with the model family it was made for); set its weight in the table")
    loras = gr.Dataframe(value=[], headers=["LoRA", "weight"], datatype=["str", "number"],
                         column_count=(2, "fixed"), row_count=(0, "dynamic"),
                         label="LoRAs (delete a row to remove one)", elem_id=f"{tab}-loras")

    def add(name, rows):
        rows = lora_rows(rows)
        if name and all(r[0] != name for r in rows):
            rows.append([name, 1.0])
        return rows, gr.Dropdown(value=None)

    add_lora.input(add, [add_lora, loras], [loras, add_lora], api_visibility="private", queue=False)
    add_lora.focus(lambda: gr.Dropdown(choices=_lora_choices(studio, rescan=True)), None,
                   add_lora, api_visibility="private", queue=False)
    return loras


@custom("control")
def control_panel(f: Field, tab: str, studio: Studio):
    """The ControlNet units' panel (studio/ui/control.py); the field itself, for programs, is a
    hidden JSON list of unit objects."""
    from studio.ui import control as panel
    state, widgets, restore = panel.panel(tab, studio)
    return (gr.JSON(None, visible=False, label=f.label, elem_id=f"{tab}-control"), {panel.PARAM: state},
            (widgets, panel.collect, state), restore)


@custom("regions_mask")
def region_painter(f: Field, tab: str, studio: Studio):
    """A black canvas to paint regions on, one brush colour a region (REGION_COLOURS' order)."""
    from studio.requests.parsers import REGION_COLOURS
    side = 512
    canvas = np.zeros((side, side, 4), np.uint8) + np.uint8([0, 0, 0, 255])
    colours = ["#%02x%02x%02x" % rgb for _, rgb in REGION_COLOURS]
    return gr.ImageEditor({"background": canvas, "layers": [], "composite": canvas}, type="numpy",
                          image_mode="RGBA", canvas_size=(side, side), layers=False, height=360,
                          brush=gr.Brush(colors=colours, color_mode="fixed", default_size=48),
                          **_common(f, tab, {"label": "Painted regions: the prompt's parts after the first are "
                                                      "red, green, blue... (ADDCOL between them)"}))


@custom("references")
def reference_files(f: Field, tab: str, studio: Studio):
    return gr.File(file_count="multiple", file_types=["image"], type="filepath", **_common(f, tab, {}))


def lora_rows(value) -> list[list]:
    """A Dataframe's value as a list of rows, whatever form Gradio hands it in."""
    if value is None:
        return []
    if hasattr(value, "values") and hasattr(value, "columns"):   # pandas
        return [list(r) for r in value.values.tolist()]
    if isinstance(value, dict):
        return [list(r) for r in value.get("data", [])]
    return [list(r) for r in value if r and any(v not in (None, "") for v in r)]


@dataclass
class Form:
    """A tab's fields (the request's its mode uses, then its tools') and the controls made so far."""
    tab: str
    studio: Studio
    fields: list[Field]
    extra: dict[str, dict] = field(default_factory=dict)     # field -> what this tab shows differently
    controls: dict[str, Any] = field(default_factory=dict)
    after: dict[str, Callable[[], None]] = field(default_factory=dict)   # field -> widgets made after it
    hidden: dict[str, Any] = field(default_factory=dict)     # the event's inputs that are no API parameter
    collectors: list[tuple] = field(default_factory=list)    # (controls, fn, State): read at a Generate
    # field -> (components, fill): how a picture's recorded value is put back into a panel (PNG Info)
    restores: dict[str, tuple[list, Callable]] = field(default_factory=dict)

    @classmethod
    def of(cls, tab: str, studio: Studio, **extra: dict) -> "Form":
        tools = TOOLS[tab]() if tab in TOOLS else ()
        return cls(tab, studio, [f for f in (*request_fields(), *tools) if tab in f.modes], extra)

    def shown(self, group: str) -> list[Field]:
        return [f for f in self.fields if f.shown_in(self.tab) and f.group.split(":")[0] == group]

    def lay_out(self, *groups: str) -> None:
        """The controls of these groups, each in its LAYOUT container."""
        for group, container, elem in LAYOUT:
            if group in groups and self.shown(group):
                with _container(container, f"{self.tab}-{elem}" if elem else None):
                    self._group(group, row=container == "row")
        for group in groups:
            if group not in PROMPT_GROUPS and self.shown(group):
                self._group(group, row=False)

    def _group(self, group: str, row: bool) -> None:
        for part, members in groupby(self.shown(group), key=lambda f: f.group):
            members = list(members)
            with gr.Row() if ":" in part and not row else _nothing():
                for f in members:
                    self._make(f)

    def _make(self, f: Field) -> None:
        builder = CUSTOM.get(f.name)
        made = builder(f, self.tab, self.studio) if builder else \
            control(f, self.tab, self.studio, **self.extra.get(f.name, {}))
        if isinstance(made, tuple):             # a control, States the UI keeps its values in, how
            made, states, collector, *restore = made    # a Generate fills them from the controls first,
            self.hidden.update(states)                  # and how PNG Info puts a record back
            self.collectors.append(collector)
            if restore:
                self.restores[f.name] = restore[0]
        self.controls[f.name] = made
        if f.name in self.after:
            self.after[f.name]()

    def click(self, button):
        """What a tab's run is attached to: the button's click — after the panels' States are
        filled from their controls as the page shows them at the click (unqueued), so a stroke
        just drawn is in, whatever the order the page's change events arrive in."""
        listener = button.click
        for controls, fn, state in self.collectors:
            listener = listener(fn, controls, state, queue=False, api_visibility="private",
                                show_progress="hidden").then
        return listener

    def inputs(self, *first: Any) -> list:
        """The event's inputs: `first` (the tab's own picture controls), then every control, in
        the table's order, then the States of panels (no API parameters: Gradio leaves them out)."""
        return [*first, *(self.controls[f.name] for f in self.fields if f.name in self.controls),
                *self.hidden.values()]

    def params(self, *first: str) -> list[tuple[str, Any]]:
        """The event's API parameters (name, default), matching `inputs`: the tab's own pictures
        are required, the fields default to their controls' values."""
        return [*((name, inspect.Parameter.empty) for name in first),
                *((f.name, None) for f in self.fields if f.name in self.controls),
                *((name, None) for name in self.hidden)]


def _container(kind: str, elem_id: str | None):
    if kind == "row":
        return gr.Row(elem_id=elem_id)
    if kind == "column":
        return _nothing()
    return gr.Accordion(kind, open=False, elem_id=elem_id)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
