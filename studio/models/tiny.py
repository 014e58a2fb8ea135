"""Tiny Stable-Diffusion-layout pipelines built in code, for tests and offline trials.

The layers and key names are those of the real SD 1.x architecture (AutoencoderKL,
UNet2DConditionModel with cross-attention, CLIPTextModel, CLIPTokenizer); only the widths are
tiny, so everything the studio does with a real model can be exercised on a CPU in milliseconds.
The tokenizer is byte-level (every UTF-8 byte is a token), so any text, emoji included, encodes.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["write_tiny_model", "byte_vocabulary"]


def byte_vocabulary() -> dict[str, int]:
    """CLIP's byte-to-unicode table as a vocabulary: 256 byte symbols, the same with `</w>`,
    then the two special tokens. Without merges every word is spelt out byte by byte."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            chars.append(256 + extra)
            extra += 1
    symbols = [chr(c) for c in chars]
    tokens = symbols + [s + "</w>" for s in symbols] + ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}


def write_tiny_model(path: str | Path, *, seed: int = 0, inpainting: bool = False,
                     sample_size: int = 16) -> Path:
    """Write a random-weight SD-1.x-layout diffusers folder (about 1 MB) and return its path.

    `inpainting=True` gives the 9-channel UNet of the dedicated inpainting checkpoints.
    `sample_size` is the latent size; the VAE downsamples 4x, so 16 -> 64 px images.
    """
    import torch
    from diffusers import (AutoencoderKL, DDIMScheduler, StableDiffusionPipeline,
                           UNet2DConditionModel)
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=sample_size, in_channels=9 if inpainting else 4, out_channels=4,
        layers_per_block=1, block_out_channels=(32, 64), norm_num_groups=8,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8,
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 32, 32),
        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
        layers_per_block=1, norm_num_groups=8, sample_size=sample_size * 4,
    )
    vocab = byte_vocabulary()
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=77, projection_dim=32,
        bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"],
        pad_token_id=vocab["<|endoftext|>"],
    ))
    tok_dir = path / "_tokenizer_src"
    tok_dir.mkdir(exist_ok=True)
    (tok_dir / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (tok_dir / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    tokenizer = CLIPTokenizer(str(tok_dir / "vocab.json"), str(tok_dir / "merges.txt"),
                              model_max_length=77)
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(path, safe_serialization=True)
    # Keep the slow-tokenizer files too: transformers 5 writes tokenizer.json only.
    for name in ("vocab.json", "merges.txt"):
        (path / "tokenizer" / name).write_bytes((tok_dir / name).read_bytes())
        (tok_dir / name).unlink()
    tok_dir.rmdir()
    return path
