"""Single checkpoint files in the original layout: family detection from the tensors, configs
written locally (no network, no hub cache), exact weights, and generation in every tab."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from tests.ldm_layout import tiny_pipeline, write_single_file
from studio.models.checkpoints import inspect, load_pipeline
from studio.config import Settings
from studio.errors import ModelLoadError
from studio.models.sources import describe
from studio.requests import make_request
from studio.serving.studio import Studio

CASES = [("sd1", False), ("sd2", False), ("sdxl", False), ("sd1", True), ("sd2", True), ("sdxl", True)]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """One original-layout .safetensors per family, and the pipeline it was written from."""
    folder = tmp_path_factory.mktemp("checkpoints")
    out = {}
    for family, inpainting in CASES:
        pipe = tiny_pipeline(family, inpainting)
        name = f"tiny-{family}{'-inpainting' if inpainting else ''}.safetensors"
        out[family, inpainting] = (write_single_file(pipe, family, folder / name, torch.float32), pipe)
    return out


@pytest.mark.parametrize("family,inpainting", CASES)
def test_family_is_read_from_the_tensors(files, family, inpainting):
    path, _ = files[family, inpainting]
    ck = inspect(path)
    assert (ck.family, ck.inpainting) == (family, inpainting)
    assert ck.native_size == {"sd1": 512, "sd2": 512 if inpainting else 768, "sdxl": 1024}[family]
    assert ck.prediction_type == ("v_prediction" if family == "sd2" and not inpainting else "epsilon")
    assert ck.configs["unet"]["in_channels"] == (9 if inpainting else 4)


@pytest.mark.parametrize("family,inpainting", CASES)
def test_single_file_loads_offline_with_the_exact_weights(files, family, inpainting, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", "/nonexistent-hf-home")        # no hub cache to fall back on
    path, original = files[family, inpainting]
    loaded = load_pipeline(inspect(path), torch.float32)
    assert type(loaded).__name__ == type(original).__name__
    parts = ["unet", "vae", "text_encoder"] + (["text_encoder_2"] if family == "sdxl" else [])
    for part in parts:
        want, got = getattr(original, part).state_dict(), getattr(loaded, part).state_dict()
        assert set(want) == set(got), part
        different = [k for k in want if not torch.equal(want[k], got[k])]
        assert not different, f"{part}: {different[:3]}"
    assert loaded.scheduler.config.prediction_type == original.scheduler.config.prediction_type
    assert loaded.tokenizer("a cat").input_ids == original.tokenizer("a cat").input_ids
    if family in ("sd2", "sdxl"):
        pad = (loaded.tokenizer if family == "sd2" else loaded.tokenizer_2).pad_token
        assert pad == "!"       # OpenCLIP's padding


@pytest.mark.parametrize("form", ["file", "folder"])
@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl"])
def test_every_tab_generates_from_a_single_file_or_a_folder(files, family, form, tmp_path):
    path, pipe = files[family, False]
    if form == "folder":          # the same model as a diffusers folder (save_pretrained)
        path = tmp_path / f"{family}-folder"
        pipe.save_pretrained(path)
    studio = Studio.from_settings(Settings(model=str(path), outputs=tmp_path / "out"))
    info = studio.model_info()
    assert info.kind == form
    if form == "file":    # a tiny folder's widths say nothing of the family; a file's layout does
        assert info.family.startswith({"sd1": "SD 1", "sd2": "SD 2", "sdxl": "SDXL"}[family])
    base = dict(prompt="a red circle", seed=3, steps=2, width=64, height=64)
    first = studio.local.run(make_request(**base)).images[0]
    again = studio.local.run(make_request(**base)).images[0]
    assert np.array_equal(np.asarray(first.image), np.asarray(again.image))
    img2img = studio.local.run(make_request(mode="img2img", image=first.image, strength=0.6, **base)).images[0]
    mask = np.zeros((64, 64), np.uint8)
    mask[16:48, 16:48] = 255
    from PIL import Image
    inpaint = studio.local.run(make_request(mode="inpaint", image=first.image, mask=Image.fromarray(mask), mask_blur=0,
                                      **base)).images[0]
    for result in (first, img2img, inpaint):
        assert result.path.is_file() and result.image.size == (64, 64)
    outside = np.asarray(inpaint.image)[mask == 0]
    assert np.array_equal(outside, np.asarray(first.image)[mask == 0])
    assert studio.local.manager.loads == 1


def test_inpainting_file_is_for_the_inpaint_tab(files, tmp_path):
    path, _ = files["sd1", True]
    studio = Studio.from_settings(Settings(model=str(path), outputs=tmp_path))
    from studio.errors import InvalidRequest
    with pytest.raises(InvalidRequest, match="inpainting model"):
        studio.local.run(make_request(prompt="x", steps=1, width=64, height=64))


def test_sidecar_yaml_and_flag_set_the_sd2_prediction_type(files, tmp_path):
    path, _ = files["sd2", False]
    copy = tmp_path / "base.safetensors"
    copy.write_bytes(path.read_bytes())
    (tmp_path / "base.yaml").write_text('model:\n  params:\n    parameterization: "eps"\n')
    assert inspect(copy).prediction_type == "epsilon" and inspect(copy).native_size == 512
    assert inspect(path, prediction_type="epsilon").prediction_type == "epsilon"
    assert "v-prediction" in describe(str(path)).notice


def test_pickled_checkpoint_needs_the_opt_in(files, tmp_path):
    path, original = files["sd1", False]
    from safetensors.torch import load_file
    ckpt = tmp_path / "model.ckpt"
    torch.save({"state_dict": load_file(str(path))}, ckpt)
    with pytest.raises(ModelLoadError, match="allow-pickle"):
        describe(str(ckpt))
    info = describe(str(ckpt), allow_pickle=True)
    assert info.family == "SD 1.x"


@pytest.mark.parametrize("content,message", [
    (b"not a safetensors file at all", "not a readable"),
    (None, "no Stable Diffusion UNet"),
])
def test_bad_files_get_a_clear_message(tmp_path, content, message):
    path = tmp_path / "x.safetensors"
    if content is None:   # a LoRA-like file: tensors, but no UNet
        save_file({"lora_unet_down.alpha": torch.ones(1)}, str(path))
    else:
        path.write_bytes(content)
    with pytest.raises(ModelLoadError, match=message):
        describe(str(path))


def _rewrite(path, out, rename):
    """A copy of the single file `path` at `out` with its tensors renamed (or dropped: None)."""
    from safetensors.torch import load_file
    sd = {rename(k): v for k, v in load_file(str(path)).items()}
    save_file({k: v for k, v in sd.items() if k is not None}, str(out))
    return out


def test_sd1_file_with_the_old_clip_layout_loads_and_generates(files, tmp_path, monkeypatch):
    """CLIP keys without `text_model.` (cond_stage_model.transformer.encoder...), as older tools
    wrote them and AUTOMATIC1111 renames on load."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", "/nonexistent-hf-home")
    path, original = files["sd1", False]
    clip = "cond_stage_model.transformer."
    old = _rewrite(path, tmp_path / "old-clip.safetensors",
                   lambda k: k.replace(clip + "text_model.", clip, 1))
    from safetensors.torch import load_file
    tensors = load_file(str(old))
    assert any(k.startswith(clip + "encoder.layers.") for k in tensors)
    assert not any(k.startswith(clip + "text_model.") for k in tensors)

    ck = inspect(old)                                                            # (a) the family
    assert (ck.family, ck.inpainting, ck.family_name) == ("sd1", False, "SD 1.x")
    assert ck.configs["text_encoder"] == inspect(path).configs["text_encoder"]
    assert "old layout" in describe(str(old)).notice

    ckpt = tmp_path / "old-clip.ckpt"             # the same file pickled, as such files often are
    torch.save({"state_dict": tensors}, ckpt)
    want = {k[len(clip):]: v for k, v in tensors.items() if k.startswith(clip)}
    for file, pickled in ((old, False), (ckpt, True)):                           # (b) exact weights
        loaded = load_pipeline(inspect(file, allow_pickle=pickled), torch.float32, allow_pickle=pickled)
        got = {k.removeprefix("text_model."): v for k, v in loaded.text_encoder.state_dict().items()
               if "position_ids" not in k}
        assert set(got) == set(want), file.name
        different = [k for k in want if got[k].dtype != want[k].dtype or not torch.equal(got[k], want[k])]
        assert not different, (file.name, different[:3])
        for part in ("unet", "vae"):
            a, b = getattr(original, part).state_dict(), getattr(loaded, part).state_dict()
            assert all(torch.equal(a[k], b[k]) for k in a), (file.name, part)

    images = []                                                                  # (c) generation
    for source in (old, path):    # the same weights in either layout paint the same picture
        studio = Studio.from_settings(Settings(model=str(source), outputs=tmp_path / source.stem))
        info = studio.model_info()
        assert (info.kind, info.family) == ("file", "SD 1.x")
        result = studio.local.run(make_request(prompt="a red circle", seed=3, steps=2, width=64, height=64)).images[0]
        assert result.path.is_file() and result.image.size == (64, 64)
        images.append(np.asarray(result.image))
    assert np.array_equal(images[0], images[1])


def test_a_unet_without_any_text_encoder_is_refused(files, tmp_path):
    path, _ = files["sd1", False]
    bare = _rewrite(path, tmp_path / "no-text.safetensors",
                    lambda k: None if k.startswith("cond_stage_model.") else k)
    with pytest.raises(ModelLoadError, match="no text encoder the studio recognises"):
        describe(str(bare))


def test_config_folder_has_no_weights_and_names_the_pipeline(files, tmp_path):
    from studio.models.checkpoints import write_config_folder
    folder = write_config_folder(inspect(files["sdxl", False][0]), tmp_path / "cfg")
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionXLPipeline" and "text_encoder_2" in index
    assert not list(folder.rglob("*.safetensors")) and not list(folder.rglob("*.bin"))
