"""The samplers artists know, as a table: name -> diffusers scheduler class and arguments, and
AUTOMATIC1111's names for them. Pure data, shared by every floor: the request checks a name here,
PNG Info and the REST API translate A1111's names, the engine builds the scheduler
(studio/generation/schedulers.py). Importing this module imports no diffusers.
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
    # few-step models (studio/models/fewstep.py): timesteps from the end of the schedule ("trailing",
    # A1111's SGM Uniform), so that 1-4 steps start from pure noise; TCD's own sampler (gamma 0.3)
    "Euler a SGM Uniform": SchedulerSpec("Euler a", "SGM Uniform", "EulerAncestralDiscreteScheduler",
                                         {"timestep_spacing": "trailing"}),
    "Euler SGM Uniform": SchedulerSpec("Euler", "SGM Uniform", "EulerDiscreteScheduler",
                                       {"timestep_spacing": "trailing"}),
    "DDIM SGM Uniform": SchedulerSpec("DDIM", "SGM Uniform", "DDIMScheduler",
                                      {"set_alpha_to_one": False, "timestep_spacing": "trailing"}),
    "TCD": SchedulerSpec("TCD", "Automatic", "TCDScheduler"),
}

DEFAULT_SCHEDULER = "DPM++ 2M Karras"

# Flow-matching models (Flux, SD 3.5: studio/families) sample on their own schedule: the same names
# run diffusers' flow schedulers, or the multistep solvers on flow sigmas. Forge writes these
# "Schedule type: Simple" (evenly spaced sigmas, shifted). A name not here runs as its sampler's
# entry here ("DPM++ 2M Karras" as "DPM++ 2M"), else as FLOW_DEFAULT, with a note.
FLOW = {"use_flow_sigmas": True, "prediction_type": "flow_prediction"}
FLOW_SCHEDULERS: dict[str, SchedulerSpec] = {
    "Euler": SchedulerSpec("Euler", "Simple", "FlowMatchEulerDiscreteScheduler"),
    "Euler a": SchedulerSpec("Euler a", "Simple", "FlowMatchEulerDiscreteScheduler", {"stochastic_sampling": True}),
    "DPM++ 2M": SchedulerSpec("DPM++ 2M", "Simple", "DPMSolverMultistepScheduler",
                              {"algorithm_type": "dpmsolver++", "solver_order": 2, **FLOW}),
    "DPM++ 2M SDE": SchedulerSpec("DPM++ 2M SDE", "Simple", "DPMSolverMultistepScheduler",
                                  {"algorithm_type": "sde-dpmsolver++", "solver_order": 2, **FLOW}),
    "UniPC": SchedulerSpec("UniPC", "Simple", "UniPCMultistepScheduler", dict(FLOW)),
    "DEIS": SchedulerSpec("DEIS", "Simple", "DEISMultistepScheduler", dict(FLOW)),
    "LCM": SchedulerSpec("LCM", "Simple", "FlowMatchLCMScheduler"),
}
FLOW_DEFAULT = "Euler"
# the solvers on flow sigmas: they cannot start from a noised picture (diffusers' flow img2img and
# inpainting pipelines noise the input with the FlowMatch schedulers' `scale_noise`), and they take
# a shift by picture size (`mu`) only where the model's schedule has one (studio/families/run.py)
FLOW_SOLVERS = frozenset({"DPM++ 2M", "DPM++ 2M SDE", "UniPC", "DEIS"})


def flow_scheduler(name: str, mode: str = "txt2img") -> tuple[str, list[str]]:
    """The flow sampler a request's sampler name runs as on a flow-matching model in `mode`,
    with a note when it is another."""
    label = name if name in FLOW_SCHEDULERS else SCHEDULERS[name].sampler if name in SCHEDULERS else name
    if label in FLOW_SOLVERS and mode != "txt2img":
        return FLOW_DEFAULT, [f"{name} cannot start from a picture on a flow-matching model: used {FLOW_DEFAULT}."]
    if label == name and name in FLOW_SCHEDULERS:
        return name, []
    if label in FLOW_SCHEDULERS:
        return label, [f"{name} runs as {label} on flow sigmas here (flow-matching model)."]
    return FLOW_DEFAULT, [f"{name} has no flow-matching form here: used {FLOW_DEFAULT} "
                          f"(flow samplers: {', '.join(FLOW_SCHEDULERS)})."]


def scheduler_names() -> list[str]:
    return list(SCHEDULERS)


# -- AUTOMATIC1111's names ------------------------------------------------------------------------
# What programs send (the REST API) and pictures carry (PNG Info): A1111 1.9+ names a sampler and a
# schedule type separately; older clients send combined names ("DPM++ 2M Karras"), and aliases such
# as k_euler_a (sd_samplers_kdiffusion.py, sd_schedulers.py). Samplers A1111 has and the studio does
# not (DPM fast, Restart...) fall back to the default, as A1111 does with names it does not know.
A1111_ALIASES: dict[str, tuple[str, ...]] = {
    "Euler a": ("k_euler_a", "k_euler_ancestral", "euler_ancestral", "euler_a"),
    "Euler": ("k_euler", "euler"), "LMS": ("k_lms", "lms"), "Heun": ("k_heun", "heun"),
    "DPM2": ("k_dpm_2", "dpm_2", "kdpm_2"), "DPM2 a": ("k_dpm_2_a", "dpm_2_ancestral", "kdpm_2_a"),
    "DPM++ 2M": ("k_dpmpp_2m", "dpmpp_2m"), "DPM++ SDE": ("k_dpmpp_sde", "dpmpp_sde"),
    "DPM++ 2M SDE": ("k_dpmpp_2m_sde", "dpmpp_2m_sde"), "DDIM": ("ddim",), "PLMS": ("plms", "pndm"),
    "UniPC": ("uni_pc", "unipc"), "LCM": ("lcm",), "DEIS": ("deis",), "TCD": ("tcd",),
}
# A1111's schedule types (name -> label); "Automatic" means the sampler's own default
SCHEDULE_TYPES: dict[str, str] = {
    "automatic": "Automatic", "uniform": "Uniform", "karras": "Karras", "exponential": "Exponential",
    "polyexponential": "Polyexponential", "sgm_uniform": "SGM Uniform", "kl_optimal": "KL Optimal",
    "align_your_steps": "Align Your Steps", "simple": "Simple", "normal": "Normal", "ddim": "DDIM",
    "beta": "Beta",
}
# A1111's default schedule of a sampler where it is not uniform (exponential for DPM++ 2M SDE, which
# the studio has with Karras sigmas: the nearest it has)
A1111_DEFAULT_SCHEDULE = {"DPM++ 2M": "Karras", "DPM++ SDE": "Karras", "DPM++ 2M SDE": "Karras",
                          "DPM2": "Karras", "DPM2 a": "Karras"}


def schedule_label(text: str | None) -> str:
    """A schedule type's label from its name or label ("karras", "Karras", "SGMUniform"); "" for
    nothing or one A1111 does not have."""
    key = (text or "").strip().lower().replace(" ", "_")
    key = {"sgmuniform": "sgm_uniform"}.get(key, key)
    return SCHEDULE_TYPES.get(key, "")


def _a1111_sampler(text: str) -> str | None:
    wanted = text.strip().lower()
    for label, aliases in A1111_ALIASES.items():
        if wanted == label.lower() or wanted in aliases:
            return label
    return None


def from_a1111(sampler: str | None, schedule: str | None = None) -> tuple[str, list[str]]:
    """The studio's sampler for an A1111 sampler name (label, alias or legacy combined name) and
    schedule type (name or label); with notes saying what was substituted."""
    name = (sampler or "").strip()
    label, named = _a1111_sampler(name), ""
    if label is None:
        for schedule_name in sorted(SCHEDULE_TYPES.values(), key=len, reverse=True):
            if name.lower().endswith(" " + schedule_name.lower()):
                label, named = _a1111_sampler(name[:-len(schedule_name) - 1]), schedule_name
                break
    if label is None:
        return DEFAULT_SCHEDULER, ([f"Unknown sampler {name!r}: used {DEFAULT_SCHEDULER}."] if name else [])
    asked = schedule_label(schedule)
    want = asked if asked not in ("", "Automatic") else named or "Automatic"
    if want == "Automatic":
        want = A1111_DEFAULT_SCHEDULE.get(label, "Uniform")
    variants = {spec.schedule: key for key, spec in SCHEDULERS.items() if spec.sampler == label}
    evenly = variants.get("Automatic") or variants.get(UNIFORM)      # evenly spaced timesteps
    if want in variants or (want == UNIFORM and evenly):
        return variants.get(want) or evenly, []
    key = evenly or next(iter(variants.values()))
    return key, [f"Schedule type {want} is not available for {label} here: used {SCHEDULERS[key].schedule}."]
