"""ModelManager: lazy loading, one set of weights for every tab, switching frees memory."""

from __future__ import annotations

import gc
import weakref

import pytest

from studio.errors import ModelLoadError
from studio.models.manager import ModelManager
from studio.models.sources import describe


def test_nothing_loads_until_the_first_pipeline(tiny_model):
    manager = ModelManager(str(tiny_model))
    info = manager.info()  # reads configs only
    assert (info.native_size, info.in_channels, info.family) == (64, 4, "tiny SD-format")
    assert not manager.loaded and manager.loads == 0
    manager.pipeline("txt2img")
    assert manager.loaded and manager.loads == 1


def test_all_tabs_share_the_same_weights(tiny_model):
    manager = ModelManager(str(tiny_model))
    t2i, i2i, inp = (manager.pipeline(m) for m in ("txt2img", "img2img", "inpaint"))
    assert type(i2i).__name__ == "StableDiffusionImg2ImgPipeline"
    assert type(inp).__name__ == "StableDiffusionInpaintPipeline"
    assert t2i.unet is i2i.unet is inp.unet
    assert t2i.vae is i2i.vae is inp.vae and t2i.text_encoder is inp.text_encoder
    # A per-request pipeline object: same modules, its own scheduler.
    from studio.generation.schedulers import build_scheduler
    own = manager.pipeline_with_scheduler("img2img", build_scheduler("Euler", t2i.scheduler.config))
    assert own.unet is t2i.unet and own.scheduler is not i2i.scheduler
    assert manager.loads == 1


def test_switching_models_frees_the_old_weights(tiny_model, tiny_inpaint_model):
    manager = ModelManager(str(tiny_model))
    old_unet = weakref.ref(manager.pipeline("txt2img").unet)
    manager.pipeline("img2img")
    info = manager.switch(str(tiny_inpaint_model))
    gc.collect()
    assert old_unet() is None, "the old model's UNet is still referenced"
    assert info.in_channels == 9 and not manager.loaded
    assert manager.pipeline("inpaint").unet.config.in_channels == 9
    assert manager.loads == 2


def test_a_bad_switch_keeps_the_current_model(tiny_model, tmp_path):
    manager = ModelManager(str(tiny_model))
    unet = manager.pipeline("txt2img").unet
    with pytest.raises(ModelLoadError):
        manager.switch(str(tmp_path / "missing"))
    assert manager.pipeline("txt2img").unet is unet


@pytest.mark.parametrize("source, message", [
    ("/definitely/not/here", "not found"),
    ("not a model id", "not found"),
])
def test_unknown_sources_give_clear_messages(source, message):
    with pytest.raises(ModelLoadError, match=message):
        describe(source)


def test_a_folder_without_model_index_is_refused(tmp_path):
    (tmp_path / "unet").mkdir()
    with pytest.raises(ModelLoadError, match="model_index.json"):
        describe(str(tmp_path))


def test_broken_weights_give_a_clear_message(tiny_model, tmp_path):
    import shutil
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model, broken)
    for f in (broken / "unet").glob("*.safetensors"):
        f.write_bytes(b"not safetensors")
    manager = ModelManager(str(broken))
    with pytest.raises(ModelLoadError, match="Could not load model"):
        manager.pipeline("txt2img")


def test_hub_id_missing_offline_names_the_id(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    manager = ModelManager("someone/not-cached-model")
    assert manager.info().kind == "hub"
    with pytest.raises(ModelLoadError, match="someone/not-cached-model.*not in the local"):
        manager.pipeline("txt2img")


def test_default_without_embedded_model_is_a_labelled_placeholder(monkeypatch, tmp_path):
    import studio.models.sources as sources
    monkeypatch.setattr(sources, "EMBEDDED_MODEL", tmp_path / "no-embedded-model")
    monkeypatch.setenv("STUDIO_CACHE", str(tmp_path / "cache"))
    manager = ModelManager("")
    assert manager.info().kind == "placeholder" and "UNTRAINED" in manager.info().notice
    pipe = manager.pipeline("txt2img")
    assert pipe.unet.config.in_channels == 4 and manager.info().native_size == 64


@pytest.fixture(scope="module")
def model_with_own_inpainting(tiny_model, tmp_path_factory):
    """The tiny model plus an `inpaint-unet/` subfolder, as the embedded model ships: a 9-channel
    UNet made from its own UNet by the training code (embedded/inpaint.py)."""
    import shutil

    from diffusers import UNet2DConditionModel

    from embedded.inpaint import inpaint_unet_from
    folder = tmp_path_factory.mktemp("own-inpaint") / "tiny-with-inpaint"
    shutil.copytree(tiny_model, folder)
    inpaint_unet_from(UNet2DConditionModel.from_pretrained(folder / "unet")).save_pretrained(
        folder / "inpaint-unet")
    return folder


def test_a_model_with_its_own_inpainting_unet_uses_it_in_the_inpaint_tab_only(model_with_own_inpainting):
    manager = ModelManager(str(model_with_own_inpainting))
    info = manager.info()
    assert info.in_channels == 4 and info.inpaint_unet.endswith("inpaint-unet")
    t2i, inp = manager.pipeline("txt2img"), manager.pipeline("inpaint")
    assert t2i.unet.config.in_channels == 4 and inp.unet.config.in_channels == 9
    assert inp.vae is t2i.vae and inp.text_encoder is t2i.text_encoder
    assert inp.unet.dtype == t2i.unet.dtype and inp.unet.device == t2i.unet.device
    # cached with the loaded weights, dropped with them
    assert manager.pipeline_with_scheduler("inpaint", t2i.scheduler).unet is inp.unet
    manager.unload()
    assert manager.pipeline("inpaint").unet is not inp.unet


def test_the_own_inpainting_unet_generates_and_is_recorded(model_with_own_inpainting, tmp_path):
    import numpy as np
    from PIL import Image

    from studio.config import Settings
    from studio.requests import make_request
    from studio.serving.studio import Studio
    studio = Studio.from_settings(Settings(model=str(model_with_own_inpainting), outputs=tmp_path))
    base = Image.new("RGB", (64, 64), (200, 30, 30))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    result = studio.local.run(make_request(mode="inpaint", image=base, mask=mask, prompt="a blue square",
                                     seed=0, steps=3, mask_blur=0))
    out = np.asarray(result.images[0].image)
    assert np.array_equal(out[np.asarray(mask) == 0], np.asarray(base)[np.asarray(mask) == 0])
    assert result.images[0].data["model"]["inpainting_unet"] is True
    txt = studio.local.run(make_request(prompt="a blue square", seed=0, steps=2))
    assert txt.images[0].data["model"]["inpainting_unet"] is False
