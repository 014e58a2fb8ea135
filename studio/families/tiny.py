"""Tiny random-weight Flux.1, SD 3.5 and Z-Image pipelines built in code, for tests and offline trials.

The classes, key names and channel counts are the real ones (a 16-channel VAE that downsamples
8x, a transformer that reads 2x2 patches: 64 input channels for Flux, 384 for Flux Fill; CLIP and
T5 encoders with the shipped tokenizers), and so are the rules the original single files leave
to the reader (studio/families/files.py): 64 channels per CLIP and SD 3.5 head, as many SD 3.5
heads as blocks, Flux's rotary axes in BFL's proportions, 32 VAE norm groups. Only depths and
widths are tiny, so a 64 px picture takes milliseconds on a CPU. What is written is a diffusers
folder, as a user would have one.
"""

from __future__ import annotations

from pathlib import Path

from studio.families.files import VAE_FACTORS
from studio.families.tokenizers import T5_VOCAB, clip_tokenizer, t5_tokenizer

FLUX_VARIANTS = ("dev", "schnell", "fill", "kontext")
LATENT = 16                   # the latent channels of Flux's and SD 3.5's VAE


def _vae(factors: dict):
    from diffusers import AutoencoderKL

    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=LATENT, block_out_channels=(32,) * 4,
                         down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                         layers_per_block=1, norm_num_groups=32, sample_size=64, use_quant_conv=False,
                         use_post_quant_conv=False, **factors)


def _clip(projection: bool, seed: int, act: str = "quick_gelu", hidden: int = 64):
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    config = CLIPTextConfig(vocab_size=49408, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                            num_attention_heads=hidden // 64, max_position_embeddings=77, projection_dim=hidden,
                            hidden_act=act,
                            bos_token_id=49406, eos_token_id=49407, pad_token_id=49407)
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config)


def _t5(width: int, seed: int):
    import torch
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    return T5EncoderModel(T5Config(vocab_size=T5_VOCAB, d_model=width, d_kv=8, d_ff=2 * width, num_layers=2,
                                   num_heads=2, feed_forward_proj="gated-gelu", is_encoder_decoder=False))


def write_tiny_flux(path: str | Path, variant: str = "dev", *, seed: int = 0, head_dim: int = 32) -> Path:
    """A Flux.1 folder: `dev` (guidance embedding), `schnell` (none), `fill` (384 input channels:
    latents, masked picture and mask), `kontext` (dev's transformer, the editing pipeline).
    `head_dim` 128 gives Flux.1's own heads and rotary axes (256 channels: wide enough for the
    256-value blocks of GGUF's k-quants)."""
    import torch
    from diffusers import (FlowMatchEulerDiscreteScheduler, FluxFillPipeline, FluxKontextPipeline,
                           FluxPipeline, FluxTransformer2DModel)

    if variant not in FLUX_VARIANTS:
        raise ValueError(f"variant is one of {FLUX_VARIANTS}")
    path = Path(path)
    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=384 if variant == "fill" else 4 * LATENT, out_channels=4 * LATENT,
        num_layers=1, num_single_layers=1, attention_head_dim=head_dim, num_attention_heads=2, joint_attention_dim=32,
        pooled_projection_dim=64, guidance_embeds=variant != "schnell",
        axes_dims_rope=[head_dim // 8, head_dim * 7 // 16, head_dim * 7 // 16])
    scheduler = FlowMatchEulerDiscreteScheduler(shift=1.0 if variant == "schnell" else 3.0,
                                                use_dynamic_shifting=variant != "schnell", base_shift=0.5,
                                                max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096)
    cls = {"fill": FluxFillPipeline, "kontext": FluxKontextPipeline}.get(variant, FluxPipeline)
    pipe = cls(scheduler=scheduler, vae=_vae(VAE_FACTORS["flux"]), text_encoder=_clip(False, seed + 1),
               tokenizer=clip_tokenizer(),
               text_encoder_2=_t5(32, seed + 2), tokenizer_2=t5_tokenizer(256 if variant == "schnell" else 512),
               transformer=transformer)
    pipe.save_pretrained(path, safe_serialization=True)
    return path


def write_tiny_sd3(path: str | Path, *, seed: int = 0, t5: bool = True) -> Path:
    """An SD 3.5-layout folder: MMDiT (2x2 patches, 16 latent channels), CLIP-L and CLIP-G with
    projections, T5 (left out with t5=False, as SD 3.5 allows)."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    path = Path(path)
    torch.manual_seed(seed)
    transformer = SD3Transformer2DModel(
        sample_size=8, patch_size=2, in_channels=LATENT, out_channels=LATENT, num_layers=2, attention_head_dim=64,
        num_attention_heads=2, joint_attention_dim=32, caption_projection_dim=128, pooled_projection_dim=128,
        pos_embed_max_size=32, qk_norm="rms_norm", dual_attention_layers=(0,))
    pipe = StableDiffusion3Pipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=_vae(VAE_FACTORS["sd3"]),
        text_encoder=_clip(True, seed + 1), tokenizer=clip_tokenizer(),
        text_encoder_2=_clip(True, seed + 2, "gelu"), tokenizer_2=clip_tokenizer("!"),
        text_encoder_3=_t5(32, seed + 3) if t5 else None, tokenizer_3=t5_tokenizer(256) if t5 else None,
        transformer=transformer)
    pipe.save_pretrained(path, safe_serialization=True)
    return path


def write_tiny_zimage(path: str | Path, *, seed: int = 0, turbo: bool = False) -> Path:
    """A Z-Image folder: the single-stream transformer (2x2 patches, 16 latent channels, Z-Image's
    rotary proportions), Qwen3 as text encoder (Qwen3-4B's rotary base) with the shipped tokenizer,
    Flux's VAE; `turbo` names it as the distilled one."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, ZImagePipeline, ZImageTransformer2DModel
    from transformers import Qwen3Config, Qwen3Model

    from studio.families.encoders import QWEN3_4B
    from studio.families.tokenizers import qwen3_tokenizer

    path = Path(path)
    torch.manual_seed(seed)
    transformer = ZImageTransformer2DModel(all_patch_size=(2,), all_f_patch_size=(1,), in_channels=LATENT, dim=64,
                                           n_layers=1, n_refiner_layers=1, n_heads=2, n_kv_heads=2, cap_feat_dim=32,
                                           axes_dims=[8, 12, 12], axes_lens=[64, 32, 32])
    torch.manual_seed(seed + 1)
    text_encoder = Qwen3Model(Qwen3Config(vocab_size=151936, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                          num_attention_heads=2, num_key_value_heads=1, head_dim=16, **QWEN3_4B))
    pipe = ZImagePipeline(scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=_vae(VAE_FACTORS["flux"]),
                          text_encoder=text_encoder, tokenizer=qwen3_tokenizer(), transformer=transformer)
    pipe.save_pretrained(path, safe_serialization=True)
    return path
