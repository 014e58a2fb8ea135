"""Flux.1, SD 3.5 and Z-Image (studio/families) on this machine: load time, peak memory, seconds a picture.

    python bench/families.py                  # CPU: each tiny family through the studio (64 px, 4 steps):
                                              #   load seconds, peak RSS, s/picture, in a process each
    python bench/families.py --gpu            # a lent GPU: random weights of Flux.1's architecture (12B)
                                              #   at 1024 px, 4 and 28 steps, in memory modes none / fp8 /
                                              #   fp8-cpu-text / offload / group (peak GiB, s/image), and
                                              #   SD 3.5 Medium's at 1024
    python bench/families.py --gpu --dry-run  # the GPU code at tiny sizes on the CPU (what CI runs)

Measures, asserts nothing; the figures go to docs/performance.md with the date and device.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TINY = ("flux-dev", "flux-schnell", "flux-fill", "flux-kontext", "sd3.5", "z-image-turbo", "flux-dev-bfl-file",
        "sd3.5-aio-file", "z-image-turbo-comfyui-file", "flux-dev-q8_0-gguf", "z-image-turbo-q8_0-gguf")
PROMPT = "a red circle on a blue background"


# -- CPU: the tiny families through the studio ----------------------------------------------------

def _write(kind: str, root: Path) -> Path:
    from diffusers import DiffusionPipeline

    from studio.families.tiny import write_tiny_flux, write_tiny_sd3, write_tiny_zimage
    from tests.dit_layout import flux_to_bfl, write_all_in_one, write_comfyui_split, write_gguf, zimage_to_original

    if kind.startswith("flux-") and not kind.endswith(("file", "gguf")):
        return write_tiny_flux(root / kind, kind.split("-")[1])
    if kind == "sd3.5":
        return write_tiny_sd3(root / kind)
    if kind == "z-image-turbo":
        return write_tiny_zimage(root / kind, turbo=True)
    writers = {"flux": lambda: write_tiny_flux(root / "src", "dev"), "sd3.5": lambda: write_tiny_sd3(root / "src"),
               "z-image": lambda: write_tiny_zimage(root / "src", turbo=True)}
    folder = next(write() for prefix, write in writers.items() if kind.startswith(prefix))
    pipe = DiffusionPipeline.from_pretrained(folder, local_files_only=True)
    if kind == "sd3.5-aio-file":
        return write_all_in_one(pipe, root / "checkpoints" / "sd3.5_medium.safetensors")
    zimage = kind.startswith("z-image")
    path = write_comfyui_split(pipe, root, "z_image_turbo_bf16.safetensors" if zimage else "flux1-dev.safetensors")
    if kind.endswith("gguf"):
        path.unlink()
        tensors = zimage_to_original(pipe.transformer) if zimage else flux_to_bfl(pipe.transformer)
        return write_gguf(tensors, path.with_name("z_image_turbo-Q8_0.gguf" if zimage else "flux1-dev-Q8_0.gguf"),
                          "Q8_0", arch="lumina2" if zimage else "flux")
    return path


def tiny_one(kind: str) -> dict:
    """One tiny family in this process: written, loaded through the studio, three pictures."""
    import torch

    from studio.config import Settings
    from studio.requests import make_request
    from studio.serving.studio import Studio

    torch.set_num_threads(2)
    root = Path(tempfile.mkdtemp(prefix="bench-families-"))
    source = _write(kind, root)
    studio = Studio.from_settings(Settings(model=str(source), outputs=root / "out"))
    started = time.perf_counter()
    studio.local.manager.base()
    load = time.perf_counter() - started
    info = studio.local.manager.info()
    mode = "inpaint" if info.inpaint_only else "txt2img"
    extra = {}
    if mode == "inpaint":
        import numpy as np
        extra = {"image": np.zeros((64, 64, 3), np.uint8), "mask": np.full((64, 64), 255, np.uint8)}
    times = []
    for seed in range(3):
        started = time.perf_counter()
        studio.local.run(make_request(mode=mode, prompt=PROMPT, width=64, height=64, steps=4, seed=seed,
                                      scheduler="Euler", **extra))
        times.append(time.perf_counter() - started)
    return {"model": kind, "family": info.family, "load_s": round(load, 2), "picture_s": round(min(times), 3),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def tiny_all() -> list[dict]:
    rows = []
    for kind in TINY:
        done = subprocess.run([sys.executable, __file__, "--one", kind], capture_output=True, text=True, cwd=ROOT)
        line = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
        rows.append(json.loads(line) if line.startswith("{") else {"model": kind, "error": done.stderr[-400:]})
        print(json.dumps(rows[-1]), flush=True)
    return rows


# -- GPU: the real architectures with random weights -------------------------------------------------

FLUX_CONFIG = dict(patch_size=1, in_channels=64, out_channels=64, num_layers=19, num_single_layers=38,
                   attention_head_dim=128, num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768,
                   guidance_embeds=True, axes_dims_rope=[16, 56, 56])
SD35M_CONFIG = dict(sample_size=128, patch_size=2, in_channels=16, out_channels=16, num_layers=24, attention_head_dim=64,
                    num_attention_heads=24, joint_attention_dim=4096, caption_projection_dim=1536,
                    pooled_projection_dim=2048, pos_embed_max_size=384, qk_norm="rms_norm",
                    dual_attention_layers=tuple(range(13)))
T5_XXL = dict(d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64)
VAE = dict(block_out_channels=(128, 256, 512, 512), latent_channels=16, norm_num_groups=32)


def _shrunk(config: dict, dry: bool, **small) -> dict:
    return {**config, **small} if dry else config


def _pipeline(family: str, dry: bool, device: str, dtype):
    """A random-weight pipeline of the real architecture (tiny widths with --dry-run), made on
    `device` directly in `dtype` (12B parameters are not written to disk or initialised on a CPU)."""
    import diffusers
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, T5Config, T5EncoderModel

    from studio.families.files import VAE_FACTORS
    from studio.families.tokenizers import T5_VOCAB, clip_tokenizer, t5_tokenizer

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            t5 = T5EncoderModel(T5Config(vocab_size=T5_VOCAB, feed_forward_proj="gated-gelu", is_encoder_decoder=False,
                                         **_shrunk(T5_XXL, dry, d_model=32, d_ff=64, num_layers=2, num_heads=2, d_kv=16)))
            vae = diffusers.AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                                          layers_per_block=2 if not dry else 1, use_quant_conv=False, use_post_quant_conv=False,
                                          **_shrunk(VAE, dry, block_out_channels=(32,) * 4), **VAE_FACTORS[family])
            width = 64 if dry else 768
            clip = dict(vocab_size=49408, hidden_size=width, intermediate_size=4 * width, num_hidden_layers=2 if dry else 12,
                        num_attention_heads=max(1, width // 64), max_position_embeddings=77, projection_dim=width)
            if family == "flux":
                net = diffusers.FluxTransformer2DModel(**_shrunk(FLUX_CONFIG, dry, num_layers=1, num_single_layers=1,
                                                                 attention_head_dim=32, num_attention_heads=2,
                                                                 joint_attention_dim=32, pooled_projection_dim=64,
                                                                 axes_dims_rope=[4, 14, 14]))
                scheduler = diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5,
                                                                      max_shift=1.15)
                return diffusers.FluxPipeline(scheduler=scheduler, vae=vae, text_encoder=CLIPTextModel(CLIPTextConfig(**clip)),
                                              tokenizer=clip_tokenizer(), text_encoder_2=t5, tokenizer_2=t5_tokenizer(),
                                              transformer=net)
            big = 1280 if not dry else 64
            clip_g = {**clip, "hidden_size": big, "intermediate_size": 4 * big, "num_attention_heads": big // 64,
                      "projection_dim": big, "hidden_act": "gelu"}
            net = diffusers.SD3Transformer2DModel(**_shrunk(SD35M_CONFIG, dry, num_layers=2, num_attention_heads=2,
                                                            caption_projection_dim=128, joint_attention_dim=32,
                                                            pooled_projection_dim=128, pos_embed_max_size=32,
                                                            dual_attention_layers=(0,)))
            return diffusers.StableDiffusion3Pipeline(
                scheduler=diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0), vae=vae,
                text_encoder=CLIPTextModelWithProjection(CLIPTextConfig(**clip)), tokenizer=clip_tokenizer(),
                text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**clip_g)), tokenizer_2=clip_tokenizer("!"),
                text_encoder_3=t5, tokenizer_3=t5_tokenizer(256), transformer=net)
    finally:
        torch.set_default_dtype(previous)


def gpu_case(family: str, mode: str, steps: int, size: int, dry: bool) -> dict:
    import torch

    from studio.models.memory import MODES, Footprint, model_bytes, place, resolve_memory_mode

    device = "cpu" if dry else "cuda"
    dtype = torch.float32 if dry else torch.bfloat16
    started = time.perf_counter()
    pipe = _pipeline(family, dry, device, dtype)
    pipe.set_progress_bar_config(disable=True)
    made = time.perf_counter() - started
    if MODES[mode].offload and not dry:
        pipe.to("cpu")                                   # made on the GPU (fast), offloaded from the CPU
    place(pipe, device, resolve_memory_mode(mode, device, Footprint.of(pipe, offers=True), None))
    if not dry:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    kw = dict(prompt=PROMPT, num_inference_steps=steps, height=size, width=size, output_type="np",
              generator=torch.Generator("cpu").manual_seed(0))
    if family == "flux":
        kw["guidance_scale"] = 3.5
    pipe(**{**kw, "num_inference_steps": 1})             # warm-up (kernels, allocator)
    if not dry:
        torch.cuda.synchronize()
    started = time.perf_counter()
    pipe(**kw)
    if not dry:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated() / 2**30 if not dry else None
    row = {"family": family, "mode": mode, "steps": steps, "size": size, "s_per_image": round(seconds, 2),
           "it_s": round(steps / seconds, 2), "peak_gib": round(peak, 2) if peak else None,
           "weights_gib": round(model_bytes(pipe) / 2**30, 2), "made_s": round(made, 1)}
    del pipe
    return row


def gpu_all(dry: bool) -> list[dict]:
    size = 64 if dry else 1024
    cases = ([("flux", m, 4) for m in ("none", "fp8", "fp8-cpu-text", "offload", "group")]
             + [("flux", m, 28) for m in ("none", "fp8", "fp8-cpu-text", "group")] + [("sd3", "none", 28)])
    if dry:           # the code paths, not the figures: Flux in fp8 with T5 on the CPU, and SD 3.5
        cases = [("flux", "fp8-cpu-text", 2), ("sd3", "none", 2)]
    rows = []
    for family, mode, steps in cases:
        done = subprocess.run([sys.executable, __file__, "--gpu-one", family, mode, str(steps), str(size)]
                              + (["--dry-run"] if dry else []), capture_output=True, text=True, cwd=ROOT)
        line = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
        rows.append(json.loads(line) if line.startswith("{") else {"family": family, "mode": mode, "steps": steps,
                                                                   "error": done.stderr[-400:]})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gpu", action="store_true")
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--one", help=argparse.SUPPRESS)
    p.add_argument("--gpu-one", nargs=4, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(tiny_one(args.one)))
    elif args.gpu_one:
        family, mode, steps, size = args.gpu_one
        print(json.dumps(gpu_case(family, mode, int(steps), int(size), args.dry_run)))
    elif args.gpu:
        gpu_all(args.dry_run)
    else:
        tiny_all()


if __name__ == "__main__":
    main()
