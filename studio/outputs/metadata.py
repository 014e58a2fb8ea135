"""Generation metadata stored inside PNG files.

Two text chunks are written: `parameters` in AUTOMATIC1111's "infotext" layout, so images
can be dropped into A1111, ComfyUI, Civitai and other tools that read it, and `studio`, a
JSON copy of the full request, so this app can restore every setting exactly.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from PIL import Image, PngImagePlugin, UnidentifiedImageError

__all__ = [
    "PARAMETERS_KEY",
    "JSON_KEY",
    "NEGATIVE_PREFIX",
    "format_parameters",
    "parse_parameters",
    "pnginfo",
    "read_metadata",
    "strict_json",
]

PARAMETERS_KEY = "parameters"  # A1111's PNG text key
JSON_KEY = "studio"  # our JSON chunk key
NEGATIVE_PREFIX = "Negative prompt:"

# Keys as A1111 writes them ("Steps", "CFG scale", "Schedule type", "Model hash"...).
# Kept strict so a prompt line such as "(masterpiece:1.2)" is not mistaken for fields.
_KEY = r"\w[\w \-/.]*?"
_KEY_RE = re.compile(rf"{_KEY}\Z")
# One "Key: value" item followed by a comma or the end of the line. A quoted value is a
# JSON string (A1111 quotes values that contain separators).
_ITEM_RE = re.compile(
    rf'\s*({_KEY})\s*:\s*("(?:\\.|[^\\"])*"(?=\s*(?:,|$))|[^,]*)\s*(?:,|$)'
)
# Characters that would break the "Key: value, Key: value" line if left bare: A1111 quotes a value
# with `,`, `:` or a newline (processing.py quote); `\r` and a leading `"` (which a reader would
# take for a quoted value) are quoted too. A `"` inside is left bare, as A1111 leaves it.
_NEEDS_QUOTES = re.compile(r'[,:\n\r]|^"')


def _format_value(value: object) -> str:
    """Render one field value the way A1111 does (7.0 -> "7"), quoting when needed."""
    if isinstance(value, bool):
        text = str(value)
    elif isinstance(value, float):
        if math.isfinite(value) and value.is_integer():
            text = str(int(value))
        else:
            text = repr(value)  # shortest text that reads back as the same float
    else:
        text = str(value)
    if _NEEDS_QUOTES.search(text) or text != text.strip():
        return json.dumps(text, ensure_ascii=False)
    return text


def format_parameters(prompt: str, negative_prompt: str, fields: dict[str, object]) -> str:
    """Build A1111 infotext: prompt lines, optional "Negative prompt: ..." line, then the
    "Key: value, ..." line in the dict's order (None values skipped).

    Raises ValueError for a key that could not be read back (it has ':' or ',' etc.).
    """
    items: list[str] = []
    for key, value in fields.items():
        if value is None:
            continue
        if not _KEY_RE.match(key) or key != key.strip():
            raise ValueError(f"metadata field name {key!r} cannot be written in infotext")
        items.append(f"{key}: {_format_value(value)}")

    # The negative line is written even when empty (A1111 leaves it out): ComfyUI's importer needs
    # it, and every reader takes an empty one as no negative prompt.
    text = prompt + (f"\n{NEGATIVE_PREFIX} {negative_prompt}" if negative_prompt else f"\n{NEGATIVE_PREFIX}")
    if items:
        text += "\n" + ", ".join(items)
    return text


def add_keys(parameters: str, keys: dict[str, object]) -> str:
    """A1111 infotext with `keys` added (or replacing the same keys), `Version` kept last: how a
    picture made from another (an upscale, a grid, a detailed or tiled redraw) records both."""
    prompt, negative, fields = parse_parameters(parameters)
    version = fields.pop("Version", None)
    return format_parameters(prompt, negative, {**fields, **keys, "Version": version})


def _parse_fields(line: str) -> dict[str, str] | None:
    """Parse a whole "Key: value, ..." line, or return None if any part doesn't fit."""
    stripped = line.strip()
    if not stripped:
        return None
    fields: dict[str, str] = {}
    pos = 0
    while pos < len(stripped):
        match = _ITEM_RE.match(stripped, pos)
        if match is None or match.end() == pos:
            return None
        key, raw = match.group(1).strip(), match.group(2).strip()
        if len(raw) >= 2 and raw.startswith('"') and raw.endswith('"'):
            try:
                raw = json.loads(raw)
            except json.JSONDecodeError:
                pass  # keep the text as written rather than lose it
        fields[key] = str(raw)
        pos = match.end()
    return fields or None


