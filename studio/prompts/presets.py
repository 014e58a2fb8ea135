"""Negative-prompt presets and prompt styles, loaded from TOML files in `presets/`.

Presets are data, not code, so users can add their own; every entry is validated at load
time so a typo shows up as one clear error naming the file and entry instead of a
confusing failure at generation time.
"""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from studio.errors import StudioError

__all__ = [
    "PresetError",
    "NegativePreset",
    "StylePreset",
    "Presets",
    "load_presets",
    "NEGATIVE_FILE",
    "STYLES_FILE",
    "PROMPT_PLACEHOLDER",
    "NO_STYLE",
]

NEGATIVE_FILE = "negative.toml"
STYLES_FILE = "styles.toml"
PROMPT_PLACEHOLDER = "{prompt}"
# The UI's dropdown shows this for "no style", so it can't be the name of a real style.
NO_STYLE = "None"

_NEGATIVE_KEYS = {"terms": True, "description": False}  # key -> required
_STYLE_KEYS = {"prompt": True, "negative": False}


class PresetError(StudioError, ValueError):
    """A preset file or a preset name is wrong; the message says which file and entry.

    A StudioError so the UI shows the message as is; a ValueError for plain callers.
    """


@dataclass(frozen=True)
class NegativePreset:
    """A named bundle of negative-prompt terms (e.g. "bad hands")."""

    name: str
    terms: str
    description: str = ""


@dataclass(frozen=True)
class StylePreset:
    """A prompt template that wraps the user's prompt, plus optional negative terms."""

    name: str
    prompt: str
    negative: str = ""

    def apply(self, prompt: str) -> str:
        """Put `prompt` into the template.

        Uses str.replace, not str.format: prompts often contain braces (e.g. "{a|b}"
        wildcards) that str.format would choke on or mangle.
        """
        return self.prompt.replace(PROMPT_PLACEHOLDER, prompt)


@dataclass(frozen=True)
class Presets:
    """All loaded presets, keyed by display name (file order preserved)."""

    negatives: dict[str, NegativePreset] = field(default_factory=dict)
    styles: dict[str, StylePreset] = field(default_factory=dict)
    wildcards: Path | None = None      # folder of NAME.txt files for __NAME__ in prompts

    def negative_names(self) -> list[str]:
        """Names for the UI's multi-select, in file order."""
        return list(self.negatives)

    def style_names(self) -> list[str]:
        """Names for the UI's style dropdown, in file order."""
        return list(self.styles)

    def resolve(
        self,
        prompt: str,
        negative_prompt: str,
        negative_presets: Sequence[str],
        style: str | None,
    ) -> tuple[str, str]:
        """Return (final_prompt, final_negative) for the pipeline.

        The negative prompt is the user's own text, then each chosen preset's terms in
        the order given (a name repeated is used once), then the style's negative; empty
        parts are dropped so there are no stray commas. `style` of None, "" or "None"
        means no style.
        """
        chosen_style: StylePreset | None = None
        style_name = (style or "").strip()
        if style_name and style_name != NO_STYLE:
            chosen_style = self.styles.get(style_name)
            if chosen_style is None:
                raise PresetError(
                    f"Unknown style {style_name!r}. Known: {_known(self.styles)}"
                )

        parts: list[str] = [negative_prompt or ""]
        seen: set[str] = set()
        for raw in negative_presets or ():
            name = (raw or "").strip()
            if not name or name in seen:
                continue
            preset = self.negatives.get(name)
            if preset is None:
                raise PresetError(
                    f"Unknown negative preset {name!r}. Known: {_known(self.negatives)}"
                )
            seen.add(name)
            parts.append(preset.terms)

        final_prompt = prompt
        if chosen_style is not None:
            final_prompt = chosen_style.apply(prompt)
            parts.append(chosen_style.negative)

        final_negative = ", ".join(p.strip() for p in parts if p and p.strip())
        return final_prompt, final_negative


def _known(table: dict[str, object]) -> str:
    """List of names for error messages, so the user sees what they could have typed."""
    return ", ".join(table) if table else "(none)"


def _read_toml(path: Path) -> dict[str, object]:
    """Parse one file; a missing file is an empty table so either file is optional."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise PresetError(f"{path}: cannot read file: {exc}") from exc
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise PresetError(f"{path}: not valid UTF-8: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise PresetError(f"{path}: invalid TOML: {exc}") from exc


def _validated_entries(
    path: Path, doc: dict[str, object], keys: dict[str, bool]
) -> list[tuple[str, dict[str, str]]]:
    """Check each entry's shape and return (stripped name, string fields) pairs."""
    entries: list[tuple[str, dict[str, str]]] = []
    seen: set[str] = set()
    for raw_name, value in doc.items():
        name = raw_name.strip()
        where = f"{path}: entry {raw_name!r}"
        if not name:
            raise PresetError(f"{where}: name must not be empty")
        if name in seen:
            raise PresetError(f"{where}: duplicate name {name!r} (after trimming spaces)")
        seen.add(name)
        if not isinstance(value, dict):
            raise PresetError(
                f"{where}: must be a table like [{name!r}] with keys "
                f"{', '.join(keys)}, got {type(value).__name__}"
            )
        unknown = [k for k in value if k not in keys]
        if unknown:
            raise PresetError(
                f"{where}: unknown key {unknown[0]!r} (allowed: {', '.join(keys)})"
            )
        fields: dict[str, str] = {}
        for key, required in keys.items():
            if key not in value:
                if required:
                    raise PresetError(f"{where}: {key!r} must be a non-empty string")
                continue
            item = value[key]
            if not isinstance(item, str):
                raise PresetError(
                    f"{where}: {key!r} must be a string, got {type(item).__name__}"
                )
            if required and not item.strip():
                raise PresetError(f"{where}: {key!r} must be a non-empty string")
            fields[key] = item.strip()
        entries.append((name, fields))
    return entries


def load_presets(folder: str | Path) -> Presets:
    """Load and validate `negative.toml` and `styles.toml` from `folder`.

    Either file may be missing (empty result). Any bad entry raises PresetError naming
    the file and the entry, so a broken preset file fails loudly at startup.
    """
    folder = Path(folder)

    neg_path = folder / NEGATIVE_FILE
    negatives: dict[str, NegativePreset] = {}
    for name, f in _validated_entries(neg_path, _read_toml(neg_path), _NEGATIVE_KEYS):
        negatives[name] = NegativePreset(
            name=name, terms=f["terms"], description=f.get("description", "")
        )

    style_path = folder / STYLES_FILE
    styles: dict[str, StylePreset] = {}
    for name, f in _validated_entries(style_path, _read_toml(style_path), _STYLE_KEYS):
        where = f"{style_path}: entry {name!r}"
        if name == NO_STYLE:
            raise PresetError(f"{where}: {NO_STYLE!r} is reserved for 'no style'")
        count = f["prompt"].count(PROMPT_PLACEHOLDER)
        if count != 1:
            raise PresetError(
                f"{where}: 'prompt' must contain {PROMPT_PLACEHOLDER} exactly once "
                f"(found {count})"
            )
        styles[name] = StylePreset(
            name=name, prompt=f["prompt"], negative=f.get("negative", "")
        )

    return Presets(negatives=negatives, styles=styles, wildcards=folder / "wildcards")
