"""Flux.1, SD 3.5 and Z-Image as users have them (studio/families/files.py): Black Forest Labs' and
Tongyi-MAI's transformer files with ComfyUI's text_encoders/ and vae/ folders, Stability's and ComfyUI's all-in-one files,
fp8 T5; each written by tests/dit_layout.py from a tiny diffusers folder (the key maps derived
from the reference code's module names) and loaded offline to the same weights and pictures."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from diffusers import DiffusionPipeline

from studio.config import Settings
from studio.errors import ModelLoadError
from studio.families.tiny import write_tiny_flux, write_tiny_sd3, write_tiny_zimage
from studio.models.sources import describe, read_pipeline, resolve
from studio.outputs.metadata import parse_parameters, read_metadata
from studio.requests import make_request
from studio.serving.studio import Studio

from .dit_layout import write_all_in_one, write_comfyui_split

SMALL = dict(prompt="a red circle", width=64, height=64, steps=2, seed=9, scheduler="Euler")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("dit-folders")
    folders = {"dev": write_tiny_flux(root / "flux1-dev", "dev"), "schnell": write_tiny_flux(root / "schnell", "schnell"),
               "fill": write_tiny_flux(root / "fill", "fill"), "sd3": write_tiny_sd3(root / "sd3.5"),
               "zimage": write_tiny_zimage(root / "z-image-turbo")}
    return {k: (v, DiffusionPipeline.from_pretrained(v, local_files_only=True)) for k, v in folders.items()}


def _picture(studio: Studio, **kw) -> np.ndarray:
    result = studio.local.run(make_request(**{**SMALL, **kw}))
    return np.asarray(result.images[0].image, dtype=np.int16), result


def _same_weights(a, b) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def _outputs(pipe, loaded) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward pass of each transformer on the same inputs."""
    cfg, g = pipe.transformer.config, torch.Generator().manual_seed(0)
    if hasattr(cfg, "cap_feat_dim"):             # Z-Image: lists of (C, F, H, W) latents and caption features
        args = ([torch.randn(cfg.in_channels, 1, 8, 8, generator=g)], torch.tensor([0.5]),
                [torch.randn(8, cfg.cap_feat_dim, generator=g)])
        with torch.no_grad():
            return tuple(m.transformer(*args, return_dict=False)[0][0] for m in (pipe, loaded))
    if hasattr(cfg, "guidance_embeds"):          # Flux: packed latents, T5 sequence, CLIP vector
        kw = dict(hidden_states=torch.randn(1, 16, cfg.in_channels, generator=g),
                  encoder_hidden_states=torch.randn(1, 8, cfg.joint_attention_dim, generator=g),
                  pooled_projections=torch.randn(1, cfg.pooled_projection_dim, generator=g),
                  timestep=torch.tensor([0.5]), img_ids=torch.zeros(16, 3), txt_ids=torch.zeros(8, 3),
                  guidance=torch.tensor([3.5]) if cfg.guidance_embeds else None)
    else:
        kw = dict(hidden_states=torch.randn(1, cfg.in_channels, 8, 8, generator=g),
                  encoder_hidden_states=torch.randn(1, 8, cfg.joint_attention_dim, generator=g),
                  pooled_projections=torch.randn(1, cfg.pooled_projection_dim, generator=g), timestep=torch.tensor([500]))
    with torch.no_grad():
        return pipe.transformer(**kw).sample, loaded.transformer(**kw).sample


def _same_transformer_output(pipe, loaded) -> None:
    """Equal to float rounding (the kernels may sum in another order for differently aligned memory)."""
    a, b = _outputs(pipe, loaded)
    assert torch.allclose(a, b, atol=1e-5, rtol=0), (a - b).abs().max()


def _close(a: np.ndarray, b: np.ndarray) -> bool:
    """The same picture, to one level of rounding."""
    return a.shape == b.shape and int(np.abs(a - b).max()) <= 1


