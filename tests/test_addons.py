"""LoRAs, textual-inversion embeddings, a separate VAE and clip skip, on single-file models of
the real layouts: each changes the image, removing it restores the base exactly, and the
metadata records what was used."""

from __future__ import annotations

import numpy as np
import pytest

from studio.config import Settings
from studio.errors import InvalidRequest
from studio.outputs.metadata import parse_parameters, read_metadata
from studio.requests import make_request
from studio.serving.studio import Studio
from tests.ldm_layout import (tiny_pipeline, write_a1111_embedding, write_kohya_lora, write_single_file,
                              write_vae_file)


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    for kind in ("checkpoints", "loras", "vae", "embeddings"):
        (root / kind).mkdir()
    sd1, xl = tiny_pipeline("sd1"), tiny_pipeline("sdxl")
    write_single_file(sd1, "sd1", root / "checkpoints" / "sd1.safetensors")
    write_single_file(xl, "sdxl", root / "checkpoints" / "xl.safetensors")
    write_kohya_lora(sd1, root / "loras" / "ink.safetensors", seed=1)
    write_kohya_lora(sd1, root / "loras" / "glow.safetensors", seed=2)
    write_a1111_embedding(root / "embeddings" / "shiny-thing.pt", width=64)
    write_a1111_embedding(root / "embeddings" / "xl-thing.safetensors", width=0, sdxl_widths=(64, 128))
    write_vae_file(sd1.vae, root / "vae" / "warm.safetensors")
    return root


@pytest.fixture(scope="module")
def studio(models_dir, tmp_path_factory):
    s = Studio.from_settings(Settings(model="", models_dir=models_dir,
                                      outputs=tmp_path_factory.mktemp("outputs")))
    s.select_model("sd1.safetensors")
    return s


def run(studio, **kw):
    lib = studio.local.library.names()
    req = make_request(known_loras=lib["loras"], known_vaes=lib["vae"],
                       **{"prompt": "a red circle", "seed": 7, "steps": 2, "width": 64, "height": 64, **kw})
    return studio.local.run(req).images[0]


def px(image) -> np.ndarray:
    return np.asarray(image.image, dtype=np.int16)


def test_lora_changes_the_image_and_removing_it_restores_the_base_exactly(studio):
    base = px(run(studio))
    full = run(studio, loras=[["ink.safetensors", 1.0]])
    half = px(run(studio, loras=[["ink.safetensors", 0.5]]))
    both = px(run(studio, loras=[["ink.safetensors", 1.0], ["glow.safetensors", 0.8]]))
    after = px(run(studio))
    assert np.abs(px(full) - base).mean() > 1 and np.abs(half - base).mean() > 0.5
    assert not np.array_equal(half, px(full)) and not np.array_equal(both, px(full))
    assert np.array_equal(after, base), "without LoRAs the base model must come back bit-exactly"
    params, data = read_metadata(full.path)
    assert data["loras"][0]["name"] == "ink.safetensors" and data["loras"][0]["weight"] == 1.0
    assert len(data["loras"][0]["sha256"]) == 12
    assert "Lora hashes" in parse_parameters(params)[2]
    # the JSON metadata alone brings the image back
    again = studio.local.run(make_request(**{k: v for k, v in data["request"].items() if k != "mode"},
                                    mode=data["mode"]))
    assert np.array_equal(px(again.images[0]), px(full))


def test_lora_and_ti_hashes_are_the_ones_a1111_writes(studio, models_dir, tmp_path):
    """A1111's rules, worked by hand: a LoRA's hash is kohya's `sshs_model_hash` when its metadata
    has one, else the sha256 of the bytes after the safetensors header (so that metadata edits do
    not change it); an embedding's ("TI hashes") is the whole file's sha256; 12 hex digits each."""
    import hashlib
    import shutil

    from safetensors.torch import load_file, save_file

    from studio.models.hashes import lora_hash
    raw = (models_dir / "loras" / "ink.safetensors").read_bytes()
    by_hand = hashlib.sha256(raw[8 + int.from_bytes(raw[:8], "little"):]).hexdigest()[:12]
    assert by_hand != hashlib.sha256(raw).hexdigest()[:12]
    fields = parse_parameters(read_metadata(run(studio, loras=[["ink.safetensors", 0.7]]).path)[0])[2]
    assert fields["Lora hashes"] == f"ink: {by_hand}"
    tagged = tmp_path / "tagged.safetensors"                     # a trainer wrote its own hash in
    save_file(load_file(models_dir / "loras" / "ink.safetensors"), tagged,
              {"ss_output_name": "ink", "sshs_model_hash": "ABCDEF0123456789" * 4})
    assert lora_hash(tagged) == "abcdef012345"
    save_file(load_file(models_dir / "loras" / "ink.safetensors"), tagged, {"ss_output_name": "renamed"})
    assert lora_hash(tagged) == by_hand                          # the same tensors, other metadata
    shutil.copy(models_dir / "embeddings" / "shiny-thing.pt", tmp_path / "shiny-thing.pt")
    ti = hashlib.sha256((models_dir / "embeddings" / "shiny-thing.pt").read_bytes()).hexdigest()[:12]
    fields = parse_parameters(read_metadata(run(studio, prompt="a shiny-thing circle").path)[0])[2]
    assert fields["TI hashes"] == f"shiny-thing: {ti}"