def parse_parameters(text: str) -> tuple[str, str, dict[str, str]]:
    """Split infotext back into (prompt, negative_prompt, fields as strings).

    The inverse of format_parameters. The last non-blank line counts as the fields line
    only if it is not the first line, not the negative prompt, and parses completely.
    """
    lines = text.split("\n")
    fields: dict[str, str] = {}

    last = len(lines) - 1
    while last > 0 and not lines[last].strip():
        last -= 1
    if last > 0 and not lines[last].startswith(NEGATIVE_PREFIX):
        parsed = _parse_fields(lines[last])
        if parsed is not None:
            fields = parsed
            lines = lines[:last]

    negative_prompt = ""
    for index, line in enumerate(lines):
        if line.startswith(NEGATIVE_PREFIX):
            first = line[len(NEGATIVE_PREFIX):]
            if first.startswith(" "):
                first = first[1:]
            negative_prompt = "\n".join([first, *lines[index + 1:]])
            lines = lines[:index]
            break
    return "\n".join(lines), negative_prompt, fields


def pnginfo(parameters: str, data: dict[str, Any]) -> PngImagePlugin.PngInfo:
    """PNG text chunks for Image.save(..., pnginfo=...): infotext plus the JSON record.

    iTXt is used because it is UTF-8 (tEXt is Latin-1), so any prompt survives.
    """
    info = PngImagePlugin.PngInfo()
    info.add_itxt(PARAMETERS_KEY, parameters)
    info.add_itxt(JSON_KEY, json.dumps(strict_json(data), sort_keys=True, ensure_ascii=False, allow_nan=False))
    return info


def strict_json(value: Any) -> Any:
    """A value every JSON reader accepts (browsers' JSON.parse included): tuples as lists, numpy
    values as numbers, other objects as text, and non-finite floats (a scheduler's
    lambda_min_clipped = -inf) as the strings "inf", "-inf" and "nan", which float() reads back."""
    if isinstance(value, dict):
        return {str(k): strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    if hasattr(value, "tolist"):
        return strict_json(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _text_chunks(image: Image.Image) -> dict[str, Any]:
    """All text chunks, including ones stored after the image data."""
    text = getattr(image, "text", None)  # PNG only; loads chunks after IDAT too
    if isinstance(text, dict):
        return {**image.info, **text}
    return dict(image.info)


def read_metadata(
    path_or_image: str | Path | Image.Image,
) -> tuple[str | None, dict[str, Any] | None]:
    """Return (infotext, JSON record) from a PNG; either is None when absent.

    A JSON chunk that is damaged or not an object is reported as None rather than
    failing, so the infotext can still be used. An unreadable file raises ValueError.
    """
    if isinstance(path_or_image, Image.Image):
        chunks = _text_chunks(path_or_image)
    else:
        path = Path(path_or_image)
        try:
            with Image.open(path) as image:
                chunks = _text_chunks(image)
        except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
            raise ValueError(f"{path}: cannot read image metadata: {exc}") from exc

    parameters = chunks.get(PARAMETERS_KEY)
    parameters = str(parameters) if isinstance(parameters, str) else None

    data: dict[str, Any] | None = None
    raw = chunks.get(JSON_KEY)
    if isinstance(raw, str):
        try:
            loaded = json.loads(raw)
        except json.JSONDecodeError:
            loaded = None
        if isinstance(loaded, dict):
            data = loaded
    return parameters, data
