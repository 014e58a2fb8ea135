"""Train the embedded default model: a tiny Stable-Diffusion-format model of the shape world.

    python -m embedded.train                  # the full run (CPU: <= 2 h on 2 cores)
    python -m embedded.train --config smoke   # seconds; what the tests run
    python -m embedded.train --refine-decoder assets/embedded-model   # the decoder only (refine.py)
    python -m embedded.train --retrain-inpaint assets/embedded-model  # the inpainting UNet only
    python -m embedded.train --two-objects assets/embedded-model      # the UNet on, more two-object pictures
    python -m embedded.train --regions assets/embedded-model          # the UNet on, regional prompts taught

Stages, each resumable from the newest checkpoint in --work (kill it and run the same command
again): 1. render the data set, 2. train the VAE, 3. encode the data set to latents, 4. fine-tune
the VAE decoder on those latents, 5. train the UNet and the CLIP text encoder together, mostly
for the layout, 5b. go on from its EMA weights for the details (embedded/unet.py), 6. train
a 9-channel inpainting UNet from it (embedded/inpaint.py), 7. export a diffusers folder
(fp16 weights) to --out. Stages 2-4 live in embedded/autoencoder.py.

Choices, each for a measured reason (issue 3): v-prediction on SD's scaled-linear betas (see
embedded/model.py for the two runs that led there) so every SD sampler applies; 10% empty captions so classifier-free guidance
and negative prompts work; min-SNR-gamma loss weighting (Hang et al. 2023, arXiv:2303.09556),
floored so that the high-noise steps, where the layout is set, keep their weight, and a share of
every batch drawn from high noise (see `loss_weight`), then a detail phase without either (see
`unet.unet_phases`); an EMA of the weights to converge faster
and steadier in a short CPU budget.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from studio.config import ROOT
from .autoencoder import stage_decoder, stage_latents, stage_vae
from .config import CONFIGS, TrainConfig
from .data import _tokens, stage_data
from studio.models.precision import bf16_native

from .common import RESUMED, _stage_time, machine_name
from .export import export
from .inpaint import stage_inpaint
from .model import TOKENIZER_SOURCE, build_models, load_tokenizer
from .unet import train_unet

DEFAULT_OUT = ROOT / "assets" / "embedded-model"
DEFAULT_WORK = ROOT / ".cache" / "train"


# ---------------------------------------------------------------------------------------------
# Stages

def reuse_autoencoder(folder: Path, vae):
    """Load into `vae` (built from this config) the VAE of a model folder this command wrote
    (stages 2-4 done then); returns its PSNR figures and the seconds those stages took, read from
    the folder's training.json: retraining the UNet on an unchanged latent space need not retrain
    the autoencoder."""
    from safetensors.torch import load_file

    record_path = folder / "training.json"
    if not record_path.exists():
        raise SystemExit(f"--autoencoder {folder}: no training.json there (not written by this command)")
    rec = json.loads(record_path.read_text(encoding="utf-8"))
    try:
        vae.load_state_dict(load_file(folder / "vae" / "diffusion_pytorch_model.safetensors"))
    except (OSError, RuntimeError) as exc:
        raise SystemExit(f"--autoencoder {folder}: its VAE does not fit this config ({exc})") from None
    earlier = {f"{stage}_s_earlier_invocation": sum(v for k, v in rec["timings_s"].items()
                                                    if k.startswith(f"{stage}_s"))
               for stage in ("vae", "decoder")}
    return rec["vae_psnr_db"], rec["vae_psnr_db_after_decoder_finetune"], earlier


def train(cfg: TrainConfig, out: Path, work: Path, tokenizer_dir: Path, device: str | None = None,
          threads: int | None = None, autoencoder: Path | None = None, command: str | None = None) -> dict:
    started = time.time()
    RESUMED.clear()
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if threads:
        torch.set_num_threads(threads)
    work.mkdir(parents=True, exist_ok=True)
    (work / "config.json").write_text(json.dumps(asdict(cfg), indent=2), encoding="utf-8")
    random.seed(cfg.seed); np.random.seed(cfg.seed); torch.manual_seed(cfg.seed)
    tokenizer = load_tokenizer(tokenizer_dir)
    vae, unet, text = build_models(cfg, len(tokenizer))

    t = time.time()
    images, captions = stage_data(cfg, work)
    timings = {"data_s": time.time() - t}
    if autoencoder is None:
        t = time.time()
        psnr, earlier = stage_vae(cfg, work, vae, images, device)
        timings["vae_s"] = time.time() - t
        if earlier is not None:  # trained by an earlier invocation of the same command (resumed run)
            timings["vae_s_earlier_invocation"] = earlier
        t = time.time()
        latents, scale = stage_latents(cfg, work, vae.to(device).eval(), images, device)
        timings["latents_s"] = time.time() - t
        t = time.time()
        decoder = stage_decoder(cfg, work, vae, latents, images, device)
        _stage_time(timings, "decoder", t, decoder["seconds"])
        psnr_after = decoder["psnr"]
    else:
        psnr, psnr_after, earlier_timings = reuse_autoencoder(autoencoder, vae)
        timings.update(earlier_timings)
        t = time.time()
        latents, scale = stage_latents(cfg, work, vae.to(device).eval(), images, device)
        timings["latents_s"] = time.time() - t
    ids, empty = _tokens(tokenizer, captions, cfg.text_tokens)
    trained, steps_done = train_unet(cfg, work, unet, text, ids, empty, latents, scale, device, started,
                                     timings)
    t = time.time()
    inpaint = stage_inpaint(cfg, work, trained["unet"], trained["text"], vae, ids, empty, latents, scale,
                            images, device)
    _stage_time(timings, "inpaint", t, inpaint["seconds"])
    record = {
        "command": command or "python -m embedded.train",
        "config": asdict(cfg), "device": device, "threads": torch.get_num_threads(),
        "machine": machine_name(),
        # what the VAE and decoder stages of this invocation computed in (none when reused)
        "vae_bf16_autocast": bool(cfg.vae_bf16 and bf16_native(device)) if autoencoder is None else None,
        "torch": torch.__version__, "vae_psnr_db": round(psnr, 2),
        "vae_psnr_db_after_decoder_finetune": round(psnr_after, 2),
        "autoencoder_from": str(autoencoder) if autoencoder else None, "unet_steps_done": steps_done["unet"],
        "layout_restart_steps_done": [v for k, v in steps_done.items() if k.startswith("restart")],
        "detail_steps_done": steps_done.get("detail", 0),
        "inpaint_steps_done": inpaint["steps"],
        "resumed": list(RESUMED), "latent_scale": scale, "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "wall_clock_s_this_invocation": round(time.time() - started, 1),
        "params": {"vae": sum(p.numel() for p in vae.parameters()),
                   "unet": sum(p.numel() for p in unet.parameters()),
                   "text_encoder": sum(p.numel() for p in text.parameters()),
                   "inpaint_unet": sum(p.numel() for p in inpaint["unet"].parameters())},
    }
    export(out, vae.cpu(), trained["unet"], trained["text"], tokenizer_dir, scale, record,
           inpaint_unet=inpaint["unet"], text_tokens=cfg.text_tokens)
    return record


def _kept_source(folder: Path, out: Path, copy_to: Path) -> Path:
    """`folder`, or when it is `out` (rewritten at export) a copy of it kept in the work folder,
    made once so that a resumed run reads the same source."""
    if folder.resolve() != out.resolve():
        return folder
    if not copy_to.exists():
        shutil.copytree(folder, copy_to)
    return copy_to


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m embedded.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", choices=sorted(CONFIGS), default="full")
    p.add_argument("--out", type=Path, help=f"model folder (default {DEFAULT_OUT}; smoke: WORK/model)")
    p.add_argument("--work", type=Path, help=f"checkpoints and caches (default {DEFAULT_WORK}/CONFIG)")
    p.add_argument("--tokenizer", type=Path, default=TOKENIZER_SOURCE,
                   help="folder with CLIP's vocab.json and merges.txt")
    p.add_argument("--device", choices=["cuda", "cpu", "mps"])
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--layout-schedule", choices=["cosine", "constant"],
                   help="the layout phase's lr after warm-up (see embedded/unet.py)")
    p.add_argument("--unet-steps", type=int)
    p.add_argument("--layout-restart-steps", type=int, nargs="*",
                   help="layout phase restarts, each from the previous one's EMA weights (see embedded/unet.py)")
    p.add_argument("--detail-steps", type=int)
    p.add_argument("--text-tokens", type=int, help="tokens per caption and prompt (default: the config's)")
    p.add_argument("--inpaint-steps", type=int)
    p.add_argument("--inpaint-lr", type=float)
    p.add_argument("--vae-steps", type=int)
    p.add_argument("--n-images", type=int)
    p.add_argument("--time-budget-min", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--autoencoder", type=Path, metavar="MODEL_FOLDER",
                   help="reuse the VAE of a model folder this command wrote (skips stages 2-4)")
    p.add_argument("--refine-decoder", type=Path, metavar="MODEL_FOLDER",
                   help="only fine-tune the VAE decoder of a model folder this command wrote "
                        "(UNets unchanged) and write it to --out")
    p.add_argument("--decoder-steps", type=int, help="with --refine-decoder (default: the config's)")
    p.add_argument("--retrain-inpaint", type=Path, metavar="MODEL_FOLDER",
                   help="only train the inpainting UNet of a model folder this command wrote again (from its "
                        "UNet, text encoder and VAE, which stay unchanged) and write it to --out")
    p.add_argument("--two-objects", type=Path, metavar="MODEL_FOLDER",
                   help="only train the text-to-image UNet of a model folder this command wrote on, with more "
                        "two-object pictures (text encoder, VAE and the other UNets unchanged), and write it to --out")
    p.add_argument("--two-object-steps", type=int, help="with --two-objects (default: the config's)")
    p.add_argument("--regions", type=Path, metavar="MODEL_FOLDER",
                   help="only train the text-to-image UNet of a model folder this command wrote on, with a share of "
                        "two-object pictures conditioned region by region (regional prompts), and write it to --out")
    p.add_argument("--regions-steps", type=int, help="with --regions (default: the config's)")
    args = p.parse_args(argv)
    cfg = CONFIGS[args.config]
    overrides = {k: v for k, v in dict(unet_steps=args.unet_steps, vae_steps=args.vae_steps,
                                       layout_restart_steps=(tuple(args.layout_restart_steps)
                                                             if args.layout_restart_steps is not None else None),
                                       layout_schedule=args.layout_schedule, text_tokens=args.text_tokens,
                                       detail_steps=args.detail_steps, inpaint_steps=args.inpaint_steps, inpaint_lr=args.inpaint_lr,
                                       n_images=args.n_images, time_budget_min=args.time_budget_min,
                                       seed=args.seed).items() if v is not None}
    cfg = replace(cfg, **overrides)
    work = args.work or DEFAULT_WORK / cfg.name
    out = args.out or (DEFAULT_OUT if cfg.name == "full" else work / "model")
    if args.autoencoder:
        args.autoencoder = _kept_source(args.autoencoder, out, work / "autoencoder-source")
    command = " ".join(["python -m embedded.train", *(argv if argv is not None else sys.argv[1:])])
    if args.retrain_inpaint:
        from .refine import retrain_inpaint
        retrain_inpaint(_kept_source(args.retrain_inpaint, out, work / "inpaint-source"), out, work,
                        args.device, args.threads, command, config=args.config, steps=args.inpaint_steps,
                        lr=args.inpaint_lr)
        print(f"model written to {out}")
        return
    if args.two_objects:
        from .refine import refine_two_objects
        refine_two_objects(_kept_source(args.two_objects, out, work / "two-objects-source"), out, work,
                           args.device, args.threads, command, config=args.config, steps=args.two_object_steps)
        print(f"model written to {out}")
        return
    if args.regions:
        from .refine import refine_regions
        refine_regions(_kept_source(args.regions, out, work / "regions-source"), out, work,
                       args.device, args.threads, command, config=args.config, steps=args.regions_steps)
        print(f"model written to {out}")
        return
    if args.refine_decoder:
        from .refine import refine_decoder
        refine_decoder(_kept_source(args.refine_decoder, out, work / "refine-source"), out, work,
                       args.device, args.threads, command, args.decoder_steps, config=args.config)
        print(f"model written to {out}")
        return
    record = train(cfg, out, work, args.tokenizer, args.device, args.threads, args.autoencoder, command)
    print(json.dumps(record, indent=2, default=str))
    print(f"model written to {out}")


if __name__ == "__main__":
    main()
