"""Preset files: the shipped ones load, mistakes are reported clearly, resolve() composes."""

from __future__ import annotations

from pathlib import Path

import pytest

from studio.prompts.presets import (
    NegativePreset,
    PresetError,
    Presets,
    StylePreset,
    load_presets,
)

SHIPPED = Path(__file__).resolve().parent.parent / "presets"


def write(folder: Path, negative: str | None = None, styles: str | None = None) -> Path:
    if negative is not None:
        (folder / "negative.toml").write_text(negative, encoding="utf-8")
    if styles is not None:
        (folder / "styles.toml").write_text(styles, encoding="utf-8")
    return folder


@pytest.fixture
def presets() -> Presets:
    return Presets(
        negatives={
            "bad hands": NegativePreset("bad hands", "bad hands, extra fingers"),
            "blurry": NegativePreset("blurry", "blurry, out of focus"),
        },
        styles={
            "Anime": StylePreset("Anime", "anime art of {prompt}, vibrant", "photo"),
            "Plain": StylePreset("Plain", "{prompt}, detailed"),
        },
    )


# --- shipped files -----------------------------------------------------------------


def test_shipped_presets_load() -> None:
    loaded = load_presets(SHIPPED)
    for name in ("bad hands", "bad anatomy", "low quality", "text and watermarks",
                 "blurry", "nsfw"):
        assert name in loaded.negatives, name
        assert loaded.negatives[name].terms
    assert "extra fingers" in loaded.negatives["bad hands"].terms
    assert loaded.negatives["bad hands"].description == "Malformed hands and fingers"
    assert len(loaded.styles) >= 8
    for style in loaded.styles.values():
        assert style.prompt.count("{prompt}") == 1
        assert "a red fox" in style.apply("a red fox")
    assert loaded.negative_names()[0] == "bad hands"  # file order kept


def test_missing_files_give_empty_presets(tmp_path: Path) -> None:
    loaded = load_presets(tmp_path)
    assert loaded.negatives == {} and loaded.styles == {}
    assert loaded.resolve("cat", "", [], None) == ("cat", "")


def test_only_one_file_present(tmp_path: Path) -> None:
    write(tmp_path, negative='[x]\nterms = "a, b"\n')
    loaded = load_presets(str(tmp_path))
    assert loaded.negative_names() == ["x"]
    assert loaded.style_names() == []


def test_names_and_values_are_stripped(tmp_path: Path) -> None:
    write(tmp_path, negative='["  spaced  "]\nterms = "  a, b  "\n',
          styles='[" S "]\nprompt = " {prompt}, art "\nnegative = " n "\n')
    loaded = load_presets(tmp_path)
    assert loaded.negatives["spaced"] == NegativePreset("spaced", "a, b", "")
    assert loaded.styles["S"] == StylePreset("S", "{prompt}, art", "n")


# --- validation errors -------------------------------------------------------------


@pytest.mark.parametrize(
    ("negative", "entry", "needle"),
    [
        ('["bad hands"]\ndescription = "x"\n', "bad hands", "'terms' must be a non-empty string"),
        ('["bad hands"]\nterms = "   "\n', "bad hands", "'terms' must be a non-empty string"),
        ('["bad hands"]\nterms = 3\n', "bad hands", "'terms' must be a string"),
        ('["bad hands"]\nterms = "a"\nterm = "b"\n', "bad hands", "unknown key 'term'"),
        ('["bad hands"]\nterms = "a"\ndescription = ["x"]\n', "bad hands", "'description' must be a string"),
        ('"bad hands" = "just a string"\n', "bad hands", "must be a table"),
        ('["  "]\nterms = "a"\n', "  ", "name must not be empty"),
        ('["a"]\nterms = "x"\n[" a "]\nterms = "y"\n', " a ", "duplicate name"),
    ],
)
def test_bad_negative_entry(tmp_path: Path, negative: str, entry: str, needle: str) -> None:
    write(tmp_path, negative=negative)
    with pytest.raises(PresetError) as info:
        load_presets(tmp_path)
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'negative.toml'}: entry {entry!r}")
    assert needle in message


