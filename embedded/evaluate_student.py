"""The few-step student beside its teacher (`python -m embedded.evaluate --student`): the
pixel checker's fidelity on the record's held-out prompts, the same starting noise for every
model, for the student at 1, 2, 3, 4, 6 and 8 steps, the teacher at 20 (what the student learns
from) and the teacher at 4 (the control: distillation is worth shipping only if the student beats
it at the same step count); and latency per image, teacher and student runs interleaved."""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import torch

from studio.samplers import DEFAULT_SCHEDULER
from .common import machine_name
from .distill import STUDENT_FOLDER
from .fidelity import CFG, fidelity_scores, fresh, generators, shares, wilson

STUDENT_SCHEDULER = "LCM"
STUDENT_CFG = CFG            # w = CFG - 1 = 4, inside the distillation's w range (2-6)
# 1, 2 and 4 are the sampler's step counts the distillation trains at; 3, 6 and 8 fall between
# its grid points (the figures say what a user setting them gets)
STUDENT_STEPS = (1, 2, 3, 4, 6, 8)


def runs(pipe, student) -> dict[str, tuple]:
    """name -> (pipeline, steps, CFG, sampler)."""
    return {"teacher, 20 steps": (pipe, 20, CFG, DEFAULT_SCHEDULER),
            "teacher, 4 steps": (pipe, 4, CFG, DEFAULT_SCHEDULER),
            **{f"student, {n} step{'s' if n > 1 else ''}": (student, n, STUDENT_CFG, STUDENT_SCHEDULER)
               for n in STUDENT_STEPS}}


def latency(cases: dict[str, tuple], size: int, rounds: int) -> dict[str, dict]:
    """Seconds per picture (batch 1), each round running every case once in turn, so a drifting
    machine weighs on all of them alike; the first round is warm-up."""
    times: dict[str, list[float]] = {name: [] for name in cases}
    for r in range(rounds + 1):
        for name, (pipe, steps, cfg, scheduler) in cases.items():
            t = time.perf_counter()
            fresh(pipe, r, scheduler)("a red circle on a blue background", num_inference_steps=steps,
                                       guidance_scale=cfg, height=size, width=size, generator=generators([r]))
            if r:
                times[name].append(time.perf_counter() - t)
    out = {}
    for name, values in times.items():
        values.sort()
        out[name] = {"median s": round(statistics.median(values), 4),
                     "p95 s": round(values[min(len(values) - 1, int(0.95 * len(values)))], 4),
                     "pictures per second": round(1 / statistics.median(values), 1)}
    return out


def student_figures(pipe, model: Path, n: int, size: int, draws: int, validation: bool, quick: bool) -> dict:
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    unet = UNet2DConditionModel.from_pretrained(model / STUDENT_FOLDER, torch_dtype=torch.float32)
    student = StableDiffusionPipeline.from_pipe(pipe, unet=unet.to(pipe.device))
    student.set_progress_bar_config(disable=True)
    cases = runs(pipe, student)
    draw_ids = range(1, draws + 1) if validation else range(draws)
    t0 = time.time()
    fig: dict = {"prompts": n * draws, "prompt set": "validation draws" if validation else "the record's held-out draws"}
    for name, (p, steps, cfg, scheduler) in cases.items():
        pooled = [x for d in draw_ids for x in fidelity_scores(p, n, size, draw=d, validation=validation,
                                                              steps=steps, cfg=cfg, scheduler=scheduler)]
        got = shares(pooled)
        fig[name] = {**got, "95% intervals": {k: wilson(v, len(pooled)) for k, v in got.items()}}
    teacher, control, best = fig["teacher, 20 steps"], fig["teacher, 4 steps"], fig["student, 4 steps"]
    fig["student 4 steps / teacher 20 steps"] = {k: round(best[k] / teacher[k], 3) if teacher[k] else None
                                                 for k in ("colour", "background", "position", "shape", "all")}
    fig["student 4 steps minus teacher 4 steps"] = {k: round(best[k] - control[k], 4)
                                                    for k in ("colour", "background", "position", "shape", "all")}
    fig["latency"] = latency({k: cases[k] for k in ("teacher, 20 steps", "teacher, 4 steps", "student, 4 steps",
                                                     "student, 1 step")}, size, 3 if quick else 30)
    fig["settings"] = {"student sampler": STUDENT_SCHEDULER, "student cfg": STUDENT_CFG,
                       "teacher sampler": DEFAULT_SCHEDULER, "teacher cfg": CFG, "size": size,
                       "torch threads": torch.get_num_threads(), "machine": machine_name(),
                       "eval seconds": round(time.time() - t0, 1)}
    print(json.dumps(fig, indent=2))
    if not validation:
        (model / STUDENT_FOLDER / "evaluation.json").write_text(json.dumps(fig, indent=2) + "\n", encoding="utf-8")
        (model / STUDENT_FOLDER / "README.md").write_text(student_card(model), encoding="utf-8")
    return fig


