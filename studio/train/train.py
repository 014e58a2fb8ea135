"""Train the embedded default model: a tiny Stable-Diffusion-format model of the shape world.

    python -m studio.train.train                  # the full run (CPU: <= 2 h on 2 cores)
    python -m studio.train.train --config smoke   # seconds; what the tests run
    python -m studio.train.train --refine-decoder assets/embedded-model   # the decoder only (refine.py)
    python -m studio.train.train --retrain-inpaint assets/embedded-model  # the inpainting UNet only

Stages, each resumable from the newest checkpoint in --work (kill it and run the same command
again): 1. render the data set, 2. train the VAE, 3. encode the data set to latents, 4. fine-tune
the VAE decoder on those latents, 5. train the UNet and the CLIP text encoder together, mostly
for the layout, 5b. go on from its EMA weights for the details (studio/train/unet.py), 6. train
a 9-channel inpainting UNet from it (studio/train/inpaint.py), 7. export a diffusers folder
(fp16 weights) to --out. Stages 2-4 live in studio/train/autoencoder.py.

Choices, each for a measured reason (issue 3): v-prediction on SD's scaled-linear betas (see
studio/train/model.py for the two runs that led there) so every SD sampler applies; 10% empty captions so classifier-free guidance
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
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from studio.config import ROOT
from .autoencoder import stage_decoder, stage_latents, stage_vae
from .common import RESUMED, _stage_time, bf16_native, machine_name
from .export import export
from .inpaint import stage_inpaint
from .model import TOKENIZER_SOURCE, build_models, load_tokenizer
from .unet import train_unet
from .world import make_dataset

DEFAULT_OUT = ROOT / "assets" / "embedded-model"
DEFAULT_WORK = ROOT / ".cache" / "train"


@dataclass
class TrainConfig:
    name: str = "full"
    seed: int = 0
    size: int = 64
    n_images: int = 30_000
    vae_channels: tuple[int, ...] = (16, 32, 64)
    vae_steps: int = 2_500          # see stage_vae: 900 steps at 1e-3 capped held-out colour at 62%
    vae_batch: int = 32
    vae_lr: float = 2e-3
    vae_clip: float = 0.5           # gradient-norm clip: without it the VAE's loss spikes at this lr
    vae_bf16: bool = True           # bf16 autocast in the VAE and decoder stages where the device
                                    # runs bf16 natively (common.bf16_native), fp32 elsewhere
    kl_weight: float = 1e-6
    decoder_steps: int = 600        # decoder fine-tune on the frozen encoder's latents (see stage_decoder)
    decoder_lr: float = 5e-4
    unet_channels: tuple[int, ...] = (32, 64, 128)
    unet_layers: int = 1
    text_dim: int = 64
    text_layers: int = 3
    text_tokens: int = 32           # tokens per caption (BOS + words + EOS + padding); see `_tokens`
    unet_steps: int = 6_000          # steps of the layout phase: see UNET_BUDGET below
    batch: int = 64
    lr: float = 4e-4
    layout_schedule: str = "constant"   # the layout phase's lr after warm-up: "constant" or "cosine" decay
    warmup: int = 200
    caption_dropout: float = 0.1
    min_snr_gamma: float = 5.0
    snr_floor: float = 1.0          # x0-space loss weight never below this (0: plain min-SNR)
    high_noise_share: float = 0.4   # share of each batch drawn from t >= high_noise_from
    high_noise_from: int = 900      # sigma >= 8.3: the input shows next to nothing of the picture
    layout_restart_steps: tuple[int, ...] = ()   # stage 5 again from its EMA (`unet.unet_phases`)
    detail_steps: int = 900         # stage 5b, from stage 5's EMA weights (see `unet.unet_phases`)
    detail_lr: float = 4e-4
    detail_high_noise_share: float = 0.0   # also the inpainting stage's
    detail_snr_floor: float = 0.0          # plain min-SNR-gamma in the detail phase
    ema_decay: float = 0.999
    inpaint_steps: int = 400        # stage 6: the 9-channel inpainting UNet (studio/train/inpaint.py)
    inpaint_lr: float = 2e-3         # 2e-4 left the mask unused: see inpaint.py
    checkpoint_every: int = 250
    time_budget_min: float = 0.0    # if set, stop the UNet stages early when the run reaches this
    refine_decoder_steps: int = 2_000   # --refine-decoder: see `refine_decoder`
    refine_decoder_lr: float = 2e-3
    extra: dict = field(default_factory=dict)


# UNET_BUDGET (issue 3): the 2-hour limit on 2 CPU cores. On the Intel machine of the 2026-12-01
# model a UNet step (batch 64) took 0.47 s; on the AMD EPYC (Zen 4, no AMX) of 2026-12-02 it
# takes 0.65-1.1 s with 77-token captions (bf16 autocast, SDPA, channels-last or torch.compile:
# no faster), 0.6-0.8 s with 32. There, on the 2,500-step VAE (24 min with its data, latents and
# decoder stages), held-out colour / position / shape (200 prompts):
# - 5,000 layout steps (cosine decay) + 1,000 detail + 600 inpainting (121 min): 83 / 23 / 82;
# - the same layout phase restarted twice from its EMA (2,500 + 2,000 steps) + 1,000 detail:
#   95 / 79.5 / 88, in 190 min (the model shipped before 2026-12-02 evening);
# - 32-token captions and a constant lr (`layout_schedule`): position, read from the layout
#   EMA's one-step x0 prediction at t = 999 (100 prompts), was 6% at step 2,000, 17% at 3,000,
#   33% at 4,000, 64% at 5,000 and 100% at 6,000; 6,000 layout + 600 detail + 400 inpainting
#   steps (114 min): 89.5 / 97 / 87; with 900 detail steps: the defaults (see the model README).

CONFIGS = {
    "full": TrainConfig(),
    "smoke": TrainConfig(name="smoke", n_images=48, vae_channels=(8, 16, 16), vae_steps=4, decoder_steps=4,
                         vae_batch=8, unet_channels=(16, 32, 32), text_dim=16, text_layers=1,
                         unet_steps=6, detail_steps=3, batch=8, warmup=2, checkpoint_every=3, time_budget_min=0.0,
                         inpaint_steps=4, refine_decoder_steps=4),
}



# ---------------------------------------------------------------------------------------------
# Stages

def stage_data(cfg: TrainConfig, work: Path):
    path = work / "data.npz"
    if path.exists():
        d = np.load(path, allow_pickle=False)
        return d["images"], [str(c) for c in d["captions"]]
    images, captions, _ = make_dataset(cfg.n_images, seed=cfg.seed, size=cfg.size)
    np.savez(path, images=images, captions=np.array(captions))
    return images, captions



def _tokens(tokenizer, captions: list[str], length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids of every caption, and of the empty caption (dropout), padded to `length`.

    The world's longest caption is 28 tokens; padding to 32 instead of CLIP's 77 took a UNet +
    text step (batch 64, 2 threads, Zen 4) from 0.79 s to 0.66 s in a bench and from ~0.87 s to
    ~0.77 s in training: the text encoder and every cross-attention run on fewer positions. The
    exported tokenizer keeps that length, so the pipeline (and the studio's prompt chunks,
    studio/conditioning.py) pad prompts the same way."""
    ids = tokenizer(captions, padding="max_length", max_length=length, truncation=True,
                    return_tensors="pt").input_ids
    empty = tokenizer([""], padding="max_length", max_length=length, return_tensors="pt").input_ids[0]
    return ids, empty


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
        "command": command or "python -m studio.train.train",
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
    p = argparse.ArgumentParser(prog="python -m studio.train.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", choices=sorted(CONFIGS), default="full")
    p.add_argument("--out", type=Path, help=f"model folder (default {DEFAULT_OUT}; smoke: WORK/model)")
    p.add_argument("--work", type=Path, help=f"checkpoints and caches (default {DEFAULT_WORK}/CONFIG)")
    p.add_argument("--tokenizer", type=Path, default=TOKENIZER_SOURCE,
                   help="folder with CLIP's vocab.json and merges.txt")
    p.add_argument("--device", choices=["cuda", "cpu", "mps"])
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--layout-schedule", choices=["cosine", "constant"],
                   help="the layout phase's lr after warm-up (see studio/train/unet.py)")
    p.add_argument("--unet-steps", type=int)
    p.add_argument("--layout-restart-steps", type=int, nargs="*",
                   help="layout phase restarts, each from the previous one's EMA weights (see studio/train/unet.py)")
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
    command = " ".join(["python -m studio.train.train", *(argv if argv is not None else sys.argv[1:])])
    if args.retrain_inpaint:
        from .refine import retrain_inpaint
        retrain_inpaint(_kept_source(args.retrain_inpaint, out, work / "inpaint-source"), out, work,
                        args.device, args.threads, command, config=args.config, steps=args.inpaint_steps,
                        lr=args.inpaint_lr)
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
