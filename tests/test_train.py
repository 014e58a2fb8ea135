"""The training command's smoke configuration: the same code as the full run, in seconds."""

from __future__ import annotations

import json

import pytest
import torch

from studio.train.train import CONFIGS, TOKENIZER_SOURCE, train


def test_clip_tokenizer_files_are_clips_real_vocabulary():
    from transformers import CLIPTokenizer
    tok = CLIPTokenizer(str(TOKENIZER_SOURCE / "vocab.json"), str(TOKENIZER_SOURCE / "merges.txt"),
                        model_max_length=77)
    assert len(tok) == 49408
    assert tok("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    for text in ("🎨🔴 ∆ 日本語 café", "x" * 5000, "word " * 1000, ""):
        ids = tok(text, truncation=True, max_length=77).input_ids
        assert 2 <= len(ids) <= 77 and ids[0] == 49406 and ids[-1] == 49407


def test_smoke_training_writes_a_loadable_sd_folder_and_resumes(tmp_path, monkeypatch):
    from diffusers import StableDiffusionPipeline
    cfg = CONFIGS["smoke"]
    out, work = tmp_path / "model", tmp_path / "work"

    # Interrupted in the VAE stage right after its checkpoint at step 3 ...
    monkeypatch.setenv("STUDIO_TRAIN_INTERRUPT_AT", "3")
    with pytest.raises(KeyboardInterrupt):
        train(cfg, out, work, TOKENIZER_SOURCE)
    assert (work / "vae.pt").exists() and not out.exists()
    # ... then in the decoder fine-tune (the VAE resumes and finishes first) ...
    with pytest.raises(KeyboardInterrupt):
        train(cfg, out, work, TOKENIZER_SOURCE)
    assert torch.load(work / "decoder.pt", weights_only=False)["step"] == 3
    # ... then in the UNet stage (the decoder resumes and finishes first) ...
    with pytest.raises(KeyboardInterrupt):
        train(cfg, out, work, TOKENIZER_SOURCE)
    assert torch.load(work / "decoder.pt", weights_only=False)["done"]
    assert torch.load(work / "unet.pt", weights_only=False)["step"] == 3
    # ... and the same command once more finishes from the UNet checkpoint.
    monkeypatch.delenv("STUDIO_TRAIN_INTERRUPT_AT")
    record = train(cfg, out, work, TOKENIZER_SOURCE)
    assert record["resumed"] == ["UNet+text from step 3"]
    assert record["unet_steps_done"] == cfg.unet_steps

    pipe = StableDiffusionPipeline.from_pretrained(out, local_files_only=True, dtype=torch.float32)
    assert pipe.unet.dtype == torch.float32
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        assert (out / "tokenizer" / name).is_file()
    assert json.loads((out / "training.json").read_text())["config"]["name"] == "smoke"
    assert pipe.vae.config.scaling_factor == pytest.approx(record["latent_scale"])
    image = pipe("a red circle 🎨 " * 200, num_inference_steps=2, height=64, width=64,
                 output_type="np").images[0]
    assert image.shape == (64, 64, 3)
