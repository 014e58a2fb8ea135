"""A few-step student of the embedded model: a consistency model with a guidance embedding,
trained by regression on the teacher's own ODE solutions, written for this project's tiny
v-prediction model on the CPU.

    python -m embedded.distill [--model assets/embedded-model] [--minutes 38] [--steps N]
                                   [--work .cache/distill] [--smoke]

The student is the teacher's UNet with a guidance embedding (`time_cond_proj_dim`), started from
the teacher's weights. First the teacher's guided probability-flow ODE is solved once for each of
`n_trajectories` captions (embedded/trajectories.py: its own noise, guidance w drawn from
w_min-w_max, every state kept). Then each step: trajectory states at grid timesteps (half of them
at the timesteps LCMScheduler samples at for 1, 2 and 4 steps), the student's clean latent there
through the consistency boundary conditions, and a pseudo-Huber loss against the trajectory's
endpoint. This is consistency distillation with exact targets instead of bootstrapped ones
(Luo et al. 2023's LCM pairs a student with an EMA of itself one solver step apart; Luhman &
Luhman 2021 regress endpoints from the noise alone): two runs of LCM's recipe here (55 minutes
each) got worse with more steps, 59% all-four at 4 steps against the teacher's 80.7%; this
one (16 minutes of trajectories, 38 of training) reached 78.7%, 96-99% of the teacher on every
attribute (lcm-unet/README.md). What is exported is a slow average
of the student's weights. The data is made once and cached in the work folder; the run
checkpoints and resumes (weights, optimiser, step, RNG), and stops at --steps or at the
--minutes budget. The result, `lcm-unet/` in the model folder (fp16), loads into the standard
pipelines with diffusers' LCMScheduler.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from studio.models.sources import STUDENT_FOLDER
from studio.models.precision import autocast

from .common import _bar, _load, _save, averaged_steps, command_line, configured, export_fp16, machine_name
from .trajectories import GRID, sampler_timesteps, solve
from .world import make_dataset

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "assets" / "embedded-model"


@dataclass
class DistillConfig:
    n_trajectories: int = 4_000    # teacher ODE solutions, one caption each (0.22 s apiece here)
    seed: int = 1                  # not the teacher's data seed: other scenes of the same world
    steps: int = 20_000            # a cap: `--minutes` is what stops the shipped run
    minutes: float = 0.0           # a time budget for the training steps (0: none); resumable
    batch: int = 32
    lr: float = 1e-4
    average: float = 0.995         # the exported student: a slow average of the trained weights
    grid: tuple[int, ...] = GRID   # the trajectories' timesteps
    sampler_share: float = 0.5     # of each batch, states at the timesteps the LCM sampler visits
    w_min: float = 2.0             # guidance w = CFG - 1, per trajectory: the studio's CFG 5 is w = 4
    w_max: float = 6.0
    cond_dim: int = 64             # size of the guidance embedding
    huber_c: float = 0.03          # pseudo-Huber (iCT's choice of c ~ 0.00054 * sqrt(dims) = 0.017)
    timestep_scaling: float = 10.0  # must match LCMScheduler(timestep_scaling=10)
    checkpoint_every: int = 100
    bf16: bool = False             # bf16 autocast of the UNet passes: slower here (LCM's recipe, batch 32,
                                   # 2 threads, a Xeon with AMX: 1.2 s a step against 1.05 in fp32)


SMOKE = DistillConfig(n_trajectories=16, steps=6, batch=4, checkpoint_every=3)


# -- the data ---------------------------------------------------------------------------------------

def distill_data(cfg: DistillConfig, teacher, work: Path) -> dict:
    """The captions' text embeddings, the empty caption's, each trajectory's w, its states on
    the grid and its endpoint; made once (with the seconds it took), then read from the work folder."""
    made_from = json.dumps([cfg.n_trajectories, cfg.seed, list(cfg.grid), cfg.w_min, cfg.w_max])
    path = work / f"trajectories-{hashlib.sha1(made_from.encode()).hexdigest()[:10]}.pt"   # another recipe: new data
    cached = _load(path)
    if cached is not None:
        return cached
    began = time.time()
    _, captions, _ = make_dataset(cfg.n_trajectories, seed=cfg.seed)
    text, tokenizer = teacher["text_encoder"], teacher["tokenizer"]
    with torch.no_grad():
        embeds = torch.cat([text(tokenizer(captions[i:i + 256], padding="max_length", truncation=True,
                                           max_length=tokenizer.model_max_length, return_tensors="pt").input_ids)[0]
                            for i in range(0, len(captions), 256)])
        empty = tokenizer([""], padding="max_length", max_length=tokenizer.model_max_length,
                          return_tensors="pt").input_ids
        empty = text(empty)[0][0]
    gen = torch.Generator().manual_seed(cfg.seed)
    ws = cfg.w_min + (cfg.w_max - cfg.w_min) * torch.rand(len(embeds), generator=gen)
    bar = _bar(len(embeds), 0, "trajectories")
    states, ends = solve(teacher["unet"], teacher["scheduler_config"], embeds, empty, ws, gen, cfg.grid,
                         progress=bar)
    bar.close()
    data = {"embeds": embeds, "w": ws, "states": states, "ends": ends, "seconds": round(time.time() - began, 1)}
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


def clean_latent(v: torch.Tensor, t: torch.Tensor, z: torch.Tensor, alphas: torch.Tensor) -> torch.Tensor:
    """The clean latent a v-prediction implies at t."""
    return alphas[t].sqrt()[:, None, None, None] * z - (1 - alphas[t]).sqrt()[:, None, None, None] * v


def consistency(unet, z, t, cond, w_emb, alphas, scaling) -> torch.Tensor:
    """f(z, t): the model's clean latent through the boundary conditions."""
    v = unet(z, t, encoder_hidden_states=cond, timestep_cond=w_emb).sample
    c_skip, c_out = boundary(t, scaling)
    return c_skip * z + c_out * clean_latent(v, t, z, alphas)