def student_card(model: Path) -> str:
    """lcm-unet/README.md, made from the student's records (distillation.json, evaluation.json)."""
    folder = model / STUDENT_FOLDER
    run = json.loads((folder / "distillation.json").read_text(encoding="utf-8"))
    fig = json.loads((folder / "evaluation.json").read_text(encoding="utf-8"))
    cfg, keys = run["config"], ("colour", "background", "position", "shape", "all")
    rows = "\n".join(f"| {name} | " + " | ".join(f"{fig[name][k]:.1%}" for k in keys)
                     + f" | {fig['latency'][name]['median s'] * 1000:.0f} ms |" if name in fig["latency"] else
                     f"| {name} | " + " | ".join(f"{fig[name][k]:.1%}" for k in keys) + " | |"
                     for name in runs(None, None) if name in fig)
    kept = fig["student 4 steps / teacher 20 steps"]
    s = fig["settings"]
    minutes = (run["seconds"] + run.get("trajectory seconds", 0)) / 60
    return f"""# embedded-shapes-4step: a few-step student of the embedded model

A consistency model distilled from the embedded model's UNet (`python -m embedded.distill`,
`embedded/distill.py`): the teacher's UNet with a guidance embedding ({cfg['cond_dim']} wide),
trained to return, from any state on the teacher's guided ODE, where that ODE ends. The teacher's
ODE was solved once for {cfg['n_trajectories']:,} captions of rendered scenes (data seed {cfg['seed']};
DPM-Solver++ 2M on a {len(cfg['grid'])}-point grid holding the LCM sampler's timesteps
{', '.join(map(str, cfg['sampler timesteps']))}; guidance w drawn from {cfg['w_min']}-{cfg['w_max']}, w = CFG - 1;
{run.get('trajectory seconds', 0) / 60:.0f} minutes), then {run['steps']} steps of batch {cfg['batch']}
regressed grid states ({cfg['sampler_share']:.0%} of them at the sampler's timesteps) on their endpoints,
lr {cfg['lr']}, pseudo-Huber loss (c = {cfg['huber_c']}), exported as an average of the weights at
{cfg['average']}; {minutes:.0f} minutes in all on {run['machine']}. Loss {run['loss_first_50']} (first 50 steps) ->
{run['loss_last_50']} (last 50). Stored in fp16 beside the teacher's UNet; loads with diffusers'
LCMScheduler (sampler "LCM"), CFG {s['student cfg']:g} (a guidance embedding: one UNet call a step,
the negative prompt has no effect).

## Fidelity on the record's held-out prompts ({fig['prompts']}; the same starting noise for every row)

| | colour | background | position | shape | all four | seconds a picture (median) |
|---|---|---|---|---|---|---|
{rows}

The student at 4 steps keeps {', '.join(f'{k} {v:.0%}' for k, v in kept.items() if v is not None)} of the
teacher's 20-step figures; against the teacher at 4 steps (the control):
{', '.join(f'{k} {v:+.1%}' for k, v in fig['student 4 steps minus teacher 4 steps'].items())}.
Latency: batch 1, {s['size']} px, {s['torch threads']} threads, teacher and student runs interleaved
(p95: {', '.join(f"{k} {v['p95 s'] * 1000:.0f} ms" for k, v in fig['latency'].items())}).

`python -m embedded.evaluate --student` prints these figures and writes `evaluation.json`.
"""
