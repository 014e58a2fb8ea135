"""The models folder and the model picker: scanning, names only (never paths) from the UI and API,
switching between a single file, a diffusers folder and the embedded model."""

from __future__ import annotations

import os
import shutil

import pytest
from gradio_client import Client

from studio.config import Settings
from studio.errors import InvalidRequest
from studio.models.library import EMBEDDED, ModelLibrary
from studio.outputs.metadata import read_metadata
from studio.requests import make_request
from studio.serving.studio import Studio
from tests.conftest import start_server, stop_server
from tests.ldm_layout import tiny_pipeline, write_single_file


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory, tiny_model):
    root = tmp_path_factory.mktemp("models")
    for kind in ("checkpoints", "loras", "vae", "embeddings"):
        (root / kind).mkdir()
    write_single_file(tiny_pipeline("sd1"), "sd1", root / "checkpoints" / "tiny-sd1.safetensors")
    (root / "checkpoints" / "sdxl").mkdir()
    write_single_file(tiny_pipeline("sdxl"), "sdxl", root / "checkpoints" / "sdxl" / "tiny-xl.safetensors")
    shutil.copytree(tiny_model, root / "checkpoints" / "tiny-folder")
    (root / "checkpoints" / "old.ckpt").write_bytes(b"pickle")
    (root / "checkpoints" / "notes.txt").write_text("not a model")
    outside = tmp_path_factory.mktemp("elsewhere") / "secret.safetensors"
    shutil.copy(root / "checkpoints" / "tiny-sd1.safetensors", outside)
    os.symlink(outside, root / "checkpoints" / "link-out.safetensors")
    return root


def test_scan_lists_single_files_and_diffusers_folders_only(models_dir):
    names = ModelLibrary(models_dir).names()["checkpoints"]
    assert names == ["sdxl/tiny-xl.safetensors", "tiny-folder", "tiny-sd1.safetensors"]
    # weights inside the diffusers folder are part of it; .ckpt needs the opt-in; the symlink
    # that leads out of the folder is not offered
    assert "old.ckpt" in ModelLibrary(models_dir, allow_pickle=True).names()["checkpoints"]


@pytest.mark.parametrize("name", ["../elsewhere/secret.safetensors", "/etc/passwd", "link-out.safetensors",
                                  "tiny-folder/unet", "checkpoints/tiny-sd1.safetensors", ""])
def test_names_outside_the_list_are_refused(models_dir, tmp_path, name):
    studio = Studio.from_settings(Settings(model="", models_dir=models_dir, outputs=tmp_path))
    if name == "":   # empty means the embedded model, which is always allowed
        assert studio.select_model(name).kind in ("embedded", "placeholder")
        return
    with pytest.raises(InvalidRequest):
        studio.select_model(name)
    assert studio.local.manager.source == ""


def test_switching_models_by_name(models_dir, tmp_path):
    studio = Studio.from_settings(Settings(model="", models_dir=models_dir, outputs=tmp_path))
    assert studio.model_choices()[0] == EMBEDDED and studio.current_choice() == EMBEDDED
    req = make_request(prompt="a red circle", seed=1, steps=2, width=64, height=64)
    for name, family in [("tiny-sd1.safetensors", "SD 1.x"), ("sdxl/tiny-xl.safetensors", "SDXL"),
                         ("tiny-folder", "tiny SD-format")]:
        info = studio.select_model(name)
        assert info.family == family and studio.current_choice() == name
        image = studio.local.run(req).images[0]
        assert read_metadata(image.path)[1]["model"]["name"] == info.name
    assert studio.local.manager.loads == 3
    studio.select_model(EMBEDDED)
    assert studio.local.manager.source == "" and not studio.local.manager.loaded


def test_hub_id_not_in_the_cache_is_refused_at_once(models_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    studio = Studio.from_settings(Settings(model="", models_dir=models_dir, outputs=tmp_path))
    with pytest.raises(InvalidRequest, match="not in the local Hugging Face cache"):
        studio.select_model("someone/some-model")


def test_model_picker_over_the_api(models_dir, tmp_path, tiny_model):
    srv = start_server(tiny_model, tmp_path / "outputs", tmp_path / "server.log",
                       "--models-dir", str(models_dir))
    try:
        client = Client(srv.url, verbose=False)
        names = client.predict(True, api_name="/list_models")
        assert str(tiny_model) in names and "tiny-sd1.safetensors" in names
        with pytest.raises(Exception, match="Unknown model"):
            client.predict("../elsewhere/secret.safetensors", api_name="/select_model")
        banner = client.predict("tiny-sd1.safetensors", api_name="/select_model")
        assert "SD 1.x" in banner and "512" in banner
        gallery, info, params, seed = client.predict(prompt="a circle", steps=2, seed=5, width=64,
                                                     height=64, api_name="/txt2img")
        assert params[0]["model"]["name"] == "tiny-sd1" and "Model: tiny-sd1" in info
    finally:
        stop_server(srv)
