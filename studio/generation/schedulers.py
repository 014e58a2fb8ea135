"""The samplers artists know, as a table: name -> diffusers scheduler class and arguments.

Each request builds its own scheduler with `from_config` from the loaded model's scheduler
config (schedulers hold per-run state, so one is never shared between requests). Importing this
module does not import diffusers: the UI reads the names only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class SchedulerSpec:
    sampler: str        # A1111's "Sampler" field
    schedule: str       # A1111's "Schedule type" field
    cls: str            # diffusers class name
    kwargs: dict[str, Any] = field(default_factory=dict)
    seeded: bool = False  # takes a noise-sampler seed of its own (Brownian tree)


KARRAS = {"use_karras_sigmas": True}
# A1111 1.9+ reads "Schedule type: Automatic" as the sampler's own default, which is Karras for
# DPM++ 2M, DPM2 and DPM2 a and exponential for DPM++ 2M SDE: those samplers without Karras
# sigmas are written "Uniform" (evenly spaced timesteps, what they run here), so an image made
# again in A1111 from its infotext gets the same schedule.
UNIFORM = "Uniform"

SCHEDULERS: dict[str, SchedulerSpec] = {
    "Euler a": SchedulerSpec("Euler a", "Automatic", "EulerAncestralDiscreteScheduler"),
    "Euler": SchedulerSpec("Euler", "Automatic", "EulerDiscreteScheduler"),
    "DPM++ 2M": SchedulerSpec("DPM++ 2M", UNIFORM, "DPMSolverMultistepScheduler",
                              {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "DPM++ 2M Karras": SchedulerSpec("DPM++ 2M", "Karras", "DPMSolverMultistepScheduler",
                                     {"algorithm_type": "dpmsolver++", "solver_order": 2, **KARRAS}),
    "DPM++ 2M SDE": SchedulerSpec("DPM++ 2M SDE", UNIFORM, "DPMSolverMultistepScheduler",
                                  {"algorithm_type": "sde-dpmsolver++", "solver_order": 2}),
    "DPM++ 2M SDE Karras": SchedulerSpec("DPM++ 2M SDE", "Karras", "DPMSolverMultistepScheduler",
                                         {"algorithm_type": "sde-dpmsolver++", "solver_order": 2,
                                          **KARRAS}),
    "DPM++ SDE Karras": SchedulerSpec("DPM++ SDE", "Karras", "DPMSolverSDEScheduler", dict(KARRAS),
                                      seeded=True),
    "DPM2": SchedulerSpec("DPM2", UNIFORM, "KDPM2DiscreteScheduler"),
    "DPM2 a": SchedulerSpec("DPM2 a", UNIFORM, "KDPM2AncestralDiscreteScheduler"),
    "DDIM": SchedulerSpec("DDIM", "Automatic", "DDIMScheduler", {"set_alpha_to_one": False}),
    "PNDM": SchedulerSpec("PLMS", "Automatic", "PNDMScheduler", {"skip_prk_steps": True}),
    "UniPC": SchedulerSpec("UniPC", "Automatic", "UniPCMultistepScheduler"),
    "DEIS": SchedulerSpec("DEIS", "Automatic", "DEISMultistepScheduler"),
    "Heun": SchedulerSpec("Heun", "Automatic", "HeunDiscreteScheduler"),
    "LMS": SchedulerSpec("LMS", "Automatic", "LMSDiscreteScheduler"),
    "LMS Karras": SchedulerSpec("LMS", "Karras", "LMSDiscreteScheduler", dict(KARRAS)),
    "LCM": SchedulerSpec("LCM", "Automatic", "LCMScheduler"),
}

DEFAULT_SCHEDULER = "DPM++ 2M Karras"


def scheduler_names() -> list[str]:
    return list(SCHEDULERS)


def build_scheduler(name: str, base_config: Any, *, seed: int | None = None):
    """A fresh scheduler for one request, from the model's own scheduler config."""
    import diffusers

    spec = SCHEDULERS[name]
    cls = getattr(diffusers, spec.cls)
    kwargs = dict(spec.kwargs)
    if spec.seeded and seed is not None:
        kwargs["noise_sampler_seed"] = seed
    return cls.from_config(base_config, **kwargs)
