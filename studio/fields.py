"""Checks of single raw values at the boundary: numbers, ranges, text and names.

Every form the studio takes (a generation request, an animation, a LoRA training run, an
upscale, a history search) gets its values from widgets, JSON or gradio_client, so strings,
floats, bools and None are all possible. These functions turn one such value into a trusted one
or raise InvalidRequest with a sentence that names the field; the forms are built from them.
"""

from __future__ import annotations

import math
from typing import Any

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
        raise InvalidRequest(f"{name} must be a number, got {value!r}.") from None
    if not math.isfinite(parsed):
        raise InvalidRequest(f"{name} must be a finite number, got {value!r}.")
    if integer:
        if parsed != int(parsed):
            raise InvalidRequest(f"{name} must be a whole number, got {value!r}.")
        return int(parsed)
    return parsed


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