def test_bfl_transformer_with_comfyuis_folders_is_the_folders_model(tiny, tmp_path):
    folder, pipe = tiny["dev"]
    path = write_comfyui_split(pipe, tmp_path, "flux1-dev.safetensors")
    studio = Studio.from_settings(Settings(model="", outputs=tmp_path / "out", models_dir=tmp_path / "models"))
    assert "diffusion_models/flux1-dev.safetensors" in studio.model_choices()
    info = studio.local.picker.select("diffusion_models/flux1-dev.safetensors")
    assert (info.family, info.kind, info.arch) == ("Flux.1 dev", "file", "flux")
    loaded = studio.local.manager.base()
    for name in ("transformer", "vae", "text_encoder", "text_encoder_2"):
        _same_weights(getattr(pipe, name), getattr(loaded, name))
    _same_transformer_output(pipe, loaded)
    by_file, result = _picture(studio)
    by_folder, _ = _picture(Studio.from_settings(Settings(model=str(folder), outputs=tmp_path / "out2")))
    assert _close(by_file, by_folder)
    fields = parse_parameters(read_metadata(result.images[0].path)[0])[2]
    assert fields["Model"] == "flux1-dev" and len(fields["Model hash"]) == 10
    assert studio.local.picker.current() == "diffusion_models/flux1-dev.safetensors"
    assert path.is_file()


def test_z_image_turbo_as_comfyui_has_it_is_the_folders_model(tiny, tmp_path):
    """z_image_turbo_bf16.safetensors in diffusion_models/, qwen_3_4b in text_encoders/, Flux's
    ae.safetensors in vae/: the Turbo variant by its name, the same weights and pictures."""
    folder, pipe = tiny["zimage"]
    write_comfyui_split(pipe, tmp_path, "z_image_turbo_bf16.safetensors")
    studio = Studio.from_settings(Settings(model="", outputs=tmp_path / "out", models_dir=tmp_path / "models"))
    info = studio.local.picker.select("diffusion_models/z_image_turbo_bf16.safetensors")
    assert (info.family, info.arch, info.few_step.steps) == ("Z-Image Turbo", "zimage", 9)
    loaded = studio.local.manager.base()
    for name in ("transformer", "vae", "text_encoder"):
        _same_weights(getattr(pipe, name), getattr(loaded, name))
    _same_transformer_output(pipe, loaded)
    by_file, result = _picture(studio)
    by_folder, _ = _picture(Studio.from_settings(Settings(model=str(folder), outputs=tmp_path / "out2")))
    assert _close(by_file, by_folder)
    assert parse_parameters(read_metadata(result.images[0].path)[0])[2]["Model"] == "z_image_turbo_bf16"
    (tmp_path / "models" / "text_encoders" / "qwen_3_4b.safetensors").unlink()
    with pytest.raises(ModelLoadError, match=r"no qwen3: add qwen_3_4b.safetensors \(Qwen3-4B\) in models/text_encoders"):
        describe(str(tmp_path / "models" / "diffusion_models" / "z_image_turbo_bf16.safetensors"))


@pytest.mark.parametrize("which, vae_prefix", [("sd3", "first_stage_model."), ("dev", "vae.")])
def test_all_in_one_files_load_as_the_folder(tiny, tmp_path, which, vae_prefix):
    folder, pipe = tiny[which]
    path = write_all_in_one(pipe, tmp_path / "checkpoints" / f"{which}-aio.safetensors", vae_prefix)
    info, ck = resolve(str(path))
    assert {p.path for p in ck.parts.values()} == {path}
    loaded = read_pipeline(info, ck, torch.float32, False, False)
    for name in ("transformer", "vae", "text_encoder", "text_encoder_2"):
        _same_weights(getattr(pipe, name), getattr(loaded, name))
    _same_transformer_output(pipe, loaded)
    studio = Studio.from_settings(Settings(model=str(path), outputs=tmp_path / "out"))
    by_folder, _ = _picture(Studio.from_settings(Settings(model=str(folder), outputs=tmp_path / "out2")))
    assert _close(_picture(studio)[0], by_folder)


