"""The axes of an X/Y/Z plot: a table of axis types, each naming the request field it sets, how
its values are read, and how a value is labelled on the grid. A field declared with `axis` in the
request's table (or the hires fix's) is an axis of its own; the special ones are below.

Values use AUTOMATIC1111's syntax, read by regular expressions (never evaluated):
    1, 2, 3              a list (comma separated; "quoted, values" keep their commas)
    1-5                  every whole number from 1 to 5 (whole-number axes)
    1-10 (+2)            1, 3, 5, 7, 9: from 1 to 10 in steps of 2 (also (-2) counting down)
    10-100 [5]           5 values evenly spaced from 10 to 100 (rounded on whole-number axes)
A range is sized before it is made, so `1-999999999` is refused without building it.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from typing import Any, Callable

from studio.errors import InvalidRequest
from studio.fields import Choice, Field, Number
from studio.requests import request_fields
from studio.requests.hires import hires_fields

MAX_VALUES = 64                 # values on one axis

_NUM = r"[+-]?\d+(?:\.\d+)?"
_RANGE = re.compile(rf"^\s*({_NUM})\s*-\s*({_NUM})\s*(?:\(\s*([+-]\s*\d+(?:\.\d+)?)\s*\)|\[\s*(\d+)\s*\])?\s*$")


def split_values(text: str) -> list[str]:
    """A comma-separated list as A1111 reads it (CSV: quotes keep commas), items stripped."""
    if not isinstance(text, str):
        raise InvalidRequest("Axis values must be text, like 1, 2, 3 or 1-5.")
    rows = list(csv.reader([text.replace("\n", " ")], skipinitialspace=True))
    items = [item.strip() for item in (rows[0] if rows else [])]
    return [item for item in items if item]


def _span(axis: str, low: float, high: float, step: float | None, count: int | None, whole: bool) -> list:
    if count is not None:
        if not 1 <= count <= MAX_VALUES:
            raise InvalidRequest(f"{axis}: [{count}] asks for {count} values; 1 to {MAX_VALUES} per axis.")
        values = [low + (high - low) * i / (count - 1) for i in range(count)] if count > 1 else [low]
        return [int(round(v)) for v in values] if whole else [round(v, 6) for v in values]
    if step is None:
        if not whole:
            raise InvalidRequest(f"{axis}: a range of decimals needs a step or a count, like "
                                 f"{low:g}-{high:g} (+0.5) or {low:g}-{high:g} [5].")
        step = 1 if high >= low else -1
    if step == 0 or (high - low) * step < 0:
        raise InvalidRequest(f"{axis}: the step {step:+g} never gets from {low:g} to {high:g}.")
    n = math.floor((high - low) / step + 1e-9) + 1
    if n > MAX_VALUES:
        raise InvalidRequest(f"{axis}: {low:g}-{high:g} in steps of {step:g} is {n} values; at most {MAX_VALUES}.")
    values = [low + i * step for i in range(n)]
    return [int(round(v)) for v in values] if whole else [round(v, 6) for v in values]


def numbers(axis: str, text: str, whole: bool) -> list:
    """Numbers from a list whose items may be ranges."""
    out: list = []
    for item in split_values(text):
        match = _RANGE.match(item)
        if match:
            low, high, step, count = match.groups()
            low_n, high_n = float(low), float(high)
            if whole and (low_n != int(low_n) or high_n != int(high_n)):
                raise InvalidRequest(f"{axis}: {item!r} — this axis takes whole numbers.")
            out += _span(axis, low_n, high_n, float(step.replace(" ", "")) if step else None,
                         int(count) if count else None, whole)
        else:
            try:
                value = float(item)
            except ValueError:
                raise InvalidRequest(f"{axis}: {item!r} is not a number or a range like 1-5, "
                                     "1-10 (+2) or 10-100 [5].") from None
            if not math.isfinite(value) or (whole and value != int(value)):
                raise InvalidRequest(f"{axis}: {item!r} — this axis takes {'whole ' if whole else ''}numbers.")
            out.append(int(value) if whole else value)
        if len(out) > MAX_VALUES:
            raise InvalidRequest(f"{axis}: more than {MAX_VALUES} values.")
    return out


def sizes(axis: str, text: str) -> list[tuple[int, int]]:
    """Sizes as WIDTHxHEIGHT (or one number for a square)."""
    out = []
    for item in split_values(text):
        width, _, height = item.lower().replace(" ", "").partition("x")
        if not width.isdigit() or not (height or width).isdigit():
            raise InvalidRequest(f"{axis}: {item!r} is not a size like 512x768 or 512.")
        out.append((int(width), int(height or width)))
    return out


def names(axis: str, text: str, known: list[str]) -> list[str]:
    """Names picked from a list, matched without regard to case; an unknown one is named with
    what this studio has."""
    out = []
    by_lower = {k.lower(): k for k in known}
    for item in split_values(text):
        if item.lower() not in by_lower:
            raise InvalidRequest(f"{axis}: unknown {item!r}. Known: {', '.join(known) or 'none'}.")
        out.append(by_lower[item.lower()])
    return out


# -- the table ----------------------------------------------------------------------------------

Apply = Callable[[dict, Any], None]       # sets a value on the raw fields of a cell


def _set(field: str) -> Apply:
    def apply(raw: dict, value: Any) -> None:
        raw[field] = value
    return apply


def _set_size(raw: dict, value: tuple[int, int]) -> None:
    raw["width"], raw["height"] = value


def _search_replace(raw: dict, value: tuple[str, str]) -> None:
    """Prompt S/R: the first value is what is searched; each cell puts its value in its place,
    in the prompt and the negative prompt (as A1111 does)."""
    search, replacement = value
    for key in ("prompt", "negative_prompt"):
        raw[key] = str(raw.get(key) or "").replace(search, replacement)


def _lora_weight(raw: dict, value: float) -> None:
    rows = [list(row) for row in raw.get("loras") or []]
    if not rows:
        raise InvalidRequest("LoRA weight axis: add a LoRA to the request first; the axis sets its weight.")
    raw["loras"] = [[row[0], value] for row in rows]


def _first_unit(key: str) -> Apply:
    """A ControlNet axis sets the first unit's `key` (as sd-webui-controlnet's axes do)."""
    def apply(raw: dict, value: Any) -> None:
        units = [u if isinstance(u, dict) else {**u.settings(), "image": u.image, "mask": u.mask}
                 for u in raw.get("control") or []]
        if not units:
            raise InvalidRequest("ControlNet axes set the first unit: enable a ControlNet unit first.")
        raw["control"] = [{**units[0], key: value}, *units[1:]]
    return apply


def _set_hires(field: str) -> Apply:
    """A hires setting turns the hires fix on for the cell."""
    def apply(raw: dict, value: Any) -> None:
        raw["hires"], raw[field] = True, value
    return apply


def _preset(raw: dict, value: str) -> None:
    raw["negative_presets"] = [] if value == NO_PRESET else [value]


NO_PRESET = "none"


@dataclass(frozen=True)
class AxisType:
    name: str
    parse: Callable[[str, str, dict], list]    # (axis name, text, what the studio has) -> values
    apply: Apply
    label: Callable[[Any], str]
    choices: str = ""                          # the studio list its values come from, if any

    def values(self, text: str, known: dict[str, list[str]]) -> list:
        values = self.parse(self.name, text, known)
        if not values:
            raise InvalidRequest(f"{self.name}: no values; write them like 1, 2, 3 or 1-5.")
        return values


def _numeric(name: str, field: str, whole: bool, apply: Apply | None = None) -> AxisType:
    return AxisType(name, lambda axis, text, known: numbers(axis, text, whole), apply or _set(field),
                    lambda v: f"{name}: {v:g}")


def _choice(name: str, field: str, kind: str, apply: Apply | None = None) -> AxisType:
    return AxisType(name, lambda axis, text, known: names(axis, text, known[kind]), apply or _set(field),
                    str, kind)


def _prompt_sr(axis: str, text: str, known: dict) -> list[tuple[str, str]]:
    items = split_values(text)
    return [(items[0], item) for item in items] if items else []


def from_field(f: Field, apply: Apply | None = None) -> AxisType:
    """The axis of a declared field (`axis` in its table): numbers, names from its catalog, or
    one of its fixed options."""
    if isinstance(f.kind, Number):
        return _numeric(f.axis_name, f.name, f.kind.integer, apply)
    if isinstance(f.kind, Choice) and f.kind.options:
        options = f.kind.values()
        return AxisType(f.axis_name, lambda axis, text, known: names(axis, text, options), apply or _set(f.name),
                        lambda v: f"{f.axis_name}: {v}")
    return _choice(f.axis_name, f.name, f.kind.catalog, apply)


# axes that are not one field set to a value
SPECIAL = (
    AxisType("Prompt S/R", _prompt_sr, _search_replace, lambda v: v[1]),
    AxisType("Size", lambda axis, text, known: sizes(axis, text), _set_size, lambda v: f"{v[0]}x{v[1]}"),
    AxisType("LoRA weight", lambda axis, text, known: numbers(axis, text, False), _lora_weight,
             lambda v: f"LoRA weight: {v:g}"),
    _choice("Negative preset", "negative_presets", "presets", _preset),
    _numeric("ControlNet weight", "", False, _first_unit("weight")),
    _numeric("ControlNet start", "", False, _first_unit("guidance_start")),
    _numeric("ControlNet end", "", False, _first_unit("guidance_end")),
    _choice("ControlNet preprocessor", "", "preprocessors", _first_unit("module")),
)
# the order the axis list shows them in; axes of fields declared later come after these
ORDER = ("Seed", "Variation seed", "Variation strength", "Steps", "CFG scale", "Prompt S/R", "Sampler", "Size",
         "Clip skip", "Checkpoint", "VAE", "LoRA weight", "Negative preset", "Style", "Feature cache", "Strength",
         "Hires upscale", "Hires steps", "Hires strength", "Hires upscaler", "ControlNet weight", "ControlNet start",
         "ControlNet end", "ControlNet preprocessor")


def _axis_types() -> dict[str, AxisType]:
    """Every field declared as an axis (a hires fix field turns the fix on for its cell), and the
    special ones, in ORDER."""
    found = [*(from_field(f) for f in request_fields() if f.axis),
             *(from_field(f, _set_hires(f.name)) for f in hires_fields() if f.axis), *SPECIAL]
    rank = {name: i for i, name in enumerate(ORDER)}
    return {a.name: a for a in sorted(found, key=lambda a: rank.get(a.name, len(ORDER)))}


AXIS_TYPES: dict[str, AxisType] = _axis_types()
NOTHING = "Nothing"
AXIS_NAMES = [NOTHING, *AXIS_TYPES]


@dataclass(frozen=True)
class Axis:
    type: AxisType
    text: str
    values: tuple

    @property
    def labels(self) -> list[str]:
        return [self.type.label(v) for v in self.values]


def read_axis(type_name: Any, text: Any, known: dict[str, list[str]]) -> Axis | None:
    """One axis from the type picked and the values typed; None for "Nothing" or no type."""
    if type_name in (None, "", NOTHING):
        return None
    if not isinstance(type_name, str) or type_name not in AXIS_TYPES:
        raise InvalidRequest(f"Unknown axis type {type_name!r}. Known: {', '.join(AXIS_NAMES)}.")
    kind = AXIS_TYPES[type_name]
    return Axis(kind, str(text or ""), tuple(kind.values(text if text is not None else "", known)))
