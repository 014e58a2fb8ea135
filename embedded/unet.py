"""Stages 5 and 5b of `python -m embedded.train`: the UNet and the CLIP text encoder trained
together, a layout phase (with optional restarts) then a detail phase (see `unet_phases`)."""

from __future__ import annotations

import contextlib
import copy
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .common import (_bar, _ema_update, _interrupt_hook, _load, _lr_at, _save, _stage_time, check_start,
                     log_resume, weights_fingerprint)
from .model import loss_weight, noise_scheduler, timesteps
from .config import TrainConfig
from .regional import encode



@dataclass(frozen=True)
class Phase:
    """One UNet + text-encoder training phase: its checkpoint, length, learning rate, the share of
    each batch drawn from high noise, the loss weight's floor (`loss_weight`) and the rng
    stream it draws from."""

    name: str
    key: str          # its name in the record's timings and step counts
    checkpoint: str
    steps: int
    lr: float
    high_noise_share: float
    snr_floor: float
    seed_offset: int
    schedule: str = "cosine"   # lr after warm-up (`common._lr_at`)
    train_text: bool = True    # False: the text encoder stays as it is (the student, the inpainting
                               # UNet and the ControlNet read the same one)


def unet_phases(cfg: TrainConfig) -> tuple[Phase, ...]:
    """Stage 5 (layout: constant lr after the warm-up by default), then for each of
    `layout_restart_steps` the layout phase again from the previous one's EMA weights (fresh
    optimiser, warm-up and cosine decay), and stage 5b (detail, cosine decay).

    Why two (issue 3, measured on 200 held-out prompts: colour / position / shape): with 40% of
    every batch at t >= 900 and the high-noise weight floored (`loss_weight`) the UNet learns to
    put an object where the prompt says (position 8% -> 95% at 7,500 steps), but it is left
    poor at what mid and low noise make: colour 55%, shape 53% (plain min-SNR, 10,000 steps:
    67% / 77%), objects with dark fringes, and "a red circle on a blue background" brown 7
    times in 8 whatever the sampler. So the detail phase goes on from the layout phase's EMA
    weights with a fresh optimiser (warm-up and cosine decay again) for 2,500 steps, each
    variant on the same layout phase:
    - plain min-SNR, uniform timesteps, lr 4e-4 (the defaults): 64% / 91% / 78%, and on
      prompts with no position word colour 69%, shape 82%;
    - the same at lr 2e-4: 65% / 93% / 73%, with no position word 65% / 72%;
    - lr 2e-4 with the floor kept and 10% of each batch at t >= 900: 60% / 92% / 55%.
    The position, once learned, is not lost when the high-noise steps lose their weight.

    The restarts (2026-12-02, on the 2,500-step VAE): 5,000 layout steps left position at 23%
    (the 7,500-step run learned it between steps 3,000 and 5,000, while its lr was still high).
    Going on from that EMA with a fresh warm-up and cosine decay, position (100 held-out
    prompts, before any detail phase) rose to 62% at 1,250 steps and 76% at 2,500; the detail
    phase after that cost position (colour 92.5%, position 67%, shape 86.5%). A second restart of
    2,000 steps took it to 88%, and the detail phase after it (1,000 steps) gave colour 95%,
    position 79.5%, shape 88% on 200 held-out prompts, in 190 min of training.

    What the restarts showed is that position is learned while the lr is high, so the layout
    phase now keeps it constant after the warm-up (`layout_schedule`, "warmup-stable" in the
    manner of WSD schedules; the detail phase's cosine is the decay). With 32-token captions,
    from scratch, position read from the EMA's x0 prediction at t = 999 went 6% (step 2,000),
    17%, 33%, 64%, 100% (step 6,000), and 6,000 layout steps replace 9,500 (UNET_BUDGET in
    train.py). A first phase on t >= 900 only (1,000 steps from scratch) had taught it nothing
    of colour or position (x0 probe 9% / 5%), so there is none. Restarts stay an option."""
    phases = [Phase("UNet+text", "unet", "unet.pt", cfg.unet_steps, cfg.lr, cfg.high_noise_share, cfg.snr_floor, 2,
                    cfg.layout_schedule)]
    for i, steps in enumerate(cfg.layout_restart_steps):
        n = "" if i == 0 else str(i + 1)
        phases.append(Phase(f"UNet+text layout restart{n}", f"restart{n}", f"unet-restart{n}.pt", steps,
                            cfg.lr, cfg.high_noise_share, cfg.snr_floor, 7 + 10 * i))
    phases.append(Phase("UNet+text detail", "detail", "unet-detail.pt", cfg.detail_steps, cfg.detail_lr,
                        cfg.detail_high_noise_share, cfg.detail_snr_floor, 5))
    return tuple(phases)


