"""Train a LoRA from the command line (the Train tab runs this same command for its jobs):

    python -m studio.finetune DATASET_FOLDER --name NAME [--trigger WORD] [--preset subject|style|object|quick]
                              [--steps N] [--rank R] [--alpha A] [--lr LR] [--batch B] [--epochs E]
                              [--repeats N] [--resolution PX] [--seed S] [--min-snr-gamma G]
                              [--sample-every N] [--prior-weight W] [--class-pictures N]
                              [--caption-dropout P] [--class-words WORDS] [--model SOURCE]
                              [--models-dir models] [--jobs outputs/training] [--device auto|cpu|cuda]
    python -m studio.finetune --job JOB_FOLDER      run or resume a prepared job (what the tab starts)

The LoRA goes to MODELS_DIR/loras/NAME.safetensors (kohya's layout); the job folder keeps the
loss, the sample pictures and the checkpoints, and running the same --job again resumes it.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from studio.config import ROOT
from studio.errors import StudioError

NUMBERS = {"steps": int, "rank": int, "alpha": float, "lr": float, "batch": int, "epochs": int, "repeats": int,
           "embedding_lr": float,
           "resolution": int, "seed": int, "min_snr_gamma": float, "sample_every": int, "prior_weight": float,
           "class_pictures": int, "caption_dropout": float}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m studio.finetune", description=__doc__.splitlines()[0])
    p.add_argument("dataset", nargs="?", help="a folder of pictures with .txt captions (kohya's N_name "
                                              "subfolders accepted)")
    p.add_argument("--job", type=Path, help="run or resume this job folder")
    p.add_argument("--name", help="the LoRA's file name in models/loras")
    p.add_argument("--trigger", help="a word put in front of every caption")
    p.add_argument("--preset", help="a preset of presets/train/ (subject, style, object, quick ...; default: the "
                                    "one made for the model)")
    for key, kind in NUMBERS.items():
        p.add_argument(f"--{key.replace('_', '-')}", type=kind)
    p.add_argument("--text-encoder-lr", type=float, help="train the text encoder too (0: not)")
    p.add_argument("--class-words", help="with --prior-weight: what the new thing is a kind of (\"dog\"; "
                                          "\"red, blue\"), drawn in its place in the class pictures")
    p.add_argument("--gradient-checkpointing", action="store_true", default=None,
                   help="less memory for slower steps (SDXL on a 12-16 GB GPU)")
    p.add_argument("--optimizer", choices=["adamw", "adamw8bit"], help="adamw8bit: bitsandbytes' 8-bit AdamW (CUDA)")
    p.add_argument("--buckets", action="store_true", default=None,
                   help="each picture at its own aspect ratio instead of cut to a square")
    p.add_argument("--model", default="", help="a model source as app.py's --model (default: the embedded model)")
    p.add_argument("--models-dir", type=Path, default=ROOT / "models")
    p.add_argument("--jobs", type=Path, default=ROOT / "outputs" / "training")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    _threads()
    from studio.finetune.folder import JobFolder
    from studio.finetune.jobs import LOCAL, create_job
    from studio.finetune.settings import make_settings

    try:
        if args.job:
            job = JobFolder(args.job)
            meta = job.job()
            if not meta:
                print(f"{args.job} is not a training job folder (no job.json).", file=sys.stderr)
                return 2
            models_dir, datasets, device = Path(meta["models_dir"]), Path(meta["datasets"]), meta.get("device", "auto")
        else:
            if not args.dataset or not args.name:
                parser().error("give a dataset folder and --name (or --job FOLDER)")
            folder = Path(args.dataset).resolve()
            if not args.preset:                 # the preset made for this model, said aloud
                from studio.finetune.settings import default_preset
                from studio.models.sources import describe
                args.preset, why = default_preset(describe(args.model))
                print(f"preset {args.preset}: {why}", flush=True)
            raw = {k: getattr(args, k) for k in (*NUMBERS, "trigger", "preset", "text_encoder_lr", "model",
                                                 "class_words", "gradient_checkpointing", "buckets",
                                                 "optimizer")}
            settings = make_settings({**raw, "name": args.name, "dataset": folder.name})
            models_dir, datasets, device = args.models_dir, folder.parent, args.device
            job = create_job(args.jobs, settings, owner=LOCAL, models_dir=models_dir, datasets=datasets,
                             device=device)
            print(f"job folder: {job.path}", flush=True)
        from studio.finetune.trainer import train
        state = train(job, models_dir, datasets, device)
    except StudioError as exc:
        print(f"Cannot train: {exc}", file=sys.stderr)
        return 2
    print(job.status().get("message", state), flush=True)
    return {"done": 0, "stopped": 0}.get(state, 1)


def _threads() -> None:
    threads = os.environ.get("STUDIO_TRAIN_THREADS")
    if threads:
        import torch
        torch.set_num_threads(int(threads))


if __name__ == "__main__":
    sys.exit(main())
