"""SDXL LoRA training (studio/finetune/text.py, export.py): kohya's SDXL layout checked against
the original model's module names and the readers' text-encoder rules, the round trip through the
studio's loader, and a short run on an architecture-faithful tiny SDXL (tests/ldm_layout.py,
one layer a level, so the block numbering is not the real model's by accident)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from studio.finetune.export import KEY_RULE, kohya_tensors, lora_state, write_lora
from tests.ldm_layout import tiny_pipeline, unet_to_ldm

# The readers' rules for SDXL text encoders (facts, not their code): ComfyUI maps CLIP-L's layers
# as lora_te1_text_model_encoder_layers_{b}_{c} and OpenCLIP bigG's as lora_te2_..., c one of
# these; AUTOMATIC1111 matches lora_te2_text_model_encoder_layers_(\d+)_(.+) the same way.
CLIP_PARTS = "(self_attn_(q|k|v|out)_proj|mlp_fc1|mlp_fc2)"
TE_RULES = {"te1": re.compile(rf"^lora_te1_text_model_encoder_layers_\d+_{CLIP_PARTS}$"),
            "te2": re.compile(rf"^lora_te2_text_model_encoder_layers_\d+_{CLIP_PARTS}$")}


def _with_lora(pipe, seed=0):
    """Copies of the UNet and both text encoders with PEFT LoRA layers (random lora_B), as the trainer holds them."""
    import copy

    from peft import LoraConfig, inject_adapter_in_model

    from studio.finetune.export import TEXT_TARGETS, UNET_TARGETS
    torch.manual_seed(seed)
    unet = copy.deepcopy(pipe.unet)
    unet.add_adapter(LoraConfig(r=4, lora_alpha=2.0, init_lora_weights="gaussian", target_modules=list(UNET_TARGETS)))
    encoders = [copy.deepcopy(pipe.text_encoder), copy.deepcopy(pipe.text_encoder_2)]
    for te in encoders:
        inject_adapter_in_model(LoraConfig(r=4, lora_alpha=2.0, target_modules=list(TEXT_TARGETS)), te)
    with torch.no_grad():
        for model in (unet, *encoders):
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.05)
    return unet, encoders


def _tensors(unet, encoders):
    return (kohya_tensors(lora_state(unet), "unet", 2.0, sgm_blocks=unet.config.layers_per_block)
            | kohya_tensors(lora_state(encoders[0]), "te1", 2.0) | kohya_tensors(lora_state(encoders[1]), "te2", 2.0))


@pytest.fixture(scope="module")
def xl():
    return tiny_pipeline("sdxl")


def test_sdxl_keys_name_the_original_models_modules_and_the_readers_text_encoder_rules(xl):
    unet, encoders = _with_lora(xl)
    tensors = _tensors(unet, encoders)
    modules = {k.rsplit(".", 2)[0] if k.endswith(".weight") else k.rsplit(".", 1)[0] for k in tensors}
    original = {k[len("model.diffusion_model."):].rsplit(".", 1)[0].replace(".", "_")
                for k in unet_to_ldm(xl.unet.state_dict(), xl.unet.config)}
    unet_keys = {m[len("lora_unet_"):] for m in modules if m.startswith("lora_unet_")}
    assert unet_keys and unet_keys <= original, sorted(unet_keys - original)[:3]
    assert "input_blocks_3_1_transformer_blocks_0_attn1_to_q" in unet_keys        # level 1: 1 + 1 x (1 + 1) + 0
    assert "output_blocks_0_1_transformer_blocks_1_attn2_to_k" in unet_keys       # the deepest, 2 blocks deep
    assert "middle_block_1_proj_in" in unet_keys
    for prefix, rule in TE_RULES.items():
        ours = [m for m in modules if m.startswith(f"lora_{prefix}_")]
        assert len(ours) == 2 * 6 and all(rule.match(m) for m in ours)          # 2 layers x 6 linears each
    assert len(unet_keys) == len(lora_state(unet)) // 2 and all(KEY_RULE.match(k) for k in tensors)


def test_an_sdxl_lora_through_the_studios_loader_gives_the_trained_models_pictures(tmp_path, xl):
    from diffusers import StableDiffusionXLPipeline

    from studio.models.addons import AddonState, apply_loras
    unet, encoders = _with_lora(xl, seed=1)
    path = write_lora(tmp_path / "xl.safetensors", _tensors(unet, encoders), {})
    trained = StableDiffusionXLPipeline(**{**xl.components, "unet": unet, "text_encoder": encoders[0],
                                           "text_encoder_2": encoders[1]})

    def picture(pipe):
        out = pipe("a red circle", num_inference_steps=12, guidance_scale=5.0, height=64, width=64,
                   generator=torch.Generator().manual_seed(3), output_type="np").images[0]
        return np.round(out * 255)

    want = picture(trained)
    base = tiny_pipeline("sdxl")
    plain = picture(base)
    apply_loras(base, AddonState(), [("xl", path, 1.0)], "SDXL")
    got = picture(base)
    assert np.abs(got - want).max() <= 2, np.abs(got - want).max()
    assert np.abs(plain - want).max() > 10


def test_a_short_sdxl_run_trains_both_encoders_and_the_words_and_the_studio_loads_it(tmp_path, xl):
    from safetensors.torch import load_file

    from embedded.finetune_measure import concept_dataset
    from studio.finetune.jobs import LOCAL, create_job
    from studio.finetune.settings import make_settings
    from studio.finetune.trainer import train

    model = tmp_path / "tiny-xl"
    xl.save_pretrained(model)
    concept_dataset(tmp_path / "datasets" / "azure", 4)
    settings = make_settings({"name": "xl-azure", "dataset": "azure", "preset": "quick", "trigger": "azure",
                              "model": str(model), "resolution": 64, "steps": 4, "batch": 2, "sample_every": 4,
                              "text_encoder_lr": 1e-4, "embedding_lr": 1e-3})
    job = create_job(tmp_path / "jobs", settings, owner=LOCAL, models_dir=tmp_path / "models",
                     datasets=tmp_path / "datasets")
    assert train(job, tmp_path / "models", tmp_path / "datasets", "cpu") == "done", job.status()
    out = tmp_path / "models" / "loras" / "xl-azure.safetensors"
    tensors = load_file(str(out))
    prefixes = {k.split("_")[1] for k in tensors if k.startswith("lora_")}
    assert prefixes == {"unet", "te1", "te2"} and any("input_blocks_" in k for k in tensors)
    assert tensors["bundle_emb.azure.clip_l"].shape == (1, 64) and tensors["bundle_emb.azure.clip_g"].shape == (1, 128)
    assert {r["step"] for r in job.samples()} == {0, 4}
    from safetensors import safe_open
    with safe_open(str(out), framework="pt") as f:
        assert f.metadata()["ss_base_model_version"] == "sdxl_base_v1-0"


def test_buckets_keep_each_pictures_shape_at_about_the_same_area():
    import torch as t

    from studio.finetune.buckets import bucket_of, epoch_batches, sizes
    xl = sizes(1024)
    assert (1024, 1024) in xl and (832, 1216) in xl and (1216, 832) in xl          # SDXL's own portrait/landscape
    assert all(w % 64 == 0 and h % 64 == 0 and w * h <= 1024 ** 2 and max(w, h) <= 2 * min(w, h) for w, h in xl)
    assert bucket_of(3000, 4000, xl) == (896, 1152) and bucket_of(500, 500, xl) == (1024, 1024)
    assert sizes(64) == [(64, 64)]                                   # the embedded model: the square only
    groups = {(64, 128): [0, 0, 1], (128, 64): [2, 3, 4, 5, 6]}
    batches = epoch_batches(groups, 2, t.Generator().manual_seed(0))
    assert sorted(i for b in batches for i in b) == [0, 0, 1, 2, 3, 4, 5, 6]
    size_of = {i: size for size, members in groups.items() for i in members}
    assert all(len({size_of[i] for i in b}) == 1 for b in batches)             # one size a batch
    assert max(map(len, batches)) == 2 and len(batches) == 2 + 3


def test_an_sdxl_run_with_buckets_trains_portraits_and_landscapes_at_their_shape(tmp_path, xl):
    from PIL import Image
    from safetensors import safe_open

    from studio.finetune.jobs import LOCAL, create_job
    from studio.finetune.settings import make_settings
    from studio.finetune.trainer import train
    model = tmp_path / "tiny-xl"
    xl.save_pretrained(model)
    folder = tmp_path / "datasets" / "shapes"
    folder.mkdir(parents=True)
    for i, size in enumerate([(300, 500), (310, 520), (500, 300), (400, 400)]):
        Image.new("RGB", size, (40 * i, 100, 200)).save(folder / f"{i}.png")
        (folder / f"{i}.txt").write_text("a blue picture")
    settings = make_settings({"name": "xl-b", "dataset": "shapes", "preset": "sdxl", "model": str(model),
                              "resolution": 256, "steps": 3, "batch": 2, "sample_every": 100, "prior_weight": 0,
                              "repeats": 1, "gradient_checkpointing": True})
    assert settings.buckets                                   # the SDXL preset keeps shapes
    job = create_job(tmp_path / "jobs", settings, owner=LOCAL, models_dir=tmp_path / "models",
                     datasets=tmp_path / "datasets")
    assert train(job, tmp_path / "models", tmp_path / "datasets", "cpu") == "done", job.status()
    with safe_open(str(tmp_path / "models" / "loras" / "xl-b.safetensors"), framework="pt") as f:
        info = json.loads(f.metadata()["ss_bucket_info"])["buckets"].values()
    assert sorted((tuple(b["resolution"]), b["count"]) for b in info) == [((192, 320), 2), ((256, 256), 1),
                                                                          ((320, 192), 1)]
