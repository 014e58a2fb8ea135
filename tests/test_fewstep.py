"""Few-step checkpoints and LoRAs are recognised (studio/models/fewstep.py) and come with their
settings; an SD 2.x file in generative-models' layout (sd_turbo.safetensors) loads with the exact
weights and paints what the same weights in the usual layout paint."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from studio.config import Settings
from studio.models.checkpoints import inspect, load_pipeline
from studio.models.layouts import OPENCLIP_SD2, OPENCLIP_SD2_SGM
from studio.models.fewstep import (GUIDANCE_EMBEDDING, LORA_NAMES, from_name, from_unet_config, looks_few_step,
                                   negative_has_effect)
from studio.requests import make_request
from studio.serving.studio import Studio
from tests.ldm_layout import tiny_pipeline, write_single_file
from tests.test_checkpoints import _rewrite


@pytest.mark.parametrize("name,table,want", [
    ("sd_turbo.safetensors", None, ("Euler a SGM Uniform", 1, 1.0, 512)),
    ("DreamShaperXL_Turbo_v2.safetensors", None, ("Euler a SGM Uniform", 1, 1.0, 512)),
    ("sdxl_lightning_2step.safetensors", None, ("Euler SGM Uniform", 2, 1.0, 0)),
    ("juggernaut_Hyper-SD_8steps.safetensors", None, ("DDIM SGM Uniform", 8, 1.0, 0)),
    ("dreamshaper_8_LCM.safetensors", None, ("LCM", 4, 1.5, 0)),
    ("lcm-lora-sdv1-5.safetensors", LORA_NAMES, ("LCM", 4, 1.5, 0)),
    ("Hyper-SD15-8steps-CFG-lora.safetensors", LORA_NAMES, ("DDIM SGM Uniform", 8, 5.0, 0)),
    ("Hyper-SDXL-1step-lora.safetensors", LORA_NAMES, ("TCD", 1, 1.0, 0)),
    ("Hyper-SDXL-4steps-lora.safetensors", LORA_NAMES, ("DDIM SGM Uniform", 4, 1.0, 0)),
    ("TCD-SD15-LoRA.safetensors", LORA_NAMES, ("TCD", 4, 1.0, 0)),
    ("sdxl_lightning_4step_lora.safetensors", LORA_NAMES, ("Euler SGM Uniform", 4, 1.0, 0)),
])
def test_few_step_names_are_recognised_with_their_settings(name, table, want):
    few = from_name(name, table) if table else from_name(name)
    assert (few.sampler, few.steps, few.cfg, few.size) == want
    assert few.note and few.method in few.banner()


@pytest.mark.parametrize("name", ["v1-5-pruned-emaonly.safetensors", "calcmodel.safetensors",
                                  "realisticVision_v51.safetensors", "detail-tweaker.safetensors"])
def test_ordinary_names_are_not_few_step(name):
    assert from_name(name) is None and from_name(name, LORA_NAMES) is None


def test_guidance_settings_and_the_negative_prompt():
    assert from_unet_config({"time_cond_proj_dim": 256}) is GUIDANCE_EMBEDDING
    assert from_unet_config({"time_cond_proj_dim": None}) is None and from_unet_config({}) is None
    assert not negative_has_effect(GUIDANCE_EMBEDDING, 8.0)          # an input of the model: any CFG
    assert not negative_has_effect(None, 1.0) and negative_has_effect(None, 1.5)
    assert looks_few_step("LCM", 7.0) and looks_few_step("Euler a", 1.0) and not looks_few_step("Euler a", 7.0)


@pytest.fixture(scope="module")
def sd2(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sd2")
    pipe = tiny_pipeline("sd2")
    return write_single_file(pipe, "sd2", folder / "tiny-sd2.safetensors", torch.float32), pipe


def test_an_sgm_layout_sd2_turbo_file_loads_exactly_and_paints_as_the_usual_layout(sd2, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", "/nonexistent-hf-home")
    path, original = sd2
    turbo = _rewrite(path, tmp_path / "tiny-sd_turbo.safetensors",
                     lambda k: OPENCLIP_SD2_SGM + k[len(OPENCLIP_SD2):] if k.startswith(OPENCLIP_SD2) else k)
    ck = inspect(turbo)
    assert (ck.family, ck.sgm_text, ck.prediction_type, ck.native_size) == ("sd2", True, "epsilon", 512)
    assert ck.configs["text_encoder"] == inspect(path).configs["text_encoder"]
    loaded = load_pipeline(ck, torch.float32)
    for part in ("text_encoder", "unet", "vae"):
        want, got = getattr(original, part).state_dict(), getattr(loaded, part).state_dict()
        assert set(want) == set(got) and all(torch.equal(want[k], got[k]) for k in want), part

    studio = Studio.from_settings(Settings(model=str(turbo), outputs=tmp_path / "turbo"))
    few = studio.model_info().few_step
    assert (few.sampler, few.steps, few.cfg) == ("Euler a SGM Uniform", 1, 1.0)
    assert studio.model_info().native_size == 512
    base = dict(prompt="a red circle", seed=3, scheduler=few.sampler, steps=few.steps, cfg_scale=few.cfg,
                width=64, height=64)
    pictures = [studio.local.run(make_request(**base)).images[0]]
    usual = Studio.from_settings(Settings(model=str(path), outputs=tmp_path / "usual", prediction_type="epsilon"))
    pictures.append(usual.local.run(make_request(**base)).images[0])
    assert np.array_equal(np.asarray(pictures[0].image), np.asarray(pictures[1].image))
    assert "Schedule type: SGM Uniform" in pictures[0].parameters


@pytest.fixture(scope="module")
def lcm_folder(tmp_path_factory):
    """A tiny model folder whose UNet has a guidance embedding, as LCM models have."""
    import json

    from diffusers import UNet2DConditionModel

    from studio.models.tiny import write_tiny_model
    path = write_tiny_model(tmp_path_factory.mktemp("lcm") / "tiny-guided")
    config = json.loads((path / "unet" / "config.json").read_text())
    torch.manual_seed(1)
    UNet2DConditionModel.from_config({**config, "time_cond_proj_dim": 32}).save_pretrained(path / "unet")
    return path


def test_a_guidance_embedding_model_is_lcm_and_ignores_the_negative_prompt(lcm_folder, tmp_path):
    studio = Studio.from_settings(Settings(model=str(lcm_folder), outputs=tmp_path))
    few = studio.model_info().few_step
    assert few is GUIDANCE_EMBEDDING and few.sampler == "LCM" and few.guidance_embedded
    base = dict(prompt="a red circle", seed=4, scheduler=few.sampler, steps=few.steps, width=64, height=64)

    def picture(**extra):
        return np.asarray(studio.local.run(make_request(**{**base, "cfg_scale": few.cfg, **extra})).images[0].image)

    plain = picture()
    assert np.array_equal(plain, picture(negative_prompt="blue, square"))      # no negative branch
    assert not np.array_equal(plain, picture(cfg_scale=2.0))                   # CFG is the model's input


def test_a_tiny_lcm_lora_is_recognised_and_draws(tmp_path):
    """An LCM-LoRA in models/loras (kohya layout, written here) is known by its name, with LCM's
    settings; the studio draws with it at those settings, and it changes the picture."""
    from diffusers import StableDiffusionPipeline

    from studio.models.tiny import write_tiny_model
    from tests.ldm_layout import write_kohya_lora
    model = write_tiny_model(tmp_path / "tiny")
    (tmp_path / "models" / "loras").mkdir(parents=True)
    name = "lcm-lora-tiny.safetensors"
    write_kohya_lora(StableDiffusionPipeline.from_pretrained(model), tmp_path / "models" / "loras" / name)
    few = from_name(name, LORA_NAMES)
    assert (few.method, few.sampler, few.steps, few.cfg) == ("LCM-LoRA", "LCM", 4, 1.5)
    studio = Studio.from_settings(Settings(model=str(model), models_dir=tmp_path / "models", outputs=tmp_path / "out"))
    base = dict(prompt="a red circle", seed=4, scheduler=few.sampler, steps=few.steps, cfg_scale=few.cfg,
                width=64, height=64)
    with_lora = studio.local.run(studio.make_request("txt2img", **base, loras=[[name, 1.0]])).images[0]
    without = studio.local.run(studio.make_request("txt2img", **base)).images[0]
    assert "Sampler: LCM" in with_lora.parameters and "lcm-lora-tiny" in with_lora.parameters
    assert not np.array_equal(np.asarray(with_lora.image), np.asarray(without.image))
