"""`python -m studio.train.train --refine-decoder MODEL_FOLDER`: fine-tune only the VAE decoder
of a finished model folder, keeping everything else bit for bit (see `refine_decoder`)."""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import replace
from pathlib import Path

import torch

from .autoencoder import stage_decoder, stage_latents
from .common import RESUMED, bf16_native, machine_name
from .train import CONFIGS, stage_data


def refine_decoder(source: Path, out: Path, work: Path, device: str | None = None,
                   threads: int | None = None, command: str | None = None,
                   steps: int | None = None, config: str = "full") -> dict:
    """Fine-tune only the VAE decoder of a model folder this command wrote, on its frozen
    encoder's latents of the same world: the latent space, and so the UNets and the latent
    scale, stay as they are, and no UNet is retrained. It is how the 2026-12-01 model's decoder,
    the cap on its colour (an unseen yellow circle read back as an orange ring; held-out
    reconstructions right in colour 62%), was fixed without a 2-hour UNet run: 2,000 steps at
    lr 2e-3, gradient norm clipped at 0.5, bf16 autocast took its held-out reconstructions to
    colour 92%, shape 88.5%, and generation from the unchanged UNets (200 held-out prompts) from
    colour 64% to 82.5%, position 91% to 96.5%, shape 78% to 85%; inpainting "a blue square" fell
    from 58% to 29% (its UNet paints a cyan-blue that the old decoder happened to show as blue)."""
    started = time.time()
    RESUMED.clear()
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if threads:
        torch.set_num_threads(threads)
    record_path = source / "training.json"
    if not record_path.exists():
        raise SystemExit(f"--refine-decoder {source}: no training.json there (not written by this command)")
    rec = json.loads(record_path.read_text(encoding="utf-8"))
    made = rec["config"]
    base = CONFIGS[config]
    cfg = replace(base, seed=made["seed"], n_images=made["n_images"], size=made["size"],
                  decoder_steps=steps or base.refine_decoder_steps, decoder_lr=base.refine_decoder_lr)
    from diffusers import AutoencoderKL
    vae = AutoencoderKL.from_pretrained(source, subfolder="vae", torch_dtype=torch.float32)
    work.mkdir(parents=True, exist_ok=True)
    t = time.time()
    images, _ = stage_data(cfg, work)             # the same world the model was trained on
    data_s = time.time() - t
    sub = work / "decoder-refine"
    sub.mkdir(exist_ok=True)
    latents, _ = stage_latents(cfg, sub, vae.to(device).eval(), images, device)
    refined = stage_decoder(cfg, sub, vae, latents, images, device)
    rec = dict(rec)
    refines = list(rec.get("decoder_refines", []))
    refines.append({
        "command": command or f"python -m studio.train.train --refine-decoder {source}",
        "steps": cfg.decoder_steps, "lr": cfg.decoder_lr, "clip": cfg.vae_clip, "bf16": cfg.vae_bf16 and bf16_native(device),
        "batch": cfg.vae_batch, "psnr_db_before": round(refined["psnr_before"], 2),
        "psnr_db": round(refined["psnr"], 2), "seconds": round(refined["seconds"], 1),
        "device": device, "threads": torch.get_num_threads(),
        "machine": machine_name(),
        "torch": torch.__version__, "resumed": list(RESUMED)})
    rec["decoder_refines"] = refines
    timings = dict(rec["timings_s"])
    timings[f"decoder_refine{len(refines)}_s"] = round(refined["seconds"] + data_s, 1)
    rec["timings_s"] = timings
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp)
    for stale in ("README.md", "evaluation.json"):   # figures of the old decoder: evaluate --readme
        (tmp / stale).unlink(missing_ok=True)
    shutil.rmtree(tmp / "vae")
    vae.cpu().to(torch.float16).save_pretrained(tmp / "vae", safe_serialization=True)
    vae_config = json.loads((tmp / "vae" / "config.json").read_text(encoding="utf-8"))
    vae_config.pop("_name_or_path", None)   # where this machine loaded it from: not the model's
    (tmp / "vae" / "config.json").write_text(json.dumps(vae_config, indent=2, sort_keys=True) + "\n",
                                            encoding="utf-8")
    (tmp / "training.json").write_text(json.dumps(rec, indent=2, default=str), encoding="utf-8")
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    print(f"decoder refined in {time.time() - started:.0f} s: held-out PSNR "
          f"{refined['psnr_before']:.2f} -> {refined['psnr']:.2f} dB")
    return rec
