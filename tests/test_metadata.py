"""Infotext formatting/parsing and PNG metadata chunks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from studio.outputs.metadata import (
    JSON_KEY,
    PARAMETERS_KEY,
    format_parameters,
    parse_parameters,
    pnginfo,
    read_metadata,
)

FIELDS: dict[str, object] = {
    "Steps": 20,
    "Sampler": "DPM++ 2M",
    "Schedule type": "Karras",
    "CFG scale": 7.0,
    "Seed": 123,
    "Size": "512x512",
    "Model": "tiny",
    "Denoising strength": 0.75,
}


def test_format_a1111_layout() -> None:
    text = format_parameters("a cat", "blurry, ugly", FIELDS)
    assert text == (
        "a cat\n"
        "Negative prompt: blurry, ugly\n"
        "Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 123, "
        "Size: 512x512, Model: tiny, Denoising strength: 0.75"
    )


def test_format_writes_an_empty_negative_line_and_omits_none_values() -> None:
    """The empty `Negative prompt:` line is the studio's choice (ComfyUI's importer needs it)."""
    text = format_parameters("a cat", "", {"Steps": 4, "Model hash": None, "Seed": 1})
    assert text == "a cat\nNegative prompt:\nSteps: 4, Seed: 1"
    assert parse_parameters(text) == ("a cat", "", {"Steps": "4", "Seed": "1"})


def test_format_numbers() -> None:
    text = format_parameters("p", "", {"A": 7.0, "B": 0.75, "C": 1.5e-7, "D": True, "E": -3})
    assert text.splitlines()[-1] == "A: 7, B: 0.75, C: 1.5e-07, D: True, E: -3"


def test_format_quotes_values_with_separators() -> None:
    fields = {"Model": "my, model", "Lora": "x:1", "Note": 'say "hi"', "Plain": "ok"}
    line = format_parameters("p", "", fields).splitlines()[-1]
    assert line == 'Model: "my, model", Lora: "x:1", Note: say "hi", Plain: ok'
    # as A1111 writes them: a JSON list bare, a value that starts with a quote quoted; both read back
    fields = {"Styles array": '["My style"]', "Odd": '"quoted" start', "Steps": 4}
    text = format_parameters("p", "", fields)
    assert text.splitlines()[-1] == 'Styles array: ["My style"], Odd: "\\"quoted\\" start", Steps: 4'
    assert parse_parameters(text)[2] == {k: str(v) for k, v in fields.items()}


def test_format_rejects_unreadable_key() -> None:
    with pytest.raises(ValueError, match="field name"):
        format_parameters("p", "", {"Bad: key": 1})
    with pytest.raises(ValueError, match="field name"):
        format_parameters("p", "", {"a,b": 1})


def test_parse_a1111_text() -> None:
    text = (
        "masterpiece, (a cat:1.2)\n"
        "Negative prompt: lowres\n"
        'Steps: 30, Sampler: Euler a, CFG scale: 6.5, Seed: 42, Size: 512x768, '
        'Lora hashes: "foo: abc123, bar: def456", Version: v1.6.0'
    )
    prompt, negative, fields = parse_parameters(text)
    assert prompt == "masterpiece, (a cat:1.2)"
    assert negative == "lowres"
    assert fields == {
        "Steps": "30",
        "Sampler": "Euler a",
        "CFG scale": "6.5",
        "Seed": "42",
        "Size": "512x768",
        "Lora hashes": "foo: abc123, bar: def456",
        "Version": "v1.6.0",
    }


ROUND_TRIPS = [
    ("a cat", "blurry", FIELDS),
    ("line one\nline two, with commas\n\nline four: colon", "neg, with: colon\nsecond", FIELDS),
    ('she said "hello", {a|b} [c:d:0.5]', 'no "quotes"', {"Note": 'x "y", z: w', "Seed": 1}),
    ("猫の写真 🐱, ünïcödé", "ぼやけた 😡", {"Model": "モデル, v2 🚀", "Steps": 5}),
    ("", "", FIELDS),
    ("", "only negative", FIELDS),
    ("no fields at all", "neg", {}),
    ("no negative", "", {"Steps": 1}),
    ("single line", "", {}),
    ("Steps: 20, Seed: 3", "", {}),  # looks like fields, but a first line is the prompt
    ("(masterpiece:1.2)\n(best quality:1.1)", "", {"Seed": 9}),
    ("trailing space ", " leading space", {"Empty": "", "Spaces": " padded "}),
    ("p", "n", {"Path": "C:\\models\\sd.safetensors", "Newline": "a\nb"}),
]


@pytest.mark.parametrize(("prompt", "negative", "fields"), ROUND_TRIPS)
def test_round_trip(prompt: str, negative: str, fields: dict[str, object]) -> None:
    text = format_parameters(prompt, negative, fields)
    got_prompt, got_negative, got_fields = parse_parameters(text)
    assert got_prompt == prompt
    assert got_negative == negative
    expected = {k: v for k, v in fields.items() if v is not None}
    assert list(got_fields) == list(expected)
    for key, value in expected.items():
        if isinstance(value, float) and value.is_integer():
            assert got_fields[key] == str(int(value))
        else:
            assert got_fields[key] == str(value)


def test_parse_text_without_fields_line() -> None:
    assert parse_parameters("just a prompt, with commas") == ("just a prompt, with commas", "", {})
    assert parse_parameters("p\nNegative prompt: x: y") == ("p", "x: y", {})


def test_parse_tolerates_trailing_newline() -> None:
    text = format_parameters("a", "b", {"Steps": 2}) + "\n"
    assert parse_parameters(text) == ("a", "b", {"Steps": "2"})


def save_png(path: Path, parameters: str, data: dict) -> Path:
    Image.new("RGB", (8, 8), (10, 20, 30)).save(path, pnginfo=pnginfo(parameters, data))
    return path


def test_png_round_trip(tmp_path: Path) -> None:
    parameters = format_parameters("ünïcödé 🐱 prompt", "bad, worse", FIELDS)
    data = {"prompt": "ünïcödé 🐱 prompt", "seed": 123, "nested": {"b": [1, 2], "a": None}}
    path = save_png(tmp_path / "x.png", parameters, data)

    assert read_metadata(path) == (parameters, data)
    assert read_metadata(str(path)) == (parameters, data)
    with Image.open(path) as image:
        assert read_metadata(image) == (parameters, data)
        assert image.info[PARAMETERS_KEY] == parameters  # what A1111-style readers use
        raw = image.info[JSON_KEY]
    assert raw == json.dumps(data, sort_keys=True, ensure_ascii=False)
    assert "🐱" in raw  # not \\u-escaped


def test_read_png_without_metadata(tmp_path: Path) -> None:
    path = tmp_path / "plain.png"
    Image.new("RGB", (4, 4)).save(path)
    assert read_metadata(path) == (None, None)
    assert read_metadata(Image.new("RGB", (4, 4))) == (None, None)


def test_read_damaged_json_chunk(tmp_path: Path) -> None:
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_itxt(PARAMETERS_KEY, "p\nSteps: 1")
    info.add_itxt(JSON_KEY, "{not json")
    path = tmp_path / "bad.png"
    Image.new("RGB", (4, 4)).save(path, pnginfo=info)
    assert read_metadata(path) == ("p\nSteps: 1", None)


def test_read_unreadable_file(tmp_path: Path) -> None:
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"this is not a png")
    with pytest.raises(ValueError, match="junk.png"):
        read_metadata(junk)
    with pytest.raises(ValueError, match="missing.png"):
        read_metadata(tmp_path / "missing.png")


def test_the_record_names_loras_by_stem_and_embeddings_as_written() -> None:
    """Lora hashes use the file's stem (A1111's alias); an embedding's name is already what the
    prompt says, dots included (`bad_v1.3`), and is written whole."""
    from studio.generation.record import ImageRecord, ModelRecord
    from studio.requests import make_request
    record = ImageRecord(
        request=make_request(prompt="x"), model=ModelRecord("m", "", "folder", "SD 1.x", "0123456789", False),
        seed=1, variation_seed=None, batch_number=0, batch_pos=0, size=(64, 64), generated_size=(64, 64),
        prompt="x", negative="",
        template="x", variant="x", variant_negative="", moved_negatives=[], lora_tags=[], schedule=[],
        scheduler_class="S", scheduler_config={"lambda_min_clipped": float("-inf")}, device="cpu",
        dtype="float32", versions={}, notes=["a note"],
        addons={"loras": [{"name": "ink.v2.safetensors", "weight": 0.8, "sha256": "aaa"}],
                "embeddings": [{"name": "bad_v1.3", "sha256": "bbb"}]})
    fields = record.a1111_fields()
    assert fields["Lora hashes"] == "ink.v2: aaa" and fields["TI hashes"] == "bad_v1.3: bbb"
    data = json.loads(json.dumps(record.studio_json(), allow_nan=False))    # strict JSON
    assert data["scheduler"]["config"]["lambda_min_clipped"] == "-inf" and data["notes"] == ["a note"]
