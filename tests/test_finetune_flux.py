"""Flux.1 LoRA training (studio/finetune/objectives.py `Flow`, export.py `flux_kohya_tensors`):
kohya's Flux layout in Black Forest Labs' names, fused projections made exactly from their parts
(the studio's loader gives the trained transformer's pictures back), and a short run on a tiny
Flux.1 dev folder (studio/families/tiny.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from studio.finetune.export import KEY_RULE, flux_kohya_tensors, lora_state, write_lora
from studio.finetune.objectives import FLUX_TARGETS


@pytest.fixture(scope="module")
def flux_folder(tmp_path_factory):
    from studio.families.tiny import write_tiny_flux
    return write_tiny_flux(tmp_path_factory.mktemp("flux") / "tiny-flux", "dev")


def _pipe(folder):
    from diffusers import FluxPipeline
    pipe = FluxPipeline.from_pretrained(folder, local_files_only=True, torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_flux_loras_are_kohyas_layout_and_the_studios_loader_gives_the_trained_pictures(tmp_path, flux_folder):
    import copy

    from peft import LoraConfig

    from studio.families.loras import lora_family
    from studio.models.addons import AddonState, apply_loras
    base = _pipe(flux_folder)
    torch.manual_seed(0)
    trained = copy.deepcopy(base.transformer)
    trained.add_adapter(LoraConfig(r=4, lora_alpha=2.0, init_lora_weights="gaussian", target_modules=FLUX_TARGETS))
    with torch.no_grad():
        for name, p in trained.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.3)
    tensors = flux_kohya_tensors(lora_state(trained), dict(trained.config), 2.0)
    modules = {k.rsplit(".", 2)[0] if k.endswith("weight") else k.rsplit(".", 1)[0] for k in tensors}
    assert {"lora_unet_double_blocks_0_img_attn_qkv", "lora_unet_double_blocks_0_txt_attn_qkv",
            "lora_unet_double_blocks_0_img_attn_proj", "lora_unet_double_blocks_0_txt_mlp_2",
            "lora_unet_single_blocks_0_linear1", "lora_unet_single_blocks_0_linear2"} <= modules
    assert not any("mod_lin" in m or "modulation" in m or "final_layer" in m for m in modules)
    assert tensors["lora_unet_single_blocks_0_linear1.lora_down.weight"].shape[0] == 4 * 4       # q, k, v, MLP in
    assert float(tensors["lora_unet_single_blocks_0_linear1.alpha"]) == 4 * 2.0                  # alpha / rank kept
    assert lora_family(tensors) == "flux" and all(KEY_RULE.match(k) for k in tensors)
    path = write_lora(tmp_path / "f.safetensors", tensors, {})

    def latents(pipe):               # the transformer's work, before the tiny VAE flattens it
        return pipe("a red circle", num_inference_steps=6, guidance_scale=3.5, height=32, width=32,
                    generator=torch.Generator().manual_seed(3), output_type="latent",
                    max_sequence_length=32).images[0].numpy()

    want = latents(_pipe_with(base, trained))
    plain = latents(base)
    apply_loras(base, AddonState(), [("f", path, 1.0)], "Flux.1 dev", arch="flux")
    got = latents(base)
    moved = np.abs(plain - want).max()
    assert np.abs(got - want).max() <= 0.02 * moved, (np.abs(got - want).max(), moved)   # fp16 in the file
    assert moved > 0.1


def _pipe_with(pipe, transformer):
    from diffusers import FluxPipeline
    out = FluxPipeline(**{**pipe.components, "transformer": transformer})
    out.set_progress_bar_config(disable=True)
    return out


def test_a_short_flux_run_writes_a_lora_the_studio_draws_its_samples_with(tmp_path, flux_folder):
    from safetensors import safe_open

    from embedded.finetune_measure import concept_dataset
    from studio.finetune.jobs import LOCAL, create_job
    from studio.finetune.settings import make_settings
    from studio.finetune.trainer import train

    concept_dataset(tmp_path / "datasets" / "azure", 4)
    raw = {"name": "flux-azure", "dataset": "azure", "preset": "quick", "trigger": "azure", "model": str(flux_folder),
           "resolution": 64, "steps": 6, "batch": 2, "sample_every": 6, "text_encoder_lr": 0.0, "embedding_lr": 0.0}
    job = create_job(tmp_path / "jobs", make_settings(raw), owner=LOCAL, models_dir=tmp_path / "models",
                     datasets=tmp_path / "datasets")
    assert train(job, tmp_path / "models", tmp_path / "datasets", "cpu") == "done", job.status()
    losses = [v for _, v in job.losses()]
    assert len(losses) == 6 and all(np.isfinite(losses))
    out = tmp_path / "models" / "loras" / "flux-azure.safetensors"
    with safe_open(str(out), framework="pt") as f:
        keys, meta = list(f.keys()), f.metadata()
    assert any(k.startswith("lora_unet_double_blocks_0_img_attn_qkv") for k in keys)
    assert meta["ss_base_model_version"] == "flux1" and {r["step"] for r in job.samples()} == {0, 6}
    refused = create_job(tmp_path / "jobs", make_settings({**raw, "name": "te", "text_encoder_lr": 1e-4}),
                         owner=LOCAL, models_dir=tmp_path / "models", datasets=tmp_path / "datasets")
    assert train(refused, tmp_path / "models", tmp_path / "datasets", "cpu") == "failed"
    assert "text encoders are not trained" in refused.status()["message"]
