"""Few-step models: what the studio recognises as one, and the settings it offers for it.

A few-step model draws a good picture in 1-8 steps, but only with the sampler, step count and
guidance it was distilled for; with a 20-step sampler at CFG 7 it draws mush. Each kind is a row
of a table: how it is recognised and its defaults (from the models' own cards, see
../shared/notes/realtime_scale.md). The UI offers the defaults with a note and leaves every
control free to change; the negative prompt is greyed out where guidance makes it inert (a
guidance embedding: one UNet call a step and no negative branch; CFG 1 or below: no guidance).
Importing this module imports nothing heavy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class FewStep:
    """The settings a model was made for, which the tabs take when it loads: a few-step model's,
    or a newer family's (studio/families: Flux dev's Distilled CFG, SD 3.5's steps and CFG)."""
    method: str          # what the model is, as the note names it
    sampler: str         # a name in studio.samplers.SCHEDULERS
    steps: int
    cfg: float
    guidance_embedded: bool  # guidance is an input of the model: no negative branch at any CFG
    note: str
    size: int = 0            # the side it was distilled at, where it differs from its family's
    distilled: float = 0.0   # Distilled CFG scale (Flux), 0: the model has no guidance input
    heading: str = ""        # what the banner starts with ("" = "Few-step (method)")

    def banner(self) -> str:
        distilled = f", Distilled CFG {self.distilled:g}" if self.distilled else ""
        return (f"{self.heading or f'Few-step ({self.method})'}: {self.sampler}, {self.steps} "
                f"step{'s' * (self.steps > 1)}, CFG {self.cfg:g}{distilled} set for you (change them freely). "
                f"{self.note}")


FEW_STEP_SAMPLERS = ("LCM", "TCD")


def negative_has_effect(few: FewStep | None, cfg: float) -> bool:
    """Whether a negative prompt changes the picture: not with a guidance embedding, and with no
    model at CFG 1 or below (the pipelines then run no unconditional branch at all)."""
    return not (few is not None and few.guidance_embedded) and cfg > 1


def looks_few_step(sampler: str, cfg: float) -> bool:
    """Settings made for a few-step model (what a switch back to a regular model resets)."""
    return sampler in FEW_STEP_SAMPLERS or cfg <= 1


# a UNet with a guidance embedding (time_cond_proj_dim): latent consistency models
# (SimianLuo/LCM_Dreamshaper_v7's card: 4 steps, guidance 8; trained for w 3-13)
GUIDANCE_EMBEDDING = FewStep(
    "LCM, guidance embedding", "LCM", 4, 8.0, True,
    "Guidance is an input of the model: CFG costs nothing, and the negative prompt has no effect.")


def embedded_student(w_min: float, w_max: float) -> FewStep:
    """The embedded model's own student (embedded/distill.py): its CFG default is the middle
    of the guidance range it was distilled for (w = CFG - 1)."""
    return FewStep("the embedded model's 4-step student", "LCM", 4, 1 + (w_min + w_max) / 2, True,
                   f"Distilled for CFG {1 + w_min:g}-{1 + w_max:g}; the negative prompt has no effect. "
                   "1 step is the fastest, for Live.")


def from_unet_config(unet: dict) -> FewStep | None:
    """A few-step model recognised from its UNet's configuration alone."""
    if unet.get("time_cond_proj_dim"):
        return GUIDANCE_EMBEDDING
    return None


OFF = "Guidance is off at CFG 1 (one UNet call a step), so the negative prompt has no effect; raise CFG a little to use it."

# (pattern in the file or folder name, what it is): checkpoints with the distillation merged in.
# The names the makers publish: sd_turbo, sdxl_turbo, *Turbo* merges; sdxl_lightning_4step;
# Hyper-SD merges; LCM merges ("...LCM"). Steps in the name ("8step") override the default.
CHECKPOINT_NAMES: tuple[tuple[str, FewStep], ...] = (
    (r"turbo", FewStep("Turbo (adversarial diffusion distillation)", "Euler a SGM Uniform", 1, 1.0, False,
                       "1-4 steps; made at 512 px. " + OFF, size=512)),
    (r"lightning", FewStep("Lightning", "Euler SGM Uniform", 4, 1.0, False, OFF)),
    (r"hyper[-_ ]?sd", FewStep("Hyper-SD", "DDIM SGM Uniform", 8, 1.0, False, OFF)),
    (r"(?<![a-z])lcm(?![a-z])", FewStep("LCM merge", "LCM", 4, 1.5, False,
                                        "CFG 1-2 (higher burns the picture).")),
)
# LoRAs that make any model of their family few-step (their published names and settings:
# latent-consistency/lcm-lora-*, ByteDance/Hyper-SD, h1t/TCD-SD*-LoRA, ByteDance/SDXL-Lightning)
LORA_NAMES: tuple[tuple[str, FewStep], ...] = (
    (r"hyper[-_ ]?sd.*cfg", FewStep("Hyper-SD LoRA, CFG kept", "DDIM SGM Uniform", 8, 5.0, False,
                                    "Made for CFG 5-8: the negative prompt works.")),
    (r"hyper[-_ ]?sd.*(?<!\d)1[-_ ]?step", FewStep("Hyper-SD 1-step LoRA", "TCD", 1, 1.0, False, OFF)),
    (r"hyper[-_ ]?sd", FewStep("Hyper-SD LoRA", "DDIM SGM Uniform", 8, 1.0, False, OFF)),
    (r"(?<![a-z])tcd(?![a-z])", FewStep("TCD LoRA", "TCD", 4, 1.0, False, OFF)),
    (r"lightning", FewStep("Lightning LoRA", "Euler SGM Uniform", 4, 1.0, False, OFF)),
    (r"(?<![a-z])lcm(?![a-z])", FewStep("LCM-LoRA", "LCM", 4, 1.5, False,
                                        "CFG 1-2 (higher burns the picture).")),
)
STEPS_IN_NAME = re.compile(r"(?<!\d)(\d{1,2})[-_ ]?steps?(?![a-z])")


def from_name(name: str, table: tuple[tuple[str, FewStep], ...] = CHECKPOINT_NAMES) -> FewStep | None:
    """A few-step checkpoint (or, with LORA_NAMES, LoRA) recognised by its name; "8step" in the
    name sets the steps."""
    low = name.lower()
    for pattern, few in table:
        if re.search(pattern, low):
            steps = STEPS_IN_NAME.search(low)
            return replace(few, steps=int(steps.group(1))) if steps and 0 < int(steps.group(1)) <= 16 else few
    return None
