"""Memory modes and the out-of-memory path (CPU: the savers and the retry logic; the GPU
figures per mode are for a GPU machine)."""

from __future__ import annotations

import numpy as np
import pytest

from studio.config import Settings
from studio.errors import InvalidRequest, StudioError
from studio.models.memory import OFFLOADERS, Footprint, resolve_memory_mode
from studio.requests import make_request
from studio.serving.studio import Studio

GiB = 1 << 30


# bf16/fp16 weights as they are: Flux dev (transformer 23.8 GB, T5-XXL + CLIP-L 9.75, VAE), SD 1.5, SDXL
FLUX = Footprint(weights=int(33.5 * GiB), largest=int(23.8 * GiB), fp8=int(23.8 * GiB), text=int(9.75 * GiB))
SD15 = Footprint(weights=2 * GiB, largest=int(1.7 * GiB))
SDXL = Footprint(weights=int(6.9 * GiB), largest=int(5.1 * GiB))


def test_auto_mode_from_free_memory():
    """The first mode that fits, fastest first; fp8 and text encoders on the CPU only where the
    family offers them (the transformer families), group offload when not even one part fits."""
    def auto(footprint, gib):
        return resolve_memory_mode("auto", "cuda", footprint, gib * GiB)
    assert [auto(FLUX, gib) for gib in (80, 32, 24, 16)] == ["none", "fp8", "fp8-cpu-text", "group"]
    assert [auto(SDXL, gib) for gib in (12, 10, 8, 6)] == ["none", "low", "offload", "group"]
    assert [auto(SD15, gib) for gib in (6, 4)] == ["none", "low"]
    assert resolve_memory_mode("auto", "cpu", SD15, None) == "none"
    assert [resolve_memory_mode(m, "cpu", FLUX, None) for m in ("offload", "group", "cpu-text")] == \
        ["low", "low", "cpu-text"]                  # offloading is from a GPU; the rest runs anywhere
    assert resolve_memory_mode("sequential", "cuda", SD15, 80 * GiB) == "sequential"


@pytest.fixture
def fresh(tiny_model, tmp_path):
    return Studio.from_settings(Settings(model=str(tiny_model), outputs=tmp_path))


def run(studio, **kw):
    return studio.local.run(make_request(**{"prompt": "a red circle", "seed": 4, "steps": 3, **kw}))


def test_low_memory_mode_keeps_the_image(fresh):
    plain = np.asarray(run(fresh).images[0].image, dtype=np.int16)
    assert fresh.local.manager.memory_in_use == "none"
    fresh.local.manager.set_memory("low")
    assert fresh.local.manager.memory_in_use == "low" and fresh.local.manager.loads == 1
    assert fresh.local.manager.base().vae.use_tiling and fresh.local.manager.base().vae.use_slicing
    low = np.asarray(run(fresh).images[0].image, dtype=np.int16)
    assert np.abs(low - plain).max() <= 2      # slicing changes float summation order only
    fresh.local.manager.set_memory("cpu-text")     # on a CPU the text encoders are where they were
    assert np.array_equal(np.asarray(run(fresh).images[0].image, dtype=np.int16), plain)
    with pytest.raises(InvalidRequest, match="Unknown memory mode"):
        fresh.local.manager.set_memory("turbo")


def test_oom_is_retried_with_savers_and_the_user_is_told(fresh):
    fresh.local.manager.memory = "none"
    fresh.local.manager.inject_oom = 1
    result = run(fresh)
    assert len(result.images) == 1 and result.images[0].path.is_file()
    assert any("Ran out of memory" in n for n in result.notes)
    assert fresh.local.manager.memory_in_use == "low" and fresh.local.manager.inject_oom == 0
    # savers already on: a second OOM is a clear message, and the next request works
    fresh.local.manager.inject_oom = 1
    with pytest.raises(StudioError, match="Out of memory at"):
        run(fresh)
    assert len(run(fresh).images) == 1


