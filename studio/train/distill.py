"""A few-step student of the embedded model: latent consistency distillation (LCM) with a
guidance embedding, written for this project's tiny v-prediction model on the CPU.

    python -m studio.train.distill [--model assets/embedded-model] [--minutes 55] [--steps N]
                                   [--work .cache/distill] [--smoke]

The student is the teacher's UNet with a guidance embedding (`time_cond_proj_dim`), started from
the teacher's weights. Each step (after Luo et al. 2023 and diffusers' consistency_distillation
example, re-implemented here): a data latent noised to a point t+k of a 50-point DDIM grid; the
teacher's guided DDIM step from t+k to t (guidance w = CFG - 1, as the pipelines feed it); the
student at t+k and its EMA ("target") at t, both through the consistency boundary conditions; a
Huber loss between them. What is exported is a slow average of the student's weights. Data (rendered scenes, their latents and text embeddings) is made once
and cached in the work folder; the run checkpoints and resumes (weights, optimiser, step, RNG),
and stops at --steps or at the --minutes budget. The result, `lcm-unet/` in the model folder
(fp16), loads into the standard pipelines with diffusers' LCMScheduler.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from studio.models.sources import STUDENT_FOLDER
from .common import _bar, _ema_update, _interrupt_hook, _load, _save, autocast, log_resume, machine_name
from .world import make_dataset

DEFAULT_MODEL = Path(__file__).resolve().parents[2] / "assets" / "embedded-model"


@dataclass
class DistillConfig:
    n_images: int = 12_000
    seed: int = 1                  # not the teacher's data seed: other scenes of the same world
    steps: int = 20_000            # a cap (the shipped run's): `--minutes 55` is what stops it
    minutes: float = 0.0           # a time budget (0: none); the run stops early, resumable
    batch: int = 16                # more, smaller steps: the consistency target travels one grid
                                   # point per update (first run: batch 32, 2,996 steps in 55 min)
    lr: float = 1e-4
    ema: float = 0.95              # the target network (LCM's recipe)
    average: float = 0.995         # the exported student: a slow average of the trained weights
    ddim_points: int = 50          # the solver grid: k = 1000 / 50 (a third run with 25 points and
                                   # batch 8, 6,670 steps, was worse: 48.5% all-four at 4 steps
                                   # against 56.5% on 200 validation draws)
    w_min: float = 2.0             # LCM guidance w = CFG - 1: the teacher is used at CFG 5
    w_max: float = 6.0             # centred on the studio's CFG 5 (w = 4); first run: 2-8
    cond_dim: int = 64             # size of the guidance embedding
    huber_c: float = 0.001
    timestep_scaling: float = 10.0  # must match LCMScheduler(timestep_scaling=10)
    checkpoint_every: int = 100
    bf16: bool = False             # bf16 autocast of the UNet passes: slower here (1.2 s a step against
                                   # 1.05 in fp32, batch 32, 2 threads, a Xeon with AMX)


SMOKE = DistillConfig(n_images=16, steps=6, batch=4, checkpoint_every=3)


# -- the data ---------------------------------------------------------------------------------------

def distill_data(cfg: DistillConfig, teacher, work: Path) -> dict:
    """Latents (scaled) and text embeddings of `n_images` rendered scenes, and the empty
    caption's embedding; made once, then read from the work folder."""
    path = work / f"data-{cfg.n_images}-{cfg.seed}.pt"
    cached = _load(path)
    if cached is not None:
        return cached
    images, captions, _ = make_dataset(cfg.n_images, seed=cfg.seed)
    vae, text, tokenizer = teacher["vae"], teacher["text_encoder"], teacher["tokenizer"]
    latents, embeds = [], []
    with torch.no_grad():
        for i in range(0, len(images), 256):
            batch = torch.from_numpy(images[i:i + 256]).permute(0, 3, 1, 2).float() / 127.5 - 1
            latents.append(vae.encode(batch).latent_dist.mean * vae.config.scaling_factor)
            ids = tokenizer(captions[i:i + 256], padding="max_length", max_length=tokenizer.model_max_length,
                            truncation=True, return_tensors="pt").input_ids
            embeds.append(text(ids)[0])
        empty = tokenizer([""], padding="max_length", max_length=tokenizer.model_max_length,
                          return_tensors="pt").input_ids
        data = {"latents": torch.cat(latents), "embeds": torch.cat(embeds), "empty": text(empty)[0][0]}
    _save(path, data)
    return data


# -- the consistency model's pieces -------------------------------------------------------------------