def stage_unet(cfg: TrainConfig, phase: Phase, work: Path, unet, text, ids: torch.Tensor,
               empty: torch.Tensor, latents: torch.Tensor, scale: float, device: str,
               started: float, regional=None) -> dict:
    """Train `unet` and `text` (modified in place) for one phase; returns the EMA models, the
    steps done and the seconds spent (over every invocation). With `regional`
    (`regional.RegionalTraining`), `ids` are its texts (N, 3, T), read region by region."""
    ck = work / phase.checkpoint
    state = _load(ck) or {}
    start = weights_fingerprint(unet, text)
    check_start(ck, state, start)
    ema_unet, ema_text = copy.deepcopy(unet), copy.deepcopy(text)
    if state.get("done"):
        ema_unet.load_state_dict(state["ema_unet"]); ema_text.load_state_dict(state["ema_text"])
        return {"unet": ema_unet, "text": ema_text, "steps": state["step"], "seconds": state.get("seconds")}
    params = list(unet.parameters()) + (list(text.parameters()) if phase.train_text else [])
    text.requires_grad_(phase.train_text)
    opt = torch.optim.AdamW(params, lr=phase.lr, weight_decay=1e-2)
    step = 0
    if state:
        log_resume(phase.name, state["step"])
        unet.load_state_dict(state["unet"]); text.load_state_dict(state["text"])
        ema_unet.load_state_dict(state["ema_unet"]); ema_text.load_state_dict(state["ema_text"])
        opt.load_state_dict(state["opt"]); step = state["step"]
    for m in (unet, text, ema_unet, ema_text):
        m.to(device)
    unet.train(); text.train(phase.train_text)
    run = _Run(cfg, phase, ck, state, start, unet, text, ema_unet, ema_text, opt, params, device, started)
    bar = _bar(phase.steps, step, phase.name)
    began = time.time()
    with regional.attending(unet) if regional else contextlib.nullcontext():
        step, stopped_early = _steps(run, step, (ids, empty, latents, scale), bar, regional)
    bar.close()
    seconds = time.time() - began + state.get("seconds", 0.0)
    _save(ck, {"ema_unet": ema_unet.state_dict(), "ema_text": ema_text.state_dict(), "done": True,
               "step": step, "stopped_early": stopped_early, "seconds": seconds, "start": start})
    return {"unet": ema_unet, "text": ema_text, "steps": step, "seconds": seconds}


@dataclass
class _Run:
    """What a phase's steps work on: its settings, checkpoint and models."""

    cfg: TrainConfig
    phase: Phase
    ck: Path
    state: dict
    start: str
    unet: torch.nn.Module
    text: torch.nn.Module
    ema_unet: torch.nn.Module
    ema_text: torch.nn.Module
    opt: torch.optim.Optimizer
    params: list
    device: str
    started: float


def _steps(run: _Run, step: int, data: tuple, bar, regional) -> tuple[int, bool]:
    """The phase's training steps from `step` on `data` (token ids, the empty caption's, latents,
    latent scale); returns the step reached and whether the time budget stopped it."""
    cfg, phase, ck, state, start, device = run.cfg, run.phase, run.ck, run.state, run.start, run.device
    unet, text, ema_unet, ema_text, opt = run.unet, run.text, run.ema_unet, run.ema_text, run.opt
    ids, empty, latents, scale = data
    gen = torch.Generator().manual_seed(cfg.seed + phase.seed_offset + step)
    sched = noise_scheduler()
    alphas = sched.alphas_cumprod.to(device)
    snr = alphas / (1 - alphas)
    began = time.time()
    while step < phase.steps:
        idx = torch.randint(len(latents), (cfg.batch,), generator=gen)
        x0 = latents[idx].to(device) * scale
        tok = ids[idx].clone()
        drop = torch.rand(cfg.batch, generator=gen) < cfg.caption_dropout
        tok[drop] = empty
        noise = torch.randn(x0.shape, generator=gen).to(device)
        t = timesteps(cfg, gen, phase.high_noise_share).to(device)
        noisy = sched.add_noise(x0, noise, t)
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, cfg, phase.steps, phase.lr, phase.schedule)
        with torch.set_grad_enabled(phase.train_text):
            cond = encode(text, tok.to(device))
        if regional:
            regional.batch(idx)
        pred = unet(noisy, t, encoder_hidden_states=cond).sample
        target = sched.get_velocity(x0, noise, t)
        per_sample = F.mse_loss(pred, target, reduction="none").mean(dim=(1, 2, 3))
        weight = loss_weight(snr[t], cfg, phase.snr_floor)
        loss = (per_sample * weight).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(run.params, 1.0)
        opt.step()
        decay = min(cfg.ema_decay, (1 + step) / (10 + step))
        _ema_update(ema_unet, unet, decay)
        if phase.train_text:
            _ema_update(ema_text, text, decay)
        step += 1
        bar.update(1)
        if step % 25 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
        budget_hit = cfg.time_budget_min and (time.time() - run.started) / 60 >= cfg.time_budget_min
        if step % cfg.checkpoint_every == 0 or step == phase.steps or budget_hit:
            _save(ck, {"unet": unet.state_dict(), "text": text.state_dict(),
                       "ema_unet": ema_unet.state_dict(), "ema_text": ema_text.state_dict(),
                       "opt": opt.state_dict(), "step": step, "start": start,
                       "seconds": time.time() - began + state.get("seconds", 0.0)})
        if budget_hit:
            return step, True
        _interrupt_hook(step)
    return step, False


def train_unet(cfg: TrainConfig, work: Path, unet, text, ids: torch.Tensor, empty: torch.Tensor,
               latents: torch.Tensor, scale: float, device: str, started: float,
               timings: dict) -> tuple[dict, dict]:
    """Stages 5 and 5b; each phase starts from the previous one's EMA weights. Returns the
    final EMA models and the steps of each phase; adds each phase's seconds to `timings`."""
    done = {}
    for phase in unet_phases(cfg):
        t = time.time()
        trained = stage_unet(cfg, phase, work, unet, text, ids, empty, latents, scale, device, started)
        _stage_time(timings, phase.key, t, trained.get("seconds"))
        done[phase.key] = trained["steps"]
        unet = copy.deepcopy(trained["unet"]).cpu()   # the next phase trains on from the EMA
        text = copy.deepcopy(trained["text"]).cpu()
        if phase.steps and trained["steps"] < phase.steps:   # the time budget ran out
            break
    return trained, done