def test_lora_names_and_weights_are_checked_at_the_boundary(studio):
    lib = studio.local.library.names()
    for loras, message in [([["missing.safetensors", 1]], "Unknown LoRA"),
                           ([["ink.safetensors", float("nan")]], "finite"),
                           ([["ink.safetensors", 9]], "between"),
                           ([["ink.safetensors", 1], ["ink.safetensors", 2]], "twice"),
                           ("../../etc/passwd:1", "Unknown LoRA")]:
        with pytest.raises(InvalidRequest, match=message):
            make_request(prompt="x", loras=loras, known_loras=lib["loras"])
    assert make_request(prompt="x", loras="ink.safetensors:0.7, glow.safetensors",
                        known_loras=lib["loras"]).loras == (("ink.safetensors", 0.7), ("glow.safetensors", 1.0))


def test_sd1_lora_on_sdxl_is_a_clear_message(models_dir, tmp_path):
    s = Studio.from_settings(Settings(model="", models_dir=models_dir, outputs=tmp_path))
    s.select_model("xl.safetensors")
    with pytest.raises(InvalidRequest, match="LoRA 'ink.safetensors'"):
        run(s, loras=[["ink.safetensors", 1.0]])
    run(s)   # and the model still works


def test_embedding_by_name_in_prompt_and_negative_prompt(studio):
    plain = px(run(studio, prompt="a shiny circle"))
    used = run(studio, prompt="a shiny-thing circle")
    neg = run(studio, prompt="a shiny circle", negative_prompt="shiny-thing")
    assert not np.array_equal(px(used), plain) and not np.array_equal(px(neg), plain)
    assert read_metadata(used.path)[1]["embeddings"][0]["name"] == "shiny-thing"
    assert "TI hashes" in parse_parameters(read_metadata(neg.path)[0])[2]
    # a word that merely contains the name is not the embedding
    assert read_metadata(run(studio, prompt="a shiny-things circle").path)[1]["embeddings"] == []
    # prompts without it are untouched by its being loaded
    assert np.array_equal(px(run(studio, prompt="a shiny circle")), plain)


def test_embeddings_of_the_wrong_family_get_a_clear_message(studio, models_dir, tmp_path):
    with pytest.raises(InvalidRequest, match="made for SDXL"):
        run(studio, prompt="a xl-thing circle")
    xl = Studio.from_settings(Settings(model="", models_dir=models_dir, outputs=tmp_path))
    xl.select_model("xl.safetensors")
    with pytest.raises(InvalidRequest, match="cannot be used with an SDXL model"):
        run(xl, prompt="a shiny-thing circle")
    assert read_metadata(run(xl, prompt="a xl-thing circle").path)[1]["embeddings"][0]["name"] == "xl-thing"


def test_vae_file_changes_the_decode_and_automatic_restores_it(studio):
    base = px(run(studio))
    warm = run(studio, vae="warm.safetensors")
    assert np.abs(px(warm) - base).mean() > 1
    assert read_metadata(warm.path)[1]["vae"]["name"] == "warm.safetensors"
    assert parse_parameters(read_metadata(warm.path)[0])[2]["VAE"] == "warm.safetensors"
    for mode in ("img2img", "inpaint"):   # the other tabs use it too
        kw = dict(mode=mode, image=warm.image, vae="warm.safetensors", strength=0.5)
        if mode == "inpaint":
            kw["mask"] = warm.image.convert("L").point(lambda v: 255)
        run(studio, **kw)
    assert np.array_equal(px(run(studio)), base)
    assert studio.local.manager.loads == 1


def test_clip_skip(studio):
    one = run(studio)
    two = run(studio, clip_skip=2)
    assert not np.array_equal(px(one), px(two))
    assert parse_parameters(read_metadata(two.path)[0])[2]["Clip skip"] == "2"
    with pytest.raises(InvalidRequest, match="Clip skip"):
        make_request(prompt="x", clip_skip=0)


def test_embedding_named_in_a_negative_preset(models_dir, tmp_path):
    """A negative embedding made for hands, used through a preset as artists do."""
    presets = tmp_path / "presets"
    presets.mkdir()
    (presets / "negative.toml").write_text('["hands embedding"]\nterms = "shiny-thing, bad hands"\n')
    (presets / "styles.toml").write_text("")
    s = Studio.from_settings(Settings(model="", models_dir=models_dir, outputs=tmp_path / "out",
                                      presets=presets))
    s.select_model("sd1.safetensors")
    preset = run(s, negative_presets=["hands embedding"])
    assert read_metadata(preset.path)[1]["embeddings"][0]["name"] == "shiny-thing"
    tokenizer = s.local.manager.base().tokenizer
    assert "shiny-thing" in tokenizer.get_vocab()   # the preset's word is now the embedding's token