def guidance_embedding(w: torch.Tensor, dim: int) -> torch.Tensor:
    """The pipelines' embedding of w (StableDiffusionPipeline.get_guidance_scale_embedding)."""
    from diffusers import StableDiffusionPipeline
    return StableDiffusionPipeline.get_guidance_scale_embedding(None, w, embedding_dim=dim)


def boundary(t: torch.Tensor, scaling: float, sigma_data: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """c_skip, c_out of the consistency parameterisation (c_skip -> 1, c_out -> 0 at t = 0)."""
    scaled = t.float() * scaling
    c_skip = sigma_data ** 2 / (scaled ** 2 + sigma_data ** 2)
    c_out = scaled / (scaled ** 2 + sigma_data ** 2) ** 0.5
    return c_skip[:, None, None, None], c_out[:, None, None, None]


def x0_and_noise(v: torch.Tensor, t: torch.Tensor, z: torch.Tensor, alphas: torch.Tensor):
    """The clean latent and the noise a v-prediction implies at t."""
    a = alphas[t].sqrt()[:, None, None, None]
    s = (1 - alphas[t]).sqrt()[:, None, None, None]
    return a * z - s * v, s * z + a * v


def consistency(unet, z, t, cond, w_emb, alphas, scaling) -> torch.Tensor:
    """f(z, t): the model's clean latent through the boundary conditions."""
    v = unet(z, t, encoder_hidden_states=cond, timestep_cond=w_emb).sample
    x0, _ = x0_and_noise(v, t, z, alphas)
    c_skip, c_out = boundary(t, scaling)
    return c_skip * z + c_out * x0


def teacher_step(teacher_unet, z, start, end, cond, uncond, w, alphas) -> torch.Tensor:
    """The teacher's guided DDIM step from `start` to `end` (cond and uncond in one batch)."""
    both = teacher_unet(torch.cat([z, z]), torch.cat([start, start]),
                        encoder_hidden_states=torch.cat([cond, uncond])).sample
    x0, eps = x0_and_noise(both, torch.cat([start, start]), torch.cat([z, z]), alphas)
    (x0_c, x0_u), (eps_c, eps_u) = x0.chunk(2), eps.chunk(2)
    gw = w[:, None, None, None]
    x0, eps = x0_c + gw * (x0_c - x0_u), eps_c + gw * (eps_c - eps_u)
    a_end = alphas[end][:, None, None, None]
    return a_end.sqrt() * x0 + (1 - a_end).sqrt() * eps


# -- the run --------------------------------------------------------------------------------------------

def load_teacher(model: Path) -> dict:
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer
    fp32 = torch.float32          # the folder keeps fp16 weights; training runs in fp32
    parts = {"vae": AutoencoderKL.from_pretrained(model, subfolder="vae", torch_dtype=fp32),
             "text_encoder": CLIPTextModel.from_pretrained(model, subfolder="text_encoder", dtype=fp32),
             "tokenizer": CLIPTokenizer.from_pretrained(model, subfolder="tokenizer"),
             "unet": UNet2DConditionModel.from_pretrained(model, subfolder="unet", torch_dtype=fp32),
             "scheduler": DDPMScheduler.from_pretrained(model, subfolder="scheduler")}
    for name in ("vae", "text_encoder", "unet"):
        parts[name].requires_grad_(False).eval()
    return parts


def make_student(teacher_unet, cfg: DistillConfig):
    from diffusers import UNet2DConditionModel
    student = UNet2DConditionModel.from_config(teacher_unet.config, time_cond_proj_dim=cfg.cond_dim)
    missing, unexpected = student.load_state_dict(teacher_unet.state_dict(), strict=False)
    assert not unexpected and all("cond_proj" in m for m in missing), (missing, unexpected)
    return student


def distill(cfg: DistillConfig, model: Path, work: Path) -> dict:
    """Train (or resume) the student; returns its slow average (what is exported) and the run's record."""
    work.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    teacher = load_teacher(model)
    data = distill_data(cfg, teacher, work)
    student = make_student(teacher["unet"], cfg)
    target = copy.deepcopy(student).requires_grad_(False)
    average = copy.deepcopy(student).requires_grad_(False)
    opt = torch.optim.AdamW(student.parameters(), lr=cfg.lr, weight_decay=0.0)
    checkpoint, state = work / "student.pt", _load(work / "student.pt") or {}
    step, seconds, losses = 0, 0.0, []
    gen = torch.Generator().manual_seed(cfg.seed)
    if state:
        log_resume("distill", state["step"])
        student.load_state_dict(state["student"]); target.load_state_dict(state["target"])
        average.load_state_dict(state.get("average", state["target"]))
        opt.load_state_dict(state["opt"]); gen.set_state(state["rng"])
        step, seconds, losses = state["step"], state["seconds"], state["losses"]
    alphas = teacher["scheduler"].alphas_cumprod
    k = teacher["scheduler"].config.num_train_timesteps // cfg.ddim_points
    grid = torch.arange(1, cfg.ddim_points + 1) * k - 1          # 19, 39, ..., 999
    bar, began = _bar(cfg.steps, step, "distill"), time.time()
    while step < cfg.steps and not (cfg.minutes and (seconds + time.time() - began) / 60 >= cfg.minutes):
        loss = _step(cfg, teacher["unet"], student, target, opt, data, alphas, grid, k, gen)
        _ema_update(average, student, cfg.average)
        losses.append(round(loss, 6))
        step += 1
        bar.update(1)
        if step % 25 == 0:
            bar.set_postfix(loss=f"{sum(losses[-25:]) / 25:.5f}")
        if step % cfg.checkpoint_every == 0:
            _save(checkpoint, _state(student, target, average, opt, gen, step, seconds + time.time() - began,
                                     losses))
        _interrupt_hook(step)
    bar.close()
    seconds += time.time() - began
    _save(checkpoint, _state(student, target, average, opt, gen, step, seconds, losses))
    return {"student": average, "record": {"config": asdict(cfg), "steps": step, "seconds": round(seconds, 1),
                                         "machine": machine_name(), "loss_first_50": _mean(losses[:50]),
                                         "loss_last_50": _mean(losses[-50:])}}


def _step(cfg, teacher_unet, student, target, opt, data, alphas, grid, k, gen) -> float:
    idx = torch.randint(len(data["latents"]), (cfg.batch,), generator=gen)
    x0, cond = data["latents"][idx], data["embeds"][idx]
    uncond = data["empty"].expand_as(cond)
    start = grid[torch.randint(cfg.ddim_points, (cfg.batch,), generator=gen)]
    end = (start - k).clamp(min=0)
    noise = torch.randn(x0.shape, generator=gen)
    a = alphas[start][:, None, None, None]
    z = a.sqrt() * x0 + (1 - a).sqrt() * noise
    w = cfg.w_min + (cfg.w_max - cfg.w_min) * torch.rand(cfg.batch, generator=gen)
    w_emb = guidance_embedding(w, cfg.cond_dim)
    with autocast("cpu", cfg.bf16):
        predicted = consistency(student, z, start, cond, w_emb, alphas, cfg.timestep_scaling)
        with torch.no_grad():
            previous = teacher_step(teacher_unet, z, start, end, cond, uncond, w, alphas).float()
            wanted = consistency(target, previous, end, cond, w_emb, alphas, cfg.timestep_scaling)
    loss = (torch.sqrt((predicted.float() - wanted.float()) ** 2 + cfg.huber_c ** 2) - cfg.huber_c).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
    opt.step()
    _ema_update(target, student, cfg.ema)
    return float(loss.detach())


def _state(student, target, average, opt, gen, step, seconds, losses) -> dict:
    return {"student": student.state_dict(), "target": target.state_dict(), "average": average.state_dict(),
            "opt": opt.state_dict(),
            "rng": gen.get_state(), "step": step, "seconds": seconds, "losses": losses}


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 6) if values else None


def export(student, record: dict, model: Path) -> Path:
    """The student (the slow average) beside the teacher's UNet, in fp16, with its training record."""
    out = model / STUDENT_FOLDER
    student.to(torch.float16).save_pretrained(out)
    student.to(torch.float32)
    (out / "distillation.json").write_text(json.dumps(record, indent=2) + "\n")
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    p.add_argument("--work", type=Path, default=Path(".cache/distill"))
    p.add_argument("--steps", type=int)
    p.add_argument("--minutes", type=float)
    p.add_argument("--smoke", action="store_true", help="a few steps on a few scenes (the tests)")
    p.add_argument("--out", type=Path, help="export into this model folder (default: --model)")
    args = p.parse_args(argv)
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    cfg = copy.copy(SMOKE if args.smoke else DistillConfig())
    cfg.steps = args.steps or cfg.steps
    cfg.minutes = args.minutes if args.minutes is not None else cfg.minutes
    done = distill(cfg, args.model, args.work)
    path = export(done["student"], done["record"], args.out or args.model)
    print(f"student: {path} ({done['record']['steps']} steps, {done['record']['seconds']:.0f} s; "
          f"loss {done['record']['loss_first_50']} -> {done['record']['loss_last_50']})")


if __name__ == "__main__":
    main()
