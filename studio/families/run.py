"""What the engine asks of a model's family while it runs a request (studio/generation/engine.py):
the checks and settings at `prepare`, the text conditioner at `condition`, the guidance arguments,
scheduler and denoising module at `denoise`. Each answer comes from the family table
(studio/families/__init__.py), so the engine has no branch per family.
"""

from __future__ import annotations

from studio.families import VARIANTS, Family, family, slg_layers
from studio.samplers import FLOW_DEFAULT, FLOW_SOLVERS, flow_scheduler


def family_of(info) -> Family:
    return family(info.arch)


def settle(request, info, width: int, height: int, notes: list[str]) -> tuple[int, int, str]:
    """Refuse what the family lacks; the picture's size on its grid and the sampler it runs,
    each with a note when it differs from what was asked."""
    fam = family_of(info)
    fam.check(request)
    step = fam.size_step
    w, h = max(step, width // step * step), max(step, height // step * step)
    if (w, h) != (width, height):
        notes.append(f"{fam.name} draws sides in multiples of {step} px: {width}x{height} made as {w}x{h}.")
    sampler = flow_sampler(request, info, notes) if fam.flow else request.scheduler
    if fam.emphasis_note and _weighted(request.prompt + request.negative_prompt):
        notes.append(fam.emphasis_note)
    notes += [n for n in (guidance_note(request, info),) if n]
    return w, h, sampler


def flow_sampler(request, info, notes: list[str]) -> str:
    """The flow sampler a request runs as (studio/samplers.py), where the model's schedule lets
    it: the solvers need a shift by size on Flux (its pipelines always pass one), and take no
    fixed shift where the model shifts by size."""
    fam = family_of(info)
    sampler, said = flow_scheduler(request.scheduler, request.mode)
    notes += said
    if sampler in FLOW_SOLVERS and fam.passes_mu and not info.shift_by_size:
        notes.append(f"{sampler} does not run on {info.family} (a fixed shift) here: used {FLOW_DEFAULT}.")
        return FLOW_DEFAULT
    if sampler in FLOW_SOLVERS and not VARIANTS[info.variant].solvers:
        notes.append(f"{sampler} does not run on {info.family} here (its pipeline sets the sigmas): used "
                     f"{FLOW_DEFAULT}.")
        return FLOW_DEFAULT
    if sampler in FLOW_SOLVERS and request.shift and info.shift_by_size:
        notes.append(f"Shift is not used by {sampler} on {info.family}: its shift follows the picture size "
                     "(Euler, Euler a and LCM take a fixed one).")
    return sampler


def _weighted(text: str) -> bool:
    from studio.families.text import has_weights
    return has_weights(text)


def guidance(request, info, pipe=None) -> dict:
    """CFG as the pipeline takes it: Flux's guidance_scale is the distilled embedding (its true
    CFG is true_cfg_scale, where the variant has it); every other family's is CFG, with SD 3.5's
    skip-layer guidance where asked (text-to-image)."""
    fam = family_of(info)
    if not fam.distilled_guidance:
        slg = {}
        if request.slg_scale > 0 and fam.skip_layers and request.mode == "txt2img" and pipe is not None:
            slg = {"skip_guidance_layers": slg_layers(pipe.transformer.config.num_layers),
                   "skip_layer_guidance_scale": request.slg_scale}
        return {"guidance_scale": max(0.0, request.cfg_scale - fam.cfg_offset), **slg}
    kw = {"guidance_scale": request.distilled_cfg}
    if VARIANTS[info.variant].true_cfg:
        kw["true_cfg_scale"] = request.cfg_scale
    return kw


def guidance_note(request, info) -> str:
    """What the user is told when CFG cannot act as asked."""
    if family_of(info).distilled_guidance and not VARIANTS[info.variant].true_cfg and request.cfg_scale > 1:
        return f"{info.family} has no true CFG: CFG scale is not used (Distilled CFG scale guides it)."
    return ""


def t5_tokens(info, asked: int = 0) -> int:
    """How many T5 tokens a prompt is read with: as asked, else the variant's or family's own."""
    return asked or VARIANTS[info.variant].t5_tokens or family_of(info).t5_tokens


def conditioner(pipe, info, positives, negatives, steps: int, clip_skip: int, cache, state, toward,
                t5_asked: int = 0):
    """The text conditioner of the family (CLIP with A1111's prompt syntax, or T5)."""
    fam = family_of(info)
    if fam.text != "clip":
        from studio.families import text
        made = {"t5": text.T5Conditioner, "qwen": text.QwenConditioner}[fam.text]
        return made(pipe, positives, negatives, steps, t5_tokens(info, t5_asked), VARIANTS[info.variant].true_cfg,
                    cache, state, toward)
    from studio.prompts.conditioning import Conditioner
    return Conditioner(pipe, positives, negatives, steps, clip_skip, cache, state, toward)


def image_kwargs(info, kwargs: dict, width: int, height: int) -> dict:
    """A call's size and picture as the variant takes them: an instruction edit (Kontext) takes
    the picture whole, without strength (its inpainting keeps it), and is held to the asked size
    (it otherwise rescales to its own preferred area)."""
    variant = VARIANTS.get(info.variant)
    if variant is None or not variant.edits:
        return kwargs
    kept = {k: v for k, v in kwargs.items() if k != "strength" or "mask_image" in kwargs}
    return {**kept, "max_area": width * height, "_auto_resize": False}


def denoiser(pipe, info):
    """The module that denoises (for the hooks that act on it: regions, feature cache, tiling)."""
    return getattr(pipe, family_of(info).denoiser)


def spatial(pipe, latents, width: int, height: int):
    """Latents as (batch, channels, h, w): Flux's packed 2x2 patches unpacked (for previews)."""
    if latents.ndim == 3:
        return pipe._unpack_latents(latents, height, width, pipe.vae_scale_factor)
    return latents
