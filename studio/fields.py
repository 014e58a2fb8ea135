"""Fields: how one is declared, and the checks of single raw values at the boundary.

Every form the studio takes (a generation request, an animation, a LoRA training run, an
upscale, a history search) gets its values from widgets, JSON or gradio_client, so strings,
floats, bools and None are all possible. The check functions turn one such value into a trusted
one or raise InvalidRequest with a sentence that names the field; the forms are built from them.

A request field is declared once, as a `Field` on its dataclass (`declare`): its kind (how its
value is checked, which control shows it), default, label, help, the modes and the tab group that
show it, its A1111 infotext key and REST name, whether it is a plot axis. `table(cls)` lists the
declarations; the request's checks, the tabs' controls and events, the API parameters, the plot
axes, the infotext and PNG Info's restore are all built from it (studio/requests/request.py holds
the generation request's table).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from dataclasses import field as dc_field
from dataclasses import fields as dc_fields
from typing import Any, Callable, Sequence

from studio.errors import InvalidRequest

MAX_TEXT_CHARS = 10_000


def number(name: str, value: Any, *, integer: bool) -> float | int:
    """A number from a widget, JSON or text; never a bool, NaN or infinity."""
    if value is None or (isinstance(value, str) and not value.strip()):
        raise InvalidRequest(f"{name} is missing.")
    if isinstance(value, bool):
        raise InvalidRequest(f"{name} must be a number, got {value!r}.")
    try:
        parsed = float(value)
    except (TypeError, ValueError):
        raise InvalidRequest(f"{name} must be a number, got {_short(value)}.") from None
    except OverflowError:        # a whole number too large for any float
        raise InvalidRequest(f"{name} must be a number of a sensible size, got one of {len(str(value))} "
                             "digits.") from None
    if not math.isfinite(parsed):
        raise InvalidRequest(f"{name} must be a finite number, got {value!r}.")
    if integer:
        if parsed != int(parsed):
            raise InvalidRequest(f"{name} must be a whole number, got {value!r}.")
        return int(parsed)
    return parsed


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def in_range(name: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise InvalidRequest(f"{name} must be between {low:g} and {high:g}, got {value:g}.")


def bounded(name: str, value: Any, low: float, high: float, *, integer: bool) -> float | int:
    """`number`, then `in_range`: the usual pair for a slider's value."""
    parsed = number(name, value, integer=integer)
    in_range(name, parsed, low, high)
    return parsed