def test_fp8_t5_is_read_into_the_working_precision(tiny, tmp_path):
    _, pipe = tiny["dev"]
    path = write_comfyui_split(pipe, tmp_path, "flux1-dev.safetensors", t5_dtype=torch.float8_e4m3fn)
    info, ck = resolve(str(path))
    assert ck.parts["t5xxl"].path.name == "t5xxl_fp8_e4m3fn.safetensors"
    loaded = read_pipeline(info, ck, torch.float32, False, False)
    want = pipe.text_encoder_2.state_dict()
    got = loaded.text_encoder_2.state_dict()
    key = "encoder.block.0.layer.0.SelfAttention.q.weight"
    assert got[key].dtype == torch.float32
    assert torch.equal(got[key], want[key].to(torch.float8_e4m3fn).to(torch.float32))
    assert not torch.equal(got[key], want[key])       # it really was stored in fp8


@pytest.mark.parametrize("which, label, only", [("schnell", "Flux.1 schnell", ()), ("fill", "Flux.1 Fill", ("inpaint",))])
def test_variant_is_read_from_the_tensors(tiny, tmp_path, which, label, only):
    _, pipe = tiny[which]
    path = write_comfyui_split(pipe, tmp_path, "model.safetensors")     # the name says nothing
    info = describe(str(path))
    assert info.family == label and info.own_modes == only


def test_kontext_is_told_by_its_name(tiny, tmp_path):
    _, pipe = tiny["dev"]
    path = write_comfyui_split(pipe, tmp_path, "flux1-kontext-dev.safetensors")
    assert describe(str(path)).family == "Flux.1 Kontext"


def test_a_missing_part_names_the_file_and_the_folder(tiny, tmp_path):
    _, pipe = tiny["dev"]
    path = write_comfyui_split(pipe, tmp_path, "flux1-dev.safetensors")
    (tmp_path / "models" / "text_encoders" / "t5xxl_fp16.safetensors").unlink()
    with pytest.raises(ModelLoadError, match=r"no t5xxl: add t5xxl_fp16.safetensors .* in models/text_encoders"):
        describe(str(path))
    shutil.rmtree(tmp_path / "models" / "vae")
    with pytest.raises(ModelLoadError, match="models/vae"):
        describe(str(path))


def test_sd3_without_t5_runs_on_its_clips(tiny, tmp_path):
    _, pipe = tiny["sd3"]
    path = write_comfyui_split(pipe, tmp_path, "sd3.5_medium.safetensors")
    (tmp_path / "models" / "text_encoders" / "t5xxl_fp16.safetensors").unlink()
    info = describe(str(path))
    assert "runs on CLIP-L and CLIP-G alone" in info.notice
    studio = Studio.from_settings(Settings(model=str(path), outputs=tmp_path / "out"))
    a, _ = _picture(studio)
    b, _ = _picture(studio, prompt="a blue square")
    assert not np.array_equal(a, b)


@pytest.fixture(scope="module")
def wide_flux(tmp_path_factory):
    """Flux.1's own heads (2 x 128 channels): rows wide enough for Q4_K's 256-value blocks."""
    folder = write_tiny_flux(tmp_path_factory.mktemp("wide") / "flux1-dev", "dev", head_dim=128)
    return DiffusionPipeline.from_pretrained(folder, local_files_only=True)


