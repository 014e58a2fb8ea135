"""Flux, SD 3.5 and Z-Image LoRAs in kohya's, the original names' (ComfyUI), diffusers' and
ai-toolkit's layouts on tiny models (studio/families/loras.py), through the studio's LoRA table;
LoRAs of another family refused by name."""

from __future__ import annotations

import numpy as np
import pytest

from studio.config import Settings
from studio.errors import InvalidRequest
from studio.families.loras import lora_family
from studio.families.tiny import write_tiny_flux, write_tiny_sd3, write_tiny_zimage
from studio.requests import make_request
from studio.serving.studio import Studio

from .dit_layout import SD3_LORA_MODULES, ZIMAGE_LORA_MODULES, write_dit_lora, write_flux_lora
from .ldm_layout import write_kohya_lora

SMALL = dict(prompt="a red circle", width=64, height=64, steps=2, seed=4, scheduler="Euler")


@pytest.fixture(scope="module")
def flux(tmp_path_factory):
    root = tmp_path_factory.mktemp("flux-loras")
    folder = write_tiny_flux(root / "flux1-dev", "dev")
    studio = Studio.from_settings(Settings(model=str(folder), outputs=root / "out", models_dir=root / "models"))
    pipe = studio.local.manager.base()
    loras = root / "models" / "loras"
    loras.mkdir(parents=True)
    for layout in ("kohya", "bfl", "diffusers"):
        write_flux_lora(pipe.transformer, loras / f"{layout}.safetensors", layout,
                        text_encoder=pipe.text_encoder if layout == "kohya" else None)
    studio.names("loras", rescan=True)
    return studio


def picture(studio, **kw) -> np.ndarray:
    return np.asarray(studio.local.run(make_request(**{**SMALL, **kw})).images[0].image, dtype=np.int16)


def test_the_family_is_read_from_the_keys(flux):
    from safetensors import safe_open
    folder = flux.local.library.folder("loras")
    for name in ("kohya", "bfl", "diffusers"):
        with safe_open(str(folder / f"{name}.safetensors"), framework="pt") as f:
            assert lora_family(f.keys()) == "flux", name


@pytest.mark.parametrize("layout", ["kohya", "bfl", "diffusers"])
def test_a_flux_lora_changes_the_picture_and_weight_zero_does_not(flux, layout):
    base = picture(flux)
    assert not np.array_equal(base, picture(flux, loras=[[f"{layout}.safetensors", 1.0]]))
    assert np.array_equal(base, picture(flux, loras=[[f"{layout}.safetensors", 0.0]]))
    assert np.array_equal(base, picture(flux))          # a request without it: the exact base model


def test_bfl_and_diffusers_layouts_of_one_lora_are_the_same_lora(flux, tmp_path):
    """The same random LoRA written in BFL's names and in diffusers' gives the same picture."""
    folder = flux.local.library.folder("loras")
    pipe = flux.local.manager.base()
    write_flux_lora(pipe.transformer, folder / "same-bfl.safetensors", "bfl", seed=7)
    write_flux_lora(pipe.transformer, folder / "same-diffusers.safetensors", "diffusers", seed=7)
    flux.names("loras", rescan=True)
    a = picture(flux, loras=[["same-bfl.safetensors", 0.8]])
    b = picture(flux, loras=[["same-diffusers.safetensors", 0.8]])
    assert int(np.abs(a - b).max()) <= 1


def test_a_lora_of_another_family_is_refused_by_name(flux, tiny_model, tmp_path):
    from diffusers import StableDiffusionPipeline
    sd = StableDiffusionPipeline.from_pretrained(tiny_model, local_files_only=True)
    write_kohya_lora(sd, flux.local.library.folder("loras") / "sd15-style.safetensors")
    flux.names("loras", rescan=True)
    with pytest.raises(InvalidRequest, match=r"made for SD 1.x / 2.x / SDXL models; the loaded model is Flux.1 dev"):
        picture(flux, loras=[["sd15-style.safetensors", 1.0]])
    sd_studio = Studio.from_settings(Settings(model=str(tiny_model), outputs=tmp_path / "o",
                                              models_dir=flux.local.library.root))
    with pytest.raises(InvalidRequest, match="made for Flux.1 models"):
        picture(sd_studio, loras=[["kohya.safetensors", 1.0]])


def test_the_lora_list_says_each_loras_family(flux):
    families = dict(flux.lora_families())
    assert families["kohya.safetensors"] == "Flux.1" and families["diffusers.safetensors"] == "Flux.1"
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from studio.api.routes import api_routes
    listed = TestClient(FastAPI(routes=api_routes(flux, []))).get("/sdapi/v1/loras").json()
    assert {e["path"]: e["family"] for e in listed}["bfl.safetensors"] == "Flux.1"


LAYOUTS = {"sd3": ("kohya", "original", "diffusers"), "zimage": ("kohya", "ai-toolkit", "diffusers")}


@pytest.fixture(scope="module", params=["sd3", "zimage"])
def dit(request, tmp_path_factory):
    """(family, studio) of a tiny SD 3.5 or Z-Image with the same random LoRA in each of its layouts."""
    which = request.param
    root = tmp_path_factory.mktemp(f"{which}-loras")
    folder = write_tiny_sd3(root / "sd3.5") if which == "sd3" else write_tiny_zimage(root / "z-image")
    studio = Studio.from_settings(Settings(model=str(folder), outputs=root / "out", models_dir=root / "models"))
    pipe = studio.local.manager.base()
    modules = SD3_LORA_MODULES if which == "sd3" else ZIMAGE_LORA_MODULES
    (root / "models" / "loras").mkdir(parents=True)
    for layout in LAYOUTS[which]:
        write_dit_lora(pipe.transformer, modules, root / "models" / "loras" / f"{layout}.safetensors", layout, seed=3)
    studio.names("loras", rescan=True)
    return which, studio


def test_sd3_and_z_image_loras_in_every_layout_are_the_same_lora(dit):
    """Each layout of one LoRA gives the same picture (fused rows split, alpha folded, (shift,
    scale) rows swapped as they must be), unlike the base; weight 0 is the base exactly."""
    which, studio = dit
    base = picture(studio)
    by_layout = {layout: picture(studio, loras=[[f"{layout}.safetensors", 0.8]]) for layout in LAYOUTS[which]}
    first = by_layout[LAYOUTS[which][0]]
    assert not np.array_equal(base, first)
    assert all(int(np.abs(first - other).max()) <= 1 for other in by_layout.values()), which
    assert np.array_equal(base, picture(studio, loras=[["kohya.safetensors", 0.0]]))
    families = dict(studio.lora_families())
    assert set(families.values()) == {"SD 3.5" if which == "sd3" else "Z-Image"}


@pytest.mark.parametrize("dit", ["sd3"], indirect=True)
def test_sd3_text_encoder_loras_reach_both_clips(dit):
    _, studio = dit
    pipe = studio.local.manager.base()
    folder = studio.local.library.folder("loras")
    write_dit_lora(pipe.transformer, SD3_LORA_MODULES[:1], folder / "te.safetensors", "kohya", seed=5,
                   text_encoders={"lora_te1_": pipe.text_encoder, "lora_te2_": pipe.text_encoder_2})
    studio.names("loras", rescan=True)
    base = picture(studio)
    assert not np.array_equal(base, picture(studio, loras=[["te.safetensors", 1.0]]))
    adapters = pipe.get_list_adapters()
    assert {"transformer", "text_encoder", "text_encoder_2"} <= set(adapters)