def text(name: str, value: Any, limit: int = MAX_TEXT_CHARS) -> str:
    """Text or nothing (""); control characters other than newline and tab are dropped (they
    cannot mean anything)."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidRequest(f"{name} must be text.")
    if len(value) > limit:
        raise InvalidRequest(f"{name} is {len(value)} characters long; the limit is {limit}.")
    return "".join(ch for ch in value if ch in "\n\t" or ch.isprintable())


def empty(value: Any) -> bool:
    """None, "" or an empty list/tuple (never compares arrays or other objects with ==)."""
    return value is None or (isinstance(value, str) and value == "") or (
        isinstance(value, (list, tuple)) and len(value) == 0)


def or_zero(value: Any) -> Any:
    """0 (the model's or input's own size) for nothing; anything else as given."""
    return 0 if value is None or (isinstance(value, str) and not value.strip()) else value


def word(label: str, value: Any, default: str | None, blank: tuple[str, ...] = ("",)) -> str | None:
    """A name picked from a list: text or nothing (`default`, also for any of `blank`); any
    other type is refused before it is compared with anything."""
    if value is None:
        return default
    if not isinstance(value, str):
        raise InvalidRequest(f"{label} must be a name (text), got {type(value).__name__}.")
    return default if value.strip() in blank else value


def names(name: str, value: Any) -> tuple[str, ...]:
    """A list of names (one name alone is a list of one); blank ones are dropped."""
    if empty(value):
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise InvalidRequest(f"{name} must be a list of names.")
    return tuple(v for v in value if v.strip())


# ---------------------------------------------------------------------------------------------
# Declaring a field once

@dataclass(frozen=True)
class Context:
    """What a check needs besides the value: the request's mode, this studio's limits (a
    `Limits`) and the names it knows by catalog ("presets", "styles", "loras", "vaes"...; None:
    not checked)."""
    mode: str = "txt2img"
    limits: Any = None
    known: dict[str, Sequence[str] | None] = dc_field(default_factory=dict)


class Kind:
    """How a raw value becomes a trusted one (`parse`), and which control shows it (`widget`:
    text, slider, number, dropdown, radio, multiselect, checkbox; "" = the tab's own)."""
    widget = ""

    def parse(self, f: "Field", value: Any, ctx: Context) -> Any:
        raise NotImplementedError


@dataclass(frozen=True)
class Text(Kind):
    lines: int = 1
    placeholder: str = ""
    widget = "text"

    def parse(self, f, value, ctx):
        return text(f.label, value)


@dataclass(frozen=True)
class Number(Kind):
    """A number in [low, high]; `cap` names the Limits attribute that lowers `high` for this
    studio; `unset` is the one value outside the range that means "choose for me" (a seed's -1);
    `refused`: values in range that mean nothing useful, with why. The control: a slider with
    `step` up to `ui_high` (default: high), or a number box."""
    low: float
    high: float
    integer: bool = False
    step: float | None = None
    cap: str | None = None
    unset: float | None = None
    refused: tuple[tuple[float, str], ...] = ()
    ui_high: float | None = None
    box: bool = False

    @property
    def widget(self) -> str:
        return "number" if self.box else "slider"

    def high_for(self, limits: Any) -> float:
        return min(self.high, getattr(limits, self.cap)) if self.cap and limits is not None else self.high

    def parse(self, f, value, ctx):
        value = number(f.label, value, integer=self.integer)
        if self.unset is not None and value == self.unset:
            return value
        in_range(f.label, value, self.low, self.high_for(ctx.limits))
        for bad, why in self.refused:
            if value == bad:
                raise InvalidRequest(why)
        return value


@dataclass(frozen=True)
class Choice(Kind):
    """One name from a fixed list (`options`: (value, label) pairs or values) or from a catalog
    of this studio (`catalog`); `blank` values mean nothing (None), shown as `blank[-1]`.
    `where`: the folder a missing file belongs in (named in the message, with `hint` after it)."""
    options: tuple = ()
    catalog: str | None = None
    blank: tuple[str, ...] = ()
    noun: str = ""
    where: str = ""
    hint: str = ""
    radio: bool = False

    @property
    def widget(self) -> str:
        return "radio" if self.radio else "dropdown"

    def values(self) -> list[str]:
        return [o[0] if isinstance(o, tuple) else o for o in self.options]

    def parse(self, f, value, ctx):
        default = None if self.blank else f.default
        value = word(f.label, value, default, self.blank or ("",))
        if value is None:
            return None
        known = self.values() if self.options else ctx.known.get(self.catalog or "")
        if known is None or value in known:
            return value
        noun = self.noun or f.label.lower()
        if self.where:
            raise InvalidRequest(f"Unknown {noun} {value!r}: put it in {self.where} and press refresh "
                                 f"(available: {', '.join(known) or 'none'}).{' ' + self.hint if self.hint else ''}")
        if self.options and len(known) <= 3:
            names = [repr(v) for v in known]
            listed = " or ".join(names) if len(names) <= 2 else ", ".join(names[:-1]) + " or " + names[-1]
            raise InvalidRequest(f"{f.label} must be {listed}, got {value!r}.")
        raise InvalidRequest(f"Unknown {noun} {value!r}. Known: {', '.join(known)}.")


@dataclass(frozen=True)
class Names(Kind):
    """Several names from a catalog (one alone is a list of one)."""
    catalog: str
    noun: str = ""
    widget = "multiselect"

    def parse(self, f, value, ctx):
        picked = names(f.label, value)
        known = ctx.known.get(self.catalog)
        for name in picked if known is not None else ():
            if name not in known:
                raise InvalidRequest(f"Unknown {self.noun or f.label.lower()} {name!r}. Known: {', '.join(known)}.")
        return picked


@dataclass(frozen=True)
class Flag(Kind):
    widget = "checkbox"

    def parse(self, f, value, ctx):
        if value in (None, ""):
            return f.default
        if not isinstance(value, (bool, int)) or isinstance(value, int) and value not in (0, 1):
            raise InvalidRequest(f"{f.label} must be true or false, got {value!r}.")
        return bool(value)


@dataclass(frozen=True)
class Custom(Kind):
    """A value read by its own function, `read(label, value, ctx)`; shown by the tab's own control."""
    read: Callable[[str, Any, Context], Any]

    def parse(self, f, value, ctx):
        return self.read(f.label, value, ctx)


@dataclass(frozen=True)
class Infotext:
    """The field in AUTOMATIC1111's `parameters` line: its key; written when the request's mode
    uses the field and its value is not the default (`always`: also at the default), and `when`
    holds; `show` turns the value into the text written, `read` a text back into the value
    (by default: the number, for a Number). `write=False`: the record writes the key itself from
    what was used (the seed drawn for -1, the size made)."""
    key: str
    always: bool = False
    when: Callable[[Any], bool] | None = None
    show: Callable[[Any], Any] | None = None
    read: Callable[[str], Any] | None = None
    write: bool = True


@dataclass(frozen=True)
class Field:
    """One request field, declared once: how it is checked (`kind`), its default, what an artist
    reads (`label`, `caption` when the control says more, `help`), which modes use it, where a
    tab shows it (`group`; "" = not shown: the API and callers only), its A1111 infotext key and
    REST body name, whether it is an X/Y/Z plot axis (named by its label), and the model families
    that read it (`families`: shown and written only while one is loaded; None: all). Widgets,
    request checks, API parameters, plot axes, the infotext and PNG Info's restore are built from it."""
    kind: Kind
    default: Any
    label: str
    caption: str = ""
    help: str = ""
    modes: tuple[str, ...] = ("txt2img", "img2img", "inpaint")
    tabs: tuple[str, ...] | None = None       # the tabs that show it, when fewer than its modes
    group: str = ""
    elem: str = ""
    infotext: Infotext | None = None
    rest: str | None = None
    axis: bool | str = False                  # True: an axis named by the label; a str: its name
    families: tuple[str, ...] | None = None   # the model families that read it (studio/families); None: all
    name: str = ""

    def parse(self, value: Any, ctx: Context) -> Any:
        return self.kind.parse(self, value, ctx)

    def shown_in(self, tab: str) -> bool:
        return bool(self.group) and tab in (self.tabs or self.modes)

    @property
    def axis_name(self) -> str | None:
        return (self.axis if isinstance(self.axis, str) else self.label) if self.axis else None

    @property
    def elem_id(self) -> str:
        return self.elem or self.name.replace("_", "-")

    def written(self, request: Any) -> Any:
        """The infotext value for `request`, or None when it is not written."""
        it = self.infotext
        if it is None or not it.write or getattr(request, "mode", None) not in self.modes:
            return None
        value = getattr(request, self.name)
        if (not it.always and value == self.default) or (it.when is not None and not it.when(request)):
            return None
        return it.show(value) if it.show else value

    def read_infotext(self, text: str) -> Any:
        """The value a picture's infotext gives; None when it cannot be read."""
        it = self.infotext
        if it is not None and it.read is not None:
            try:
                return it.read(text)
            except (ValueError, TypeError):
                return None
        if isinstance(self.kind, Number):
            try:
                value = float(text)
            except (TypeError, ValueError):
                return None
            if not math.isfinite(value):
                return None
            if self.kind.integer:
                return int(value) if value == int(value) else None
            return value
        return None


def declare(default: Any, kind: Kind, label: str, *, compare: bool = True, repr: bool = True, **spec: Any):
    """A dataclass field carrying its declaration (`Field`) as metadata."""
    return dc_field(default=default, compare=compare, repr=repr,
                    metadata={"field": Field(kind, default, label, **spec)})


def table(cls: type) -> tuple[Field, ...]:
    """The declared fields of a dataclass, in declaration order, each knowing its name."""
    return tuple(replace(f.metadata["field"], name=f.name) for f in dc_fields(cls) if "field" in f.metadata)


def take_table(declared: tuple[Field, ...], raw: dict, ctx: Context) -> dict | None:
    """A tool's fields (a table whose first field switches it on: hires fix, SD upscale, detailer)
    taken out of a tab's or a caller's `raw`, each checked (nothing sent: its default); None when
    the tool is off (its other fields are then not looked at)."""
    values = {f.name: raw.pop(f.name, None) for f in declared}
    switch, *rest = declared
    if not switch.parse(values[switch.name], ctx):
        return None
    return {f.name: f.parse(f.default if values[f.name] in (None, "") else values[f.name], ctx) for f in rest}