def test_low_memory_mode_works_on_the_embedded_model_whose_first_block_has_one_head(tmp_path):
    """diffusers' "auto" attention slicing halves each block's head count: 0 for a one-head block,
    a ZeroDivisionError in every picture (found by bench/gpu_check.py's dry run). One head a slice."""
    studio = Studio.from_settings(Settings(model="", outputs=tmp_path))
    plain = np.asarray(run(studio, width=64, height=64).images[0].image, dtype=np.int16)
    studio.local.manager.set_memory("low")
    low = np.asarray(run(studio, width=64, height=64).images[0].image, dtype=np.int16)
    assert np.abs(low - plain).max() <= 2


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_prompts_encode_under_sequential_offload_hooks(family):
    """Sequential CPU offload leaves each encoder's weights on the meta device between calls;
    the token ids must go where the hooks run the layers (the first lent GPU failed here with
    "Cannot copy out of meta tensor"). accelerate's hooks with a CPU execution device give the
    same layout without a GPU: the embeddings must equal the plain pipeline's."""
    import torch
    from accelerate import cpu_offload

    from studio.prompts.conditioning import Conditioner
    from tests.ldm_layout import tiny_pipeline
    pipe = tiny_pipeline(family)
    plain = Conditioner(pipe, "a red (circle:1.2)", "blurry", 4).pipeline_kwargs()
    for name in ("vae", "text_encoder", "text_encoder_2", "unet"):
        if getattr(pipe, name, None) is not None:
            cpu_offload(getattr(pipe, name), execution_device=torch.device("cpu"))
    assert pipe.text_encoder.device.type == "meta"
    hooked = Conditioner(pipe, "a red (circle:1.2)", "blurry", 4).pipeline_kwargs()
    assert plain.keys() == hooked.keys()
    for key in plain:
        if isinstance(plain[key], torch.Tensor):
            assert torch.equal(plain[key], hooked[key]), key


def test_fp8_mode_runs_on_the_cpu_and_stays_close(tmp_path):
    """Layerwise casting: the transformer's weights stored in fp8, each layer cast up to run."""
    import torch

    from studio.families.tiny import write_tiny_flux

    folder = write_tiny_flux(tmp_path / "flux1-dev", "dev")
    kw = dict(prompt="a red circle", width=64, height=64, steps=2, seed=3, scheduler="Euler")
    plain = Studio.from_settings(Settings(model=str(folder), outputs=tmp_path / "a"))
    small = Studio.from_settings(Settings(model=str(folder), outputs=tmp_path / "b", memory="fp8"))
    a = np.asarray(plain.local.run(make_request(**kw)).images[0].image, dtype=np.int16)
    result = small.local.run(make_request(**kw))
    b = np.asarray(result.images[0].image, dtype=np.int16)
    manager = small.local.manager
    weight = manager.base().transformer.transformer_blocks[0].attn.to_q.weight
    assert manager.memory_in_use == "fp8" and weight.dtype == torch.float8_e4m3fn
    assert any("fp8" in n for n in result.notes)
    assert not np.array_equal(a, b) and np.abs(a - b).mean() < 4       # rounded weights, the same picture
    assert "reloads" in manager.set_memory("none")
    assert manager.base().transformer.transformer_blocks[0].attn.to_q.weight.dtype == torch.float32


@pytest.mark.parametrize("kind", ["sd1", "flux"])
def test_group_offload_hooks_leave_the_picture_as_it_was(kind, tmp_path):
    """Memory mode group: diffusers' group offload hooks bring each layer's weights to the onload
    device as it runs, and the inputs with them (the studio's prompt encoders put token ids where
    the weights wait). Onloading to the CPU (no GPU here) runs the same hooks: txt2img (SD 1 with a
    LoRA, applied and removed under the hooks) and inpainting through the engine give the plain
    pictures bit for bit."""
    from PIL import Image

    from studio.families.tiny import write_tiny_flux
    from tests.ldm_layout import tiny_pipeline, write_kohya_lora, write_single_file
    models = tmp_path / "models"
    for folder in ("checkpoints", "loras"):
        (models / folder).mkdir(parents=True)
    if kind == "flux":
        write_tiny_flux(models / "checkpoints" / "flux1-dev", "dev")
        name, prompt = "flux1-dev", "a red circle"
    else:
        sd1 = tiny_pipeline("sd1")
        write_single_file(sd1, "sd1", models / "checkpoints" / "sd1.safetensors")
        write_kohya_lora(sd1, models / "loras" / "ink.safetensors", seed=1)
        name, prompt = "sd1.safetensors", "a red circle <lora:ink:0.8>"
    studio = Studio.from_settings(Settings(model="", models_dir=models, outputs=tmp_path / "out"))
    studio.select_model(name)
    picture = Image.new("RGB", (64, 64), (200, 40, 40))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    requests = [dict(prompt=prompt, width=64, height=64, scheduler="Euler"),
                dict(mode="inpaint", image=picture, mask=mask, width=64, height=64, scheduler="Euler")]
    plain = [np.asarray(run(studio, **kw).images[0].image) for kw in requests]
    manager = studio.local.manager
    OFFLOADERS["group"](manager.base(), "cpu")
    manager.text_cache.clear()                       # the prompts are encoded again, under the hooks
    assert any(hasattr(m, "_diffusers_hook") for m in manager.base().text_encoder.modules())
    hooked = [np.asarray(run(studio, **kw).images[0].image) for kw in requests]
    assert all(np.array_equal(a, b) for a, b in zip(plain, hooked))
