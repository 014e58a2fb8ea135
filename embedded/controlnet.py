"""The embedded model's own scribble ControlNet: trained on the shape world, conditioned on a
scribble of the object's outline (white strokes on black, as ControlNet's scribble models take
it), so that control works offline, on a CPU, out of the box, and can be measured.

    python -m embedded.controlnet [--model assets/embedded-model] [--steps N] [--minutes M]
                                  [--work .cache/controlnet] [--out FOLDER] [--smoke]

The ControlNet starts as a copy of the teacher UNet's encoder (`ControlNetModel.from_unet`, its
zero convolutions zero, so step 0 is the plain model); the UNet, the text encoder and the VAE stay
frozen. Pictures place one shape anywhere at any size (embedded/scribbles.py), so control is not
tied to the nine cells of the text-to-image world; the captions name colour and background only,
colour and shape, or nothing. The loss is the teacher's (v-prediction, min-SNR-gamma floored, a
share of each batch at high noise, where the layout is set: embedded/model.py). The data is made
once and cached in the work folder; the run checkpoints and resumes (weights, average, optimiser,
step, RNG) and stops at --steps or at the --minutes budget. What is exported is a slow average of
the weights, in fp16, as a diffusers folder: `controlnet-scribble/` in the model folder, which the
studio lists as `embedded-scribble` (studio/models/library.py).
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from studio.models.sources import CONTROL_FOLDER

from .common import _load, _lr_at, _save, averaged_steps, command_line, configured, export_fp16, machine_name
from .config import TrainConfig
from .model import loss_weight, noise_scheduler, timesteps
from .scribbles import make_examples

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "assets" / "embedded-model"


@dataclass
class ControlConfig:
    n_examples: int = 20_000
    seed: int = 3                  # other scenes than the teacher's (seed 0) and the student's (1)
    steps: int = 6_000
    minutes: float = 0.0           # a time budget for the training steps (0: none); resumable
    batch: int = 32
    lr: float = 3e-4
    warmup: int = 100
    average: float = 0.998         # the exported weights: a slow average of the trained ones
    hint_channels: tuple[int, ...] = (16, 32, 64)   # the scribble's encoder: 64 px -> the 16 px latent
    high_noise_share: float = 0.3  # of each batch at t >= 900, where the layout is set
    checkpoint_every: int = 100


SMOKE = ControlConfig(n_examples=16, steps=6, batch=4, warmup=2, checkpoint_every=3)


def load_frozen(model: Path) -> dict:
    """The teacher's VAE, UNet, text encoder and tokenizer in fp32, frozen."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer
    fp32 = torch.float32
    parts = {"vae": AutoencoderKL.from_pretrained(model, subfolder="vae", torch_dtype=fp32),
             "unet": UNet2DConditionModel.from_pretrained(model, subfolder="unet", torch_dtype=fp32),
             "text_encoder": CLIPTextModel.from_pretrained(model, subfolder="text_encoder", dtype=fp32),
             "tokenizer": CLIPTokenizer.from_pretrained(model, subfolder="tokenizer")}
    for name in ("vae", "unet", "text_encoder"):
        parts[name].requires_grad_(False).eval()
    return parts


def control_data(cfg: ControlConfig, frozen: dict, work: Path) -> dict:
    """Latents of the pictures, the scribbles (n x 1 x H x W in [0, 1]) and the captions' token
    ids; made once, then read from the work folder."""
    made_from = json.dumps([cfg.n_examples, cfg.seed])
    path = work / f"examples-{hashlib.sha1(made_from.encode()).hexdigest()[:10]}.pt"
    cached = _load(path)
    if cached is not None:
        return cached
    began = time.time()
    pictures, scribbles, captions, _ = make_examples(cfg.n_examples, cfg.seed)
    vae, tokenizer = frozen["vae"], frozen["tokenizer"]
    with torch.no_grad():
        x = torch.from_numpy(pictures).permute(0, 3, 1, 2).float().div(127.5).sub(1)
        latents = torch.cat([vae.encode(x[i:i + 256]).latent_dist.mode() for i in range(0, len(x), 256)])
    ids = tokenizer(captions, padding="max_length", truncation=True, max_length=tokenizer.model_max_length,
                    return_tensors="pt").input_ids
    data = {"latents": latents * vae.config.scaling_factor, "ids": ids,
            "scribbles": torch.from_numpy(scribbles).unsqueeze(1), "seconds": round(time.time() - began, 1)}
    _save(path, data)
    return data


