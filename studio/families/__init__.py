"""Model families as a table: what each architecture is, what it needs and what it can do.

The studio runs every family through the same manager, engine, record and tabs. What differs is
data here: the pipeline classes that mark a family in a diffusers folder, the module that
denoises (a UNet or a transformer), whether it samples on a flow-matching schedule (its own
samplers and shift), the multiple its picture sides must be, how prompts are encoded
(studio/prompts for CLIP families, studio/families/text.py for the T5 ones), whether CFG is
distilled into the model, and which request features it has; a request that asks a family for
one it lacks is refused with a sentence naming both. Importing this module imports nothing heavy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from studio.errors import InvalidRequest
from studio.models.fewstep import OFF, FewStep


@dataclass(frozen=True)
class Feature:
    label: str                          # what the refusal calls it
    asked: Callable[[object], bool]     # whether a request uses it


def _regions(r) -> bool:
    from studio.control.regions import has_regions
    return has_regions(r.prompt)


def _editing(r) -> bool:
    """Prompt editing ([from:to:when], [a|b]): a prompt that changes between steps."""
    from studio.prompts.syntax import schedule
    return any(len(schedule(text, r.steps)) > 1 for text in (r.prompt, r.negative_prompt))


# request features beyond a plain picture, each a family may lack
FEATURES: dict[str, Feature] = {
    "regions": Feature("regional prompts (ADDCOL, ADDROW, ADDBASE)", _regions),
    "control": Feature("ControlNet", lambda r: bool(r.control)),
    "references": Feature("reference images", lambda r: bool(r.references) and r.reference_strength > 0),
    "feature_cache": Feature("the feature cache (DeepCache)", lambda r: r.feature_cache > 0),
    "tiling": Feature("tiling", lambda r: r.tiling != "off"),
    "variation": Feature("variation seeds", lambda r: r.variation_strength > 0),
    "clip_skip": Feature("clip skip", lambda r: r.clip_skip > 1),
    "latents": Feature("latent input (a latent upscale)", lambda r: r.keep_latents or r.latents is not None),
    "loras": Feature("LoRAs", lambda r: bool(r.loras) or "<lora:" in r.prompt),
    "vae": Feature("VAE files", lambda r: bool(r.vae)),
    "blend": Feature("prompt travel (a blend toward another prompt)", lambda r: r.blend > 0),
    "editing": Feature("prompt editing ([from:to:when], [a|b])", _editing),
}
EVERYTHING = frozenset(FEATURES)


@dataclass(frozen=True)
class Family:
    key: str                   # "sd" | "flux" | "sd3"
    name: str                  # what the model list and the record say
    denoiser: str              # the pipeline's attribute that denoises: "unet" | "transformer"
    flow: bool                 # flow matching: the flow samplers (studio/samplers.py) and shift
    size_step: int             # picture sides are multiples of this (the VAE's 8, times 2x2 patches)
    supports: frozenset[str]   # FEATURES it has
    distilled_guidance: bool = False   # guidance_scale is the distilled embedding, CFG true_cfg_scale
    text: str = "clip"         # prompt encoding: "clip" (studio/prompts), "t5" or "qwen" (studio/families/text.py)
    t5_tokens: int = 0         # the prompt length its text encoder reads (T5, Qwen3)
    sized_input: bool = False  # its image-to-image pipeline takes the size (else it keeps the input's)
    passes_mu: bool = False    # its pipelines always hand the scheduler a shift by size (`mu`)
    skip_layers: bool = False  # its text-to-image pipeline has skip-layer guidance (SD 3.5)
    sizes: tuple[tuple[int, str], ...] = ()   # (transformer depth, size name): SD 3.5 Medium, Large
    gpu_dtype: str = "fp16"    # its half precision on a GPU (Flux and SD 3.5 overflow fp16: bf16)
    lean_modes: bool = False   # `auto` may store its denoiser in fp8, its text encoders on the CPU (models/memory.py)
    cfg_offset: float = 0.0    # its pipeline's guidance scale is CFG minus this (Z-Image: pos + g (pos - neg))
    emphasis_note: str = ""    # what a prompt with (word:1.3) weights is told (SD and Flux weight every token read)

    def check(self, request) -> None:
        """Refuse what this family does not do, naming it."""
        for key, feature in FEATURES.items():
            if key not in self.supports and feature.asked(request):
                raise InvalidRequest(f"{self.name} models do not take {feature.label} here yet; SD 1.x, "
                                     f"SD 2.x and SDXL do.")


SD = Family("sd", "Stable Diffusion", "unet", False, 8, EVERYTHING)
FLUX = Family("flux", "Flux.1", "transformer", True, 16, frozenset({"loras", "variation", "blend"}),
              distilled_guidance=True, text="t5", t5_tokens=512, sized_input=True, passes_mu=True, gpu_dtype="bf16",
              lean_modes=True)
SD3 = Family("sd3", "SD 3.5", "transformer", True, 16, frozenset({"loras", "variation", "blend"}), text="t5",
             t5_tokens=256, sized_input=True, skip_layers=True, sizes=((24, "Medium"), (38, "Large")),
             gpu_dtype="bf16", lean_modes=True,
             emphasis_note="Emphasis weights act through T5 on SD 3.5; CLIP-L and CLIP-G read the plain words.")
# Z-Image (Tongyi-MAI, Apache-2.0): a 6B single-stream DiT read by Qwen3-4B; its embeddings are one
# sequence a prompt, of its own length, so prompt travel cannot mix two of them
ZIMAGE = Family("zimage", "Z-Image", "transformer", True, 16, frozenset({"variation", "loras"}), text="qwen",
                t5_tokens=512, sized_input=True, gpu_dtype="bf16", lean_modes=True, cfg_offset=1.0,
                emphasis_note="Emphasis weights such as (word:1.3) are read as plain words on Z-Image.")
FAMILIES = {f.key: f for f in (SD, FLUX, SD3, ZIMAGE)}


@dataclass(frozen=True)
class Variant:
    """A pipeline class of a family: its name beside the family's, the modes it serves by
    itself (a Fill model only inpaints) or through a class of its own, whether it runs true CFG
    with a negative prompt, whether its image-to-image is an instruction edit (Kontext), and the
    settings it was made for (the tabs take them when it loads)."""
    family: str
    label: str
    own_modes: tuple[str, ...] = ()     # modes the loaded pipeline serves itself (no from_pipe)
    true_cfg: bool = True
    defaults: FewStep | None = None
    mode_classes: tuple[tuple[str, str], ...] = ()   # (mode, diffusers class) where AutoPipeline has none
    edits: bool = False                 # image-to-image is an instruction edit: the picture in whole, no strength
    solvers: bool = True                # its pipeline lets the multistep solvers set their own sigmas
    t5_tokens: int = 0                  # the T5 length it was made with, where not its family's


def _defaults(title: str, steps: int, cfg: float, distilled: float, note: str) -> FewStep:
    return FewStep(title, "Euler", steps, cfg, False, note, distilled=distilled, heading=title)


FLUX_NOTE = ("CFG scale is true guidance (1 = off: one pass a step; above 1 the negative prompt works, at twice "
             "the time); Distilled CFG scale is the guidance the model learned.")
VARIANTS: dict[str, Variant] = {
    "FluxPipeline": Variant("flux", "dev", defaults=_defaults("Flux.1 dev", 20, 1.0, 3.5, FLUX_NOTE)),
    "FluxPipeline/schnell": Variant("flux", "schnell", t5_tokens=256, defaults=_defaults(
        "Flux.1 schnell", 4, 1.0, 0.0, "Timestep-distilled: 1-4 steps, no guidance input. " + OFF)),
    "FluxFillPipeline": Variant("flux", "Fill", own_modes=("inpaint",), true_cfg=False, solvers=False, defaults=_defaults(
        "Flux.1 Fill", 28, 1.0, 30.0, "Inpainting and outpainting; the whole mask is redrawn (strength 1).")),
    "FluxKontextPipeline": Variant("flux", "Kontext", defaults=_defaults(
        "Flux.1 Kontext", 28, 1.0, 2.5, "Instruction editing: in Image-to-image give it a picture and say what "
        "to change (\"make the circle blue\"); Send to img2img edits the result again. " + FLUX_NOTE),
        mode_classes=(("inpaint", "FluxKontextInpaintPipeline"),), edits=True, solvers=False),
    "StableDiffusion3Pipeline": Variant("sd3", "", defaults=_defaults(
        "SD 3.5", 28, 4.5, 0.0, "Large: 28 steps, CFG 3.5-4.5; Medium: 40 steps, CFG 4.5.")),
    "StableDiffusion3Pipeline/turbo": Variant("sd3", "Turbo", defaults=_defaults(
        "SD 3.5 Large Turbo", 4, 1.0, 0.0, "Distilled: 4 steps. " + OFF)),
    "ZImagePipeline": Variant("zimage", "", solvers=False, defaults=_defaults(
        "Z-Image", 28, 5.0, 0.0, "28-50 steps, CFG 4-6 (Z-Image's own guidance 3-5: it counts CFG from 0, "
        "the studio from 1 as A1111 does); the prompt is read by Qwen3, so long sentences work.")),
    "ZImagePipeline/turbo": Variant("zimage", "Turbo", solvers=False, defaults=_defaults(
        "Z-Image Turbo", 9, 1.0, 0.0, "Distilled: 8-9 steps. " + OFF)),
}
# the pipeline classes that mark a transformer family's diffusers folder (model_index.json)
PIPELINE_CLASSES = frozenset(key.split("/")[0] for key in VARIANTS)


def family(key: str) -> Family:
    return FAMILIES[key]


def variant_key(pipeline_class: str, transformer: dict, name: str) -> str:
    """The VARIANTS key of a diffusers folder, from its pipeline class, transformer config and
    name (Flux schnell has no guidance embedding; SD 3.5 Large Turbo says so in its name)."""
    if pipeline_class == "FluxPipeline" and not transformer.get("guidance_embeds", True):
        return "FluxPipeline/schnell"
    if pipeline_class in ("StableDiffusion3Pipeline", "ZImagePipeline") and "turbo" in name.lower():
        return f"{pipeline_class}/turbo"
    return pipeline_class


def slg_layers(depth: int) -> list[int]:
    """The blocks skip-layer guidance skips: SD 3.5 Medium's 7, 8 and 9 of 24 (Stability's
    reference sd3_infer.py), at the same depth for other sizes."""
    return sorted({min(depth - 1, round(depth * k / 24)) for k in (7, 8, 9)})


def model_label(key: str, transformer: dict) -> str:
    """What the model list and the record call a model ("Flux.1 dev", "SD 3.5 Large Turbo"): its
    family, its size by the transformer's depth where the family has sizes, its variant."""
    variant = VARIANTS[key]
    fam = family(variant.family)
    size = dict(fam.sizes).get(transformer.get("num_layers", 0), "")
    return " ".join(x for x in (fam.name, size, variant.label) if x)
