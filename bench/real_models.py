"""Random-weight models in the exact published configurations of SD 1.5 and SDXL base 1.0.

Random weights cost exactly what the real ones do (same layers, same shapes), and need no
download. Written once as diffusers folders (fp16 safetensors) under .cache/bench/ and loaded from
there by both the plain diffusers path and the studio, as a user's model would be.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "bench"
TOKENIZER = ROOT / "assets" / "clip-tokenizer"

_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
            block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=32)
_CLIP_L = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
               num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
               projection_dim=768)
_CLIP_BIGG = dict(vocab_size=49408, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32,
                  num_attention_heads=20, max_position_embeddings=77, hidden_act="gelu",
                  projection_dim=1280)
UNETS = {
    "sd15": dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
                 block_out_channels=(320, 640, 1280, 1280),
                 down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                 up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
                 cross_attention_dim=768, attention_head_dim=8),
    "sdxl": dict(sample_size=128, in_channels=4, out_channels=4, layers_per_block=2,
                 block_out_channels=(320, 640, 1280),
                 down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                 up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                 transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20),
                 cross_attention_dim=2048, use_linear_projection=True,
                 addition_embed_type="text_time", addition_time_embed_dim=256,
                 projection_class_embeddings_input_dim=2816),
}
NATIVE = {"sd15": 512, "sdxl": 1024}


def _tokenizer(pad: str = "<|endoftext|>"):
    from transformers import CLIPTokenizer
    return CLIPTokenizer(str(TOKENIZER / "vocab.json"), str(TOKENIZER / "merges.txt"),
                         model_max_length=77, pad_token=pad)


def real_model(family: str) -> Path:
    """The folder of a random-weight `family` model ("sd15" or "sdxl"), written on first use."""
    import torch

    folder = CACHE / f"{family}-random"
    if (folder / "model_index.json").exists():
        return folder
    torch.manual_seed(0)
    # random init takes seconds on a GPU, minutes for SDXL on a few cores (other draws, same costs)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        pipe = _random_pipeline(family)
    tmp = folder.with_suffix(".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.save_pretrained(tmp, safe_serialization=True)
    (tmp / "README.md").write_text(json.dumps({"random weights": family}), encoding="utf-8")
    tmp.rename(folder)
    return folder


def _random_pipeline(family: str):
    from diffusers import (AutoencoderKL, EulerDiscreteScheduler, PNDMScheduler,
                           StableDiffusionPipeline, StableDiffusionXLPipeline, UNet2DConditionModel)
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection
    sched = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                 num_train_timesteps=1000, steps_offset=1)
    unet = UNet2DConditionModel(**UNETS[family]).half()
    if family == "sd15":
        vae = AutoencoderKL(**_VAE, sample_size=512, scaling_factor=0.18215).half()
        pipe = StableDiffusionPipeline(
            vae=vae, unet=unet, text_encoder=CLIPTextModel(CLIPTextConfig(**_CLIP_L)).half(),
            tokenizer=_tokenizer(), scheduler=PNDMScheduler(**sched, skip_prk_steps=True),
            safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    else:
        vae = AutoencoderKL(**_VAE, sample_size=1024, scaling_factor=0.13025, force_upcast=True).half()
        pipe = StableDiffusionXLPipeline(
            vae=vae, unet=unet, text_encoder=CLIPTextModel(CLIPTextConfig(**_CLIP_L)).half(),
            text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**_CLIP_BIGG)).half(),
            tokenizer=_tokenizer(), tokenizer_2=_tokenizer("!"),
            scheduler=EulerDiscreteScheduler(**sched))
    return pipe