def make_controlnet(unet, cfg: ControlConfig):
    from diffusers import ControlNetModel
    return ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=cfg.hint_channels)


def _loss_config(cfg: ControlConfig) -> TrainConfig:
    """The teacher's noise weighting (embedded/model.py), with this run's batch and high-noise share."""
    return replace(TrainConfig(), batch=cfg.batch, high_noise_share=cfg.high_noise_share)


def _step(cfg, net, opt, frozen, data, sched, gen) -> float:
    """One step: a batch's noisy latents through the frozen UNet with the ControlNet's residuals."""
    lcfg = _loss_config(cfg)
    idx = torch.randint(len(data["latents"]), (cfg.batch,), generator=gen)
    x0 = data["latents"][idx]
    hint = data["scribbles"][idx].float().div(255).expand(-1, 3, -1, -1)
    with torch.no_grad():
        text = frozen["text_encoder"](data["ids"][idx])[0]
    noise = torch.randn(x0.shape, generator=gen)
    t = timesteps(lcfg, gen)
    noisy = sched.add_noise(x0, noise, t)
    down, mid = net(noisy, t, encoder_hidden_states=text, controlnet_cond=hint, return_dict=False)
    pred = frozen["unet"](noisy, t, encoder_hidden_states=text, down_block_additional_residuals=down,
                          mid_block_additional_residual=mid).sample
    per_sample = F.mse_loss(pred, sched.get_velocity(x0, noise, t), reduction="none").mean(dim=(1, 2, 3))
    snr = sched.alphas_cumprod[t] / (1 - sched.alphas_cumprod[t])
    loss = (per_sample * loss_weight(snr, lcfg)).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
    opt.step()
    return float(loss.detach())


def train(cfg: ControlConfig, model: Path, work: Path) -> dict:
    """Train (or resume) the ControlNet; returns its slow average (what is exported) and the record."""
    work.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    frozen = load_frozen(model)
    data = control_data(cfg, frozen, work)
    net = make_controlnet(frozen["unet"], cfg).train()
    average = copy.deepcopy(net).requires_grad_(False)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=1e-2)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    sched, lr_cfg = noise_scheduler(), TrainConfig(warmup=cfg.warmup)

    def one_step(step: int) -> float:
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, lr_cfg, cfg.steps, cfg.lr, "constant")
        return _step(cfg, net, opt, frozen, data, sched, gen)

    step, seconds, losses = averaged_steps("controlnet", work / "controlnet.pt", "net", net, average, opt, gen, cfg,
                                           one_step, lambda step: min(cfg.average, (1 + step) / (10 + step)))
    record = {"config": {**asdict(cfg), "hint_channels": list(cfg.hint_channels)}, "steps": step,
              "seconds": round(seconds, 1), "data seconds": data["seconds"], "machine": machine_name(),
              "threads": torch.get_num_threads(), "torch": torch.__version__,
              "params": sum(p.numel() for p in net.parameters()),
              "teacher_unet_sha256": teacher_unet_sha256(model),
              "loss_first_100": _mean(losses[:100]), "loss_last_100": _mean(losses[-100:])}
    return {"controlnet": average, "record": record}


def teacher_unet_sha256(model: Path) -> str:
    """The sha256 of the teacher UNet's weights a ControlNet was trained beside."""
    import hashlib
    return hashlib.sha256((model / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()).hexdigest()


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 6) if values else None


def export(net, record: dict, model: Path, command: str) -> Path:
    """The ControlNet (the slow average) in the model folder, fp16, with its training record."""
    return export_fp16(net, model / CONTROL_FOLDER, "training.json", {"command": command, **record})


def main(argv: list[str] | None = None) -> None:
    import sys
    args = command_line(__doc__.splitlines()[0], ".cache/controlnet",
                        "a few steps on a few examples (the tests)").parse_args(argv)
    done = train(configured(SMOKE if args.smoke else ControlConfig(), args), args.model, args.work)
    command = "python -m embedded.controlnet " + " ".join(sys.argv[1:] if argv is None else argv)
    path = export(done["controlnet"], done["record"], args.out or args.model, command.strip())
    r = done["record"]
    print(f"controlnet: {path} ({r['steps']} steps {r['seconds']:.0f} s; loss {r['loss_first_100']} -> "
          f"{r['loss_last_100']})")


if __name__ == "__main__":
    main()