# -- the run --------------------------------------------------------------------------------------------

def load_teacher(model: Path) -> dict:
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer
    fp32 = torch.float32          # the folder keeps fp16 weights; training runs in fp32
    parts = {"text_encoder": CLIPTextModel.from_pretrained(model, subfolder="text_encoder", dtype=fp32),
             "tokenizer": CLIPTokenizer.from_pretrained(model, subfolder="tokenizer"),
             "unet": UNet2DConditionModel.from_pretrained(model, subfolder="unet", torch_dtype=fp32),
             "scheduler_config": DDPMScheduler.load_config(model, subfolder="scheduler")}
    parts["alphas"] = DDPMScheduler.from_config(parts["scheduler_config"]).alphas_cumprod
    for name in ("text_encoder", "unet"):
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
    where = _where(cfg, teacher["scheduler_config"])
    student = make_student(teacher["unet"], cfg)
    average = copy.deepcopy(student).requires_grad_(False)
    opt = torch.optim.AdamW(student.parameters(), lr=cfg.lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    step, seconds, losses = averaged_steps(
        "distill", work / "student.pt", "student", student, average, opt, gen, cfg,
        lambda step: _step(cfg, student, opt, data, teacher["alphas"], where, gen), lambda step: cfg.average)
    config = {**asdict(cfg), "grid": list(cfg.grid), "sampler timesteps": where["sampler timesteps"]}
    return {"student": average, "record": {"config": config, "steps": step, "seconds": round(seconds, 1),
                                         "trajectory seconds": data["seconds"], "machine": machine_name(),
                                         "loss_first_50": _mean(losses[:50]), "loss_last_50": _mean(losses[-50:])}}


def _where(cfg: DistillConfig, scheduler_config: dict) -> dict:
    """The grid as a tensor, and the grid indices of the timesteps the LCM sampler visits."""
    visits = sampler_timesteps(scheduler_config)
    missing = [t for t in visits if t not in cfg.grid]
    if missing:
        raise ValueError(f"the grid lacks the LCM sampler's timesteps {missing}")
    return {"grid": torch.tensor(cfg.grid), "sampler": torch.tensor([cfg.grid.index(t) for t in visits]),
            "sampler timesteps": visits}


def _step(cfg, student, opt, data, alphas, where, gen) -> float:
    """One regression step: states on the trajectories (a `sampler_share` of them at the sampler's
    timesteps, the rest anywhere on the grid) against their trajectories' endpoints."""
    idx = torch.randint(len(data["ends"]), (cfg.batch,), generator=gen)
    at_sampler = where["sampler"][torch.randint(len(where["sampler"]), (cfg.batch,), generator=gen)]
    anywhere = torch.randint(len(cfg.grid), (cfg.batch,), generator=gen)
    j = torch.where(torch.rand(cfg.batch, generator=gen) < cfg.sampler_share, at_sampler, anywhere)
    w_emb = guidance_embedding(data["w"][idx], cfg.cond_dim)
    with autocast("cpu", cfg.bf16):
        predicted = consistency(student, data["states"][idx, j], where["grid"][j], data["embeds"][idx], w_emb,
                                alphas, cfg.timestep_scaling)
    error = predicted.float() - data["ends"][idx]
    loss = (torch.sqrt(error ** 2 + cfg.huber_c ** 2) - cfg.huber_c).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
    opt.step()
    return float(loss.detach())


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 6) if values else None


def export(student, record: dict, model: Path) -> Path:
    """The student (the slow average) beside the teacher's UNet, in fp16, with its training record."""
    return export_fp16(student, model / STUDENT_FOLDER, "distillation.json", record)


def main(argv: list[str] | None = None) -> None:
    args = command_line(__doc__.splitlines()[0], ".cache/distill",
                        "a few steps on a few trajectories (the tests)").parse_args(argv)
    done = distill(configured(SMOKE if args.smoke else DistillConfig(), args), args.model, args.work)
    path = export(done["student"], done["record"], args.out or args.model)
    print(f"student: {path} (trajectories {done['record']['trajectory seconds']:.0f} s, "
          f"{done['record']['steps']} steps {done['record']['seconds']:.0f} s; "
          f"loss {done['record']['loss_first_50']} -> {done['record']['loss_last_50']})")


if __name__ == "__main__":
    main()