@pytest.mark.parametrize("kind, within", [("Q8_0", 0.02), ("Q4_K", 0.15)])
def test_gguf_transformers_load_quantised_and_stay_close(wide_flux, tmp_path, kind, within):
    from .dit_layout import flux_to_bfl, write_gguf

    write_comfyui_split(wide_flux, tmp_path, "unused.safetensors")
    (tmp_path / "models" / "diffusion_models" / "unused.safetensors").unlink()
    write_gguf(flux_to_bfl(wide_flux.transformer), tmp_path / "models" / "diffusion_models" / f"flux1-dev-{kind}.gguf",
               kind)
    studio = Studio.from_settings(Settings(model="", outputs=tmp_path / "out", models_dir=tmp_path / "models"))
    info = studio.local.picker.select(f"diffusion_models/flux1-dev-{kind}.gguf")
    assert info.family == "Flux.1 dev" and f"GGUF {kind}" in info.notice
    loaded = studio.local.manager.base()
    assert type(loaded.transformer.transformer_blocks[0].attn.to_q).__name__ == "GGUFLinear"
    g = torch.Generator().manual_seed(0)
    kw = dict(hidden_states=torch.randn(1, 16, 64, generator=g), encoder_hidden_states=torch.randn(1, 8, 32, generator=g),
              pooled_projections=torch.randn(1, 64, generator=g), timestep=torch.tensor([0.5]),
              img_ids=torch.zeros(16, 3), txt_ids=torch.zeros(8, 3), guidance=torch.tensor([3.5]))
    with torch.no_grad():
        want, got = wide_flux.transformer(**kw).sample, loaded.transformer(**kw).sample
    error = float((got - want).norm() / want.norm())
    assert 0 < error < within, error          # quantised (not the float weights), and close to them
    picture, _ = _picture(studio)
    assert picture.shape == (64, 64, 3)


def test_an_all_in_one_fp8_checkpoint_loads_in_the_working_precision(tiny, tmp_path):
    """ComfyUI's and Forge's fp8 checkpoints: every weight stored as float8_e4m3fn."""
    from safetensors.torch import load_file, save_file

    folder, pipe = tiny["dev"]
    path = write_all_in_one(pipe, tmp_path / "flux1-dev-fp8.safetensors", "vae.")
    tensors = load_file(str(path))
    save_file({k: v.to(torch.float8_e4m3fn) if v.is_floating_point() else v for k, v in tensors.items()}, str(path))
    info, ck = resolve(str(path))
    loaded = read_pipeline(info, ck, torch.float32, False, False)
    got = loaded.transformer.transformer_blocks[0].attn.to_q.weight
    want = pipe.transformer.transformer_blocks[0].attn.to_q.weight
    assert got.dtype == torch.float32 and torch.equal(got, want.to(torch.float8_e4m3fn).float())
    studio = Studio.from_settings(Settings(model=str(path), outputs=tmp_path / "out"))
    assert _picture(studio)[0].shape == (64, 64, 3)


@pytest.mark.parametrize("which, name, arch, label", [
    ("sd3", "sd3.5_medium-Q8_0.gguf", "sd3", "SD 3.5"), ("zimage", "z_image_turbo-Q8_0.gguf", "lumina2", "Z-Image Turbo")])
def test_sd3_and_z_image_gguf_transformers_load_quantised(tiny, tmp_path, which, name, arch, label):
    from .dit_layout import sd3_to_sai, write_gguf, zimage_to_original

    _, pipe = tiny[which]
    write_comfyui_split(pipe, tmp_path, "unused.safetensors")
    (tmp_path / "models" / "diffusion_models" / "unused.safetensors").unlink()
    tensors = (sd3_to_sai if which == "sd3" else zimage_to_original)(pipe.transformer)
    path = write_gguf(tensors, tmp_path / "models" / "diffusion_models" / name, "Q8_0", arch=arch)
    info, ck = resolve(str(path))
    assert info.family == label and "GGUF Q8_0" in info.notice
    loaded = read_pipeline(info, ck, torch.float32, False, False)
    blocks = loaded.transformer.transformer_blocks if which == "sd3" else loaded.transformer.layers
    assert type(blocks[0].attention.to_q if which == "zimage" else blocks[0].attn.to_q).__name__ == "GGUFLinear"
    want, got = _outputs(pipe, loaded)
    assert 0 < float((got - want).norm() / want.norm()) < 0.02
