"""The teacher's guided probability-flow ODE, solved once per training sample: where the few-step
student (embedded/distill.py) learns to land. Each trajectory starts from its own noise at
t = 999, follows the teacher's DPM-Solver++ (2M, diffusers' DPMSolverMultistepScheduler on a
custom timestep grid) with classifier-free guidance w (CFG = w + 1), and keeps every state it
passes and the clean latent it ends on. Every state on one trajectory has that same endpoint:
what a consistency function must return there.

The grid holds the timesteps diffusers' LCMScheduler visits at 1, 2 and 4 steps (999, 759, 499,
259 with its 50-point original schedule; `sampler_timesteps`), so the student is trained exactly
where it is asked in the studio, with points in between and a denser tail towards t = 0."""

from __future__ import annotations

import torch

# 999 -> 259 in fifths of each 240-260 gap, then a tail that shortens towards 0 (as Karras's does)
GRID = (999, 951, 903, 855, 807, 759, 707, 655, 603, 551, 499, 451, 403, 355, 307, 259,
        200, 145, 97, 58, 29, 10)


def sampler_timesteps(scheduler_config: dict, steps: tuple[int, ...] = (1, 2, 4)) -> list[int]:
    """The timesteps LCMScheduler samples at for each of `steps` (with the model's beta schedule)."""
    from diffusers import LCMScheduler
    lcm = LCMScheduler.from_config(scheduler_config)
    seen: set[int] = set()
    for n in steps:
        lcm.set_timesteps(n)
        seen.update(int(t) for t in lcm.timesteps)
    return sorted(seen, reverse=True)


def solve(unet, scheduler_config: dict, embeds: torch.Tensor, empty: torch.Tensor, ws: torch.Tensor,
          gen: torch.Generator, grid: tuple[int, ...] = GRID, batch: int = 64, progress=None):
    """(states, ends): states[i, j] is trajectory i at grid[j] (before the step taken there),
    ends[i] its clean latent. `embeds` are the captions' text embeddings, `empty` the empty
    caption's, `ws` each trajectory's guidance w; noise is drawn from `gen`, in order."""
    from diffusers import DPMSolverMultistepScheduler
    size = unet.config.sample_size
    shape = (unet.config.in_channels, size, size)
    states = torch.empty(len(embeds), len(grid), *shape)
    ends = torch.empty(len(embeds), *shape)
    for i in range(0, len(embeds), batch):
        cond = embeds[i:i + batch]
        states[i:i + len(cond)], ends[i:i + len(cond)] = _one_batch(
            unet, DPMSolverMultistepScheduler.from_config(scheduler_config, use_karras_sigmas=False),
            cond, empty.expand_as(cond), ws[i:i + len(cond)], torch.randn(len(cond), *shape, generator=gen), grid)
        if progress is not None:
            progress.update(len(cond))
    return states, ends


@torch.no_grad()
def _one_batch(unet, solver, cond, uncond, w, z, grid):
    solver.set_timesteps(timesteps=list(grid))
    z = z * solver.init_noise_sigma
    states, gw = [], w[:, None, None, None]
    for t in solver.timesteps:
        states.append(z)
        both = unet(torch.cat([z, z]), t, encoder_hidden_states=torch.cat([cond, uncond])).sample
        c, u = both.chunk(2)
        z = solver.step(c + gw * (c - u), t, z).prev_sample
    return torch.stack(states, dim=1), z
