"""The studio's PNGs read by real third-party metadata readers: sd-parsers (what many galleries and
Python tools use) and sd-prompt-reader (the popular desktop/CLI viewer), plus Civitai's rule for
A1111 infotext and a strict JSON parser for the `studio` chunk.

Each test generates on a tiny model and checks that what a reader sees is what was asked for:
prompt, negative prompt (an empty one included), steps, sampler, schedule type, CFG scale, seed,
size, model name and model hash. Prompts carry commas, colons and emphasis to exercise quoting.

sd-prompt-reader is installed with --no-deps (its own requirements pin a GUI stack it does not need
to read files): see .ci/run.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sd_parsers import ParserManager
from sd_parsers.data import Generators
from sd_prompt_reader.image_data_reader import ImageDataReader
from sd_prompt_reader.format.base_format import BaseFormat

from studio.config import Settings
from studio.samplers import SCHEDULERS
from studio.outputs.metadata import format_parameters, pnginfo
from studio.requests import make_request
from studio.serving.studio import Studio
from tests.ldm_layout import (tiny_pipeline, write_a1111_embedding, write_kohya_lora, write_single_file,
                              write_vae_file)

PROMPT = "a (red:1.2) circle, on blue"
NEGATIVE = "blurry, ugly"


# -- what each reader sees, in one shape ------------------------------------------------------------
def sd_parsers_view(path: Path) -> dict:
    info = ParserManager().parse(path)
    assert info is not None, "sd-parsers found no generation data"
    assert info.generator == Generators.AUTOMATIC1111
    (sampler,) = info.samplers
    assert sampler.model is not None, "sd-parsers found no model"
    return {
        "prompt": [p.value for p in info.prompts],
        "negative": [p.value for p in info.negative_prompts],
        "steps": sampler.parameters["steps"],
        "sampler": sampler.name,
        "schedule": sampler.parameters["scheduler"],     # its name for A1111's `Schedule type`
        "cfg": sampler.parameters["cfg_scale"],
        "seed": sampler.parameters["seed"],
        "size": info.metadata["Size"],
        "model": sampler.model.name,
        "hash": sampler.model.hash,
        "metadata": info.metadata,                        # the other fields, as it read them
    }


def prompt_reader_view(path: Path) -> dict:
    reader = ImageDataReader(str(path))
    assert reader.status == BaseFormat.Status.READ_SUCCESS, reader.status
    assert reader.tool == "A1111 webUI"
    p = reader.parameter
    return {
        "prompt": reader.positive, "negative": reader.negative,
        "steps": p["steps"], "sampler": p["sampler"], "cfg": p["cfg"], "seed": p["seed"],
        "size": p["size"], "width": reader.width, "height": reader.height, "model": p["model"],
        # sd-prompt-reader parses no Schedule type or Model hash into fields: it shows the whole
        # details line as `setting`, which is checked instead
        "setting": reader.setting,
    }


# A1111's own reader of the details line (modules/infotext_utils.py: re_param_code, then unquote on
# a value in double quotes), the reference the two readers are compared with. Stricter than A1111
# in one way: a quoted value that is not valid JSON raises here (A1111 would keep the raw text).
_A1111_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')


def _a1111_fields(line: str) -> dict[str, str]:
    out = {}
    for key, value in _A1111_PARAM.findall(line):
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = json.loads(value)
        out[key] = value
    return out


def _no_constants(name: str):
    raise ValueError(f"not strict JSON: {name}")


def chunks(path: Path) -> tuple[str, dict]:
    with Image.open(path) as image:
        text = image.text
        parameters, raw = text["parameters"], text["studio"]
    data = json.loads(raw, parse_constant=_no_constants)   # NaN / Infinity / -Infinity raise
    assert isinstance(data, dict)
    return parameters, data


def check_image(path: Path, *, prompt: str, negative: str, steps: int, scheduler: str, cfg: float,
                seed: int, size: tuple[int, int], model: str, model_hash: str,
                generated: bool = True) -> tuple[dict, dict, str]:
    """Both readers and the plain-Python rules agree with what was asked. Returns the two views and
    the infotext for further checks."""
    spec = SCHEDULERS[scheduler]
    with Image.open(path) as image:
        assert image.size == size
    size_text = f"{size[0]}x{size[1]}"

    # Civitai's rule: the details line starts with `Steps: ` and is the last line.
    parameters, data = chunks(path)
    lines = parameters.split("\n")
    assert "\nSteps: " in parameters and lines[-1].startswith("Steps: ")
    assert parameters.rindex("\nSteps: ") == len(parameters) - len(lines[-1]) - 1
    # the negative line is always there, empty or not, just above the details
    assert lines[-2] == (f"Negative prompt: {negative}" if negative else "Negative prompt:")
    # A1111's Model hash: the first 10 hex digits of a sha256
    assert re.fullmatch(r"[0-9a-f]{10}", model_hash)
    a1111 = _a1111_fields(lines[-1])
    assert (a1111["Model hash"], a1111["Model"]) == (model_hash, model)
    # the strict-JSON record says the same (for an image the studio generated)
    if generated:
        assert (data["prompt"], data["negative_prompt"], data["seed"]) == (prompt, negative, seed)
        assert (data["width"], data["height"], data["model"]["hash"]) == (*size, model_hash)

    sp = sd_parsers_view(path)
    assert sp["prompt"] == [prompt]
    # sd-parsers lists no negative prompt for an empty one (and none leaks into the prompt)
    assert sp["negative"] == ([negative] if negative else [])
    assert int(sp["steps"]) == steps and int(sp["seed"]) == seed and float(sp["cfg"]) == cfg
    assert (sp["sampler"], sp["schedule"]) == (spec.sampler, spec.schedule)
    assert (sp["size"], sp["model"], sp["hash"]) == (size_text, model, model_hash)

    pr = prompt_reader_view(path)
    assert (pr["prompt"], pr["negative"]) == (prompt, negative)
    assert int(pr["steps"]) == steps and int(pr["seed"]) == seed and float(pr["cfg"]) == cfg
    assert pr["sampler"] == spec.sampler and pr["model"] == model
    assert pr["size"] == size_text and (int(pr["width"]), int(pr["height"])) == size
    assert pr["setting"] == lines[-1]   # the details line, whole and unchanged
    assert f"Schedule type: {spec.schedule}," in pr["setting"]
    return sp, pr, parameters


# -- the shared tiny diffusers model: txt2img, img2img, inpaint -------------------------------------
def _generate(studio, **kw):
    (image,) = studio.local.run(make_request(**kw)).images
    return image


@pytest.mark.parametrize("negative, scheduler, cfg", [(NEGATIVE, "DPM++ 2M Karras", 7.0),
                                                      ("", "Euler a", 5.5)])
def test_txt2img_reads_back_in_both_readers(studio, negative, scheduler, cfg):
    image = _generate(studio, prompt=PROMPT, negative_prompt=negative, seed=42, steps=3,
                      scheduler=scheduler, cfg_scale=cfg)
    model_hash = studio.local.manager.model_hash()
    check_image(image.path, prompt=PROMPT, negative=negative, steps=3, scheduler=scheduler, cfg=cfg,
                seed=42, size=(64, 64), model=studio.model_info().name, model_hash=model_hash)


def test_img2img_reads_back_in_both_readers(studio):
    src = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 96, 3), dtype=np.uint8))
    image = _generate(studio, mode="img2img", image=src, prompt=PROMPT, negative_prompt=NEGATIVE,
                      seed=5, steps=3, strength=0.6, scheduler="DPM++ 2M Karras", cfg_scale=6.5)
    sp, _, _ = check_image(image.path, prompt=PROMPT, negative=NEGATIVE, steps=3,
                           scheduler="DPM++ 2M Karras", cfg=6.5, seed=5, size=(96, 64),
                           model=studio.model_info().name, model_hash=studio.local.manager.model_hash())
    assert sp["metadata"]["Denoising strength"] == "0.6"


def test_inpaint_reads_back_in_both_readers(studio):
    src = Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 96, 3), dtype=np.uint8))
    mask = Image.new("L", (96, 64), 0)
    mask.paste(255, (20, 10, 60, 50))
    image = _generate(studio, mode="inpaint", image=src, mask=mask, prompt=PROMPT, negative_prompt="",
                      seed=6, steps=3, strength=0.75, mask_blur=4, only_masked=True,
                      only_masked_padding=8, scheduler="Euler", cfg_scale=7)
    sp, _, _ = check_image(image.path, prompt=PROMPT, negative="", steps=3, scheduler="Euler", cfg=7.0,
                           seed=6, size=(96, 64), model=studio.model_info().name,
                           model_hash=studio.local.manager.model_hash())
    meta = sp["metadata"]
    assert (meta["Denoising strength"], meta["Mask blur"]) == ("0.75", "4")
    assert (meta["Inpaint area"], meta["Masked area padding"]) == ("Only masked", "8")


# -- a single-file checkpoint with LoRAs, an embedding, a VAE file and clip skip --------------------
@pytest.fixture(scope="module")
def addon_studio(tmp_path_factory):
    """The models folder of tests/test_addons.py, SD 1.x parts only."""
    root = tmp_path_factory.mktemp("reader-models")
    for kind in ("checkpoints", "loras", "vae", "embeddings"):
        (root / kind).mkdir()
    sd1 = tiny_pipeline("sd1")
    write_single_file(sd1, "sd1", root / "checkpoints" / "sd1.safetensors")
    write_kohya_lora(sd1, root / "loras" / "ink.safetensors", seed=1)
    write_kohya_lora(sd1, root / "loras" / "glow.safetensors", seed=2)
    write_a1111_embedding(root / "embeddings" / "shiny-thing.pt", width=64)
    write_vae_file(sd1.vae, root / "vae" / "warm.safetensors")
    s = Studio.from_settings(Settings(model="", models_dir=root, outputs=tmp_path_factory.mktemp("reader-out")))
    s.select_model("sd1.safetensors")
    return s, root


def test_lora_embedding_vae_and_clip_skip_read_back_in_both_readers(addon_studio):
    studio, root = addon_studio
    lib = studio.local.library.names()
    prompt = "a shiny-thing (red:1.2) circle, on blue"   # shiny-thing: the embedding
    image = studio.local.run(make_request(
        known_loras=lib["loras"], known_vaes=lib["vae"], prompt=prompt, negative_prompt=NEGATIVE,
        seed=9, steps=2, width=64, height=64, scheduler="DPM++ 2M Karras", cfg_scale=7,
        loras=[["ink.safetensors", 0.8], ["glow.safetensors", 1.0]], vae="warm.safetensors",
        clip_skip=2)).images[0]

    # The Model hash is A1111's (and Civitai's AutoV2): sha256 of the checkpoint file, 10 digits.
    checkpoint = root / "checkpoints" / "sd1.safetensors"
    file_hash = hashlib.sha256(checkpoint.read_bytes()).hexdigest()[:10]
    assert studio.local.manager.model_hash() == file_hash
    sp, pr, parameters = check_image(image.path, prompt=prompt, negative=NEGATIVE, steps=2,
                                     scheduler="DPM++ 2M Karras", cfg=7.0, seed=9, size=(64, 64),
                                     model="sd1", model_hash=file_hash)

    # Plain fields come back through sd-parsers' extra metadata.
    _, data = chunks(image.path)
    vae_hash = data["vae"]["sha256"][:10]
    meta = sp["metadata"]
    assert (meta["VAE"], meta["VAE hash"], meta["Clip skip"]) == ("warm.safetensors", vae_hash, "2")

    # Lora hashes and TI hashes are written as A1111 writes them: one quoted value holding
    # "name: hash, name: hash". A1111's own reader gets them back whole:
    lora = {x["name"]: x["sha256"] for x in data["loras"]}
    ti = {x["name"]: x["sha256"] for x in data["embeddings"]}
    a1111 = _a1111_fields(parameters.split("\n")[-1])
    assert a1111["Lora hashes"] == f"ink: {lora['ink.safetensors']}, glow: {lora['glow.safetensors']}"
    assert a1111["TI hashes"] == f"shiny-thing: {ti['shiny-thing']}"
    assert (a1111["VAE"], a1111["Clip skip"], a1111["Model hash"]) == ("warm.safetensors", "2", file_hash)
    # sd-parsers' quirk: it splits the details line on every ',' and keeps only pieces with exactly
    # one ':', ignoring quotes. So "Lora hashes", "Lora weights" and "TI hashes" are lost, and the
    # second LoRA's piece `glow: <hash>"` turns into a stray key `glow` with the closing quote
    # kept. A1111 quotes these values the same way, so the studio cannot change this without
    # leaving A1111's format; Civitai and A1111 read them (above).
    assert {"Lora hashes", "Lora weights", "TI hashes"}.isdisjoint(meta)
    assert meta["glow"] == f'{lora["glow.safetensors"]}"'
    # sd-prompt-reader keeps the details line whole, quoted values included.
    assert f'Lora hashes: "ink: {lora["ink.safetensors"]}, glow: {lora["glow.safetensors"]}"' in pr["setting"]
    assert f'TI hashes: "shiny-thing: {ti["shiny-thing"]}"' in pr["setting"]


# -- every sampler name and schedule type, without generating ----------------------------------------
@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_every_sampler_and_schedule_type_survive_both_readers(tmp_path, name):
    """Each scheduler's A1111 names, written as the studio writes them, come back from both readers
    (a name with a ',' or ':' would not)."""
    spec = SCHEDULERS[name]
    fields = {"Steps": 20, "Sampler": spec.sampler, "Schedule type": spec.schedule, "CFG scale": 7.0,
              "Seed": 123, "Size": "64x64", "Model hash": "0123456789", "Model": "tiny-sd",
              "Version": "studio test"}
    path = tmp_path / "x.png"
    Image.new("RGB", (64, 64)).save(path, pnginfo=pnginfo(format_parameters(PROMPT, NEGATIVE, fields),
                                                          {"scheduler": name}))
    check_image(path, prompt=PROMPT, negative=NEGATIVE, steps=20, scheduler=name, cfg=7.0, seed=123,
                size=(64, 64), model="tiny-sd", model_hash="0123456789", generated=False)