def test_error_message_matches_documented_form(tmp_path: Path) -> None:
    folder = tmp_path / "presets"
    folder.mkdir()
    write(folder, negative='["bad hands"]\ndescription = "x"\n')
    with pytest.raises(PresetError) as info:
        load_presets(folder)
    assert str(info.value) == (
        f"{folder / 'negative.toml'}: entry 'bad hands': 'terms' must be a non-empty string"
    )
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("styles", "entry", "needle"),
    [
        ('[Anime]\nprompt = "anime art"\n', "Anime", "exactly once (found 0)"),
        ('[Anime]\nprompt = "{prompt} and {prompt}"\n', "Anime", "exactly once (found 2)"),
        ('[Anime]\nnegative = "photo"\n', "Anime", "'prompt' must be a non-empty string"),
        ('[Anime]\nprompt = "{prompt}"\nnegatives = "x"\n', "Anime", "unknown key 'negatives'"),
        ('[Anime]\nprompt = "{prompt}"\nnegative = 1\n', "Anime", "'negative' must be a string"),
        ('[None]\nprompt = "{prompt}"\n', "None", "reserved"),
    ],
)
def test_bad_style_entry(tmp_path: Path, styles: str, entry: str, needle: str) -> None:
    write(tmp_path, styles=styles)
    with pytest.raises(PresetError) as info:
        load_presets(tmp_path)
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'styles.toml'}: entry {entry!r}")
    assert needle in message


@pytest.mark.parametrize("which", ["negative.toml", "styles.toml"])
def test_broken_toml_names_file(tmp_path: Path, which: str) -> None:
    (tmp_path / which).write_text('["bad hands"\nterms = "x"\n', encoding="utf-8")
    with pytest.raises(PresetError) as info:
        load_presets(tmp_path)
    message = str(info.value)
    assert message.startswith(f"{tmp_path / which}: invalid TOML:")
    assert "line 1" in message  # tomllib's own location is kept


def test_non_utf8_file(tmp_path: Path) -> None:
    (tmp_path / "negative.toml").write_bytes(b'[a]\nterms = "\xff"\n')
    with pytest.raises(PresetError, match="negative.toml"):
        load_presets(tmp_path)


# --- resolve -------------------------------------------------------------------------


def test_resolve_order(presets: Presets) -> None:
    prompt, negative = presets.resolve("a cat", "ugly", ["blurry", "bad hands"], "Anime")
    assert prompt == "anime art of a cat, vibrant"
    assert negative == "ugly, blurry, out of focus, bad hands, extra fingers, photo"


def test_resolve_skips_empty_parts(presets: Presets) -> None:
    assert presets.resolve("a cat", "", [], "Plain") == ("a cat, detailed", "")
    assert presets.resolve("a cat", "  ", ["bad hands"], None) == (
        "a cat", "bad hands, extra fingers")
    assert presets.resolve("a cat", "", [], "Anime") == ("anime art of a cat, vibrant", "photo")


def test_resolve_repeated_preset_used_once(presets: Presets) -> None:
    _, negative = presets.resolve("x", "", ["blurry", "blurry"], None)
    assert negative == "blurry, out of focus"


@pytest.mark.parametrize("no_style", [None, "", "None"])
def test_no_style(presets: Presets, no_style: str | None) -> None:
    assert presets.resolve("a {cat}", "n", [], no_style) == ("a {cat}", "n")


def test_style_keeps_braces_in_prompt(presets: Presets) -> None:
    prompt, _ = presets.resolve("a {red|blue} bird {0} {prompt", "", [], "Plain")
    assert prompt == "a {red|blue} bird {0} {prompt, detailed"


def test_style_apply_uses_literal_replace() -> None:
    style = StylePreset("s", "{x} {prompt} {}")
    assert style.apply("{a|b}") == "{x} {a|b} {}"


def test_unknown_names(presets: Presets) -> None:
    with pytest.raises(PresetError) as info:
        presets.resolve("x", "", ["bad hands", "xyz"], None)
    assert str(info.value) == "Unknown negative preset 'xyz'. Known: bad hands, blurry"
    with pytest.raises(PresetError) as info:
        presets.resolve("x", "", [], "Noir")
    assert str(info.value) == "Unknown style 'Noir'. Known: Anime, Plain"
    with pytest.raises(PresetError, match=r"Known: \(none\)"):
        Presets(negatives={}, styles={}).resolve("x", "", ["a"], None)
