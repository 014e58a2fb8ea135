"""GenerationRequest: the one object that crosses from UI/API to the engine, and the table of its
fields. Each field is declared once, here (studio/fields.py says what a declaration holds): the
boundary's checks (boundary.py), the tabs' controls and events (studio/ui/form.py), the API
parameters, the plot axes (studio/plots/axes.py), the infotext (studio/generation/record.py) and
PNG Info's restore (studio/outputs/pnginfo.py) are built from it. The order is the API's order.

A request is plain data: numbers, text, names of models and add-ons, and images as uint8 arrays
(RGB HxWx3, masks HxW), so that a backend in another process or on another machine can run it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from studio.errors import InvalidRequest
from studio.fields import (Choice, Custom, Field, Flag, Infotext, Names, Number, Text, declare, in_range,
                           number, or_zero, table)
from studio.inputs import encode_base64
from studio.requests import control, parsers
from studio.samplers import DEFAULT_SCHEDULER

Mode = Literal["txt2img", "img2img", "inpaint"]
MODES: tuple[str, ...] = ("txt2img", "img2img", "inpaint")
INPUT_MODES = ("img2img", "inpaint")

MAX_SEED = 2**32 - 1
STEPS_RANGE = (1, 150)
CFG_RANGE = (0.0, 30.0)
MIN_SIDE = 64
LORA_WEIGHT_RANGE = parsers.LORA_WEIGHT_RANGE
CLIP_SKIP_RANGE = (1, 12)
FEATURE_CACHE_RANGE = (0, 10)


@dataclass(frozen=True)
class Limits:
    """What this server accepts; a shared studio may lower these."""
    max_side: int = 2048
    max_pixels: int = 2048 * 2048
    max_batch_size: int = 8
    max_batch_count: int = 16
    max_steps: int = 150
    jobs_per_minute: int = 0        # per user (login name, else browser session); 0 = no limit
    max_body_bytes: int = 32 * 2**20    # a REST body or an upload, refused before it is read further


@dataclass(frozen=True)
class Side(Number):
    """A width or height: 0 (the model's native size, or the input's), else a multiple of 8."""

    def parse(self, f, value, ctx):
        side = number(f.label, or_zero(value), integer=True)
        if side == 0:
            return 0
        if side % 8:
            raise InvalidRequest(f"{f.label} must be a multiple of 8, got {side} "
                                 f"(try {side // 8 * 8} or {side // 8 * 8 + 8}).")
        in_range(f.label, side, MIN_SIDE, self.high_for(ctx.limits))
        return side


@dataclass(frozen=True)
class Edges(Choice):
    """Which edges a picture continues across; a bool (A1111's `tiling`) is both or none."""

    def parse(self, f, value, ctx):
        if isinstance(value, bool):
            return "both" if value else "off"
        return super().parse(f, value, ctx)


def _tiling(text: str) -> str | None:
    """A1111 writes `Tiling: True`; the studio also x or y for one axis."""
    value = {"true": "both", "false": "off"}.get(text.strip().lower(), text.strip().lower())
    return value if value in ("off", "x", "y", "both") else None


# Regional Prompter's keywords: a prompt with one of them is split into regions (studio/control/regions.py)
REGION_KEYWORDS = re.compile(r"\b(ADDCOMM|ADDBASE|ADDCOL|ADDROW)\b")


def _regional(r: "GenerationRequest") -> bool:
    return bool(REGION_KEYWORDS.search(r.prompt))


SEED = Number(0, MAX_SEED, integer=True, unset=-1, box=True)
FRACTION = Number(0.0, 1.0, step=0.01)


def _styles_array(text: str) -> str | None:
    """A1111's `Styles array: ["name"]`: the first style (the studio applies one)."""
    names = json.loads(text)
    return str(names[0]) if isinstance(names, list) and names else None


@dataclass(frozen=True, kw_only=True)
class GenerationRequest:
    mode: Mode = "txt2img"
    # the input picture and mask (img2img, inpainting): shown by each tab its own way
    image: np.ndarray | None = declare(None, Custom(parsers.input_image), "Input image", modes=INPUT_MODES,
                                       compare=False, repr=False)         # RGB, HxWx3 uint8
    mask: np.ndarray | None = declare(None, Custom(parsers.mask), "Mask", modes=("inpaint",),
                                      compare=False, repr=False)          # HxW uint8: 255 = repaint
    prompt: str = declare("", Text(lines=3, placeholder="a red circle on a blue background"), "Prompt",
                          group="prompt", rest="prompt")
    negative_prompt: str = declare("", Text(lines=2), "Negative prompt", group="prompt", rest="negative_prompt")
    negative_presets: tuple[str, ...] = declare((), Names("presets", noun="negative preset"), "Negative presets",
                                                group="presets", rest="negative_presets")
    style: str | None = declare(None, Choice(catalog="styles", blank=("", "None")), "Style", group="presets",
                                axis=True, infotext=Infotext("Styles array", show=lambda s: f'["{s}"]',
                                                             read=_styles_array))
    # infotext: the record writes Sampler and Schedule type (studio/samplers.py's names)
    scheduler: str = declare(DEFAULT_SCHEDULER, Choice(catalog="samplers", noun="scheduler"), "Sampler",
                             group="sampling", elem="scheduler", axis=True)
    steps: int = declare(20, Number(*STEPS_RANGE, integer=True, step=1, cap="max_steps"), "Steps", group="sampling",
                         axis=True, rest="steps", infotext=Infotext("Steps", always=True))
    cfg_scale: float = declare(7.0, Number(*CFG_RANGE, step=0.5), "CFG scale", group="sampling", axis=True,
                               rest="cfg_scale", infotext=Infotext("CFG scale", always=True))
    # studio/families: written for the families that read them, as Forge writes them
    distilled_cfg: float = declare(3.5, Number(0.0, 100.0, step=0.5, ui_high=30.0), "Distilled CFG scale",
                                   group="sampling", axis=True, rest="distilled_cfg_scale", families=("flux",),
                                   help="Flux.1: the guidance the model learned (its CFG scale is true guidance, "
                                        "1 = off)", infotext=Infotext("Distilled CFG Scale", always=True))
    shift: float = declare(0.0, Number(0.0, 20.0, step=0.5), "Shift", group="sampling", axis=True, rest="shift",
                           families=("flux", "sd3", "zimage"), infotext=Infotext("Shift"),
                           help="flow-matching models: more steps at high noise; 0 = the model's own")
    t5_tokens: int = declare(0, Number(0, 512, integer=True, step=64), "T5 tokens", group="sampling", rest="t5_tokens",
                             families=("flux", "sd3"), infotext=Infotext("T5 tokens"),
                             help="how much of the prompt T5 reads; 0 = the model's own (Flux dev 512, schnell and "
                                  "SD 3.5 256)")
    slg_scale: float = declare(0.0, Number(0.0, 10.0, step=0.1), "Skip-layer guidance", group="sampling", axis=True,
                               rest="slg_scale", families=("sd3",), modes=("txt2img",), infotext=Infotext("SLG scale"),
                               help="SD 3.5: guidance away from the picture with its middle layers skipped (2.8 for "
                                    "Medium; 0 = off; text-to-image)")
    width: int = declare(0, Side(MIN_SIDE, 2048, integer=True, step=8, cap="max_side"), "Width", group="size",
                         rest="width")          # 0: the model's native size (txt2img) or the input image's
    height: int = declare(0, Side(MIN_SIDE, 2048, integer=True, step=8, cap="max_side"), "Height", group="size",
                          rest="height")        # (both written as the record's Size)
    seed: int = declare(-1, SEED, "Seed", caption="Seed (-1 = random)", group="seed", axis=True, rest="seed",
                        infotext=Infotext("Seed", write=False))      # -1: random, chosen by the engine and recorded
    batch_count: int = declare(1, Number(1, 16, integer=True, step=1, cap="max_batch_count"), "Batch count",
                               group="seed", rest="n_iter")
    batch_size: int = declare(1, Number(1, 8, integer=True, step=1, cap="max_batch_size"), "Batch size",
                              group="seed", rest="batch_size", infotext=Infotext("Batch size"))
    strength: float = declare(0.75, FRACTION, "Strength", caption="Strength (denoising)", modes=INPUT_MODES,
                              group="input", axis=True, rest="denoising_strength",
                              infotext=Infotext("Denoising strength", always=True))
    mask_blur: int = declare(4, Number(0, 64, integer=True, step=1), "Mask blur", modes=("inpaint",), group="input",
                             infotext=Infotext("Mask blur", always=True))
    only_masked: bool = declare(False, Flag(), "Only masked", caption="Only masked (crop around the mask, paste back)",
                                modes=("inpaint",), group="input:area", rest="inpaint_full_res",
                                infotext=Infotext("Inpaint area", show=lambda on: "Only masked",
                                                  read=lambda text: text.strip() == "Only masked"))
    only_masked_padding: int = declare(32, Number(0, 256, integer=True, step=4), "Only-masked padding",
                                       caption="Only-masked padding (px)", modes=("inpaint",), group="input:area",
                                       elem="padding", rest="inpaint_full_res_padding",
                                       infotext=Infotext("Masked area padding", always=True,
                                                         when=lambda r: r.only_masked))
    loras: tuple[tuple[str, float], ...] = declare((), Custom(parsers.loras), "LoRAs",
                                                   group="addons")     # (name in models/loras, weight)
    vae: str | None = declare(None, Choice(catalog="vaes", blank=("", "None", "Automatic"), noun="VAE",
                                           where="models/vae"), "VAE", help="Automatic: the model's own",
                              group="addons:files", axis=True)     # name in models/vae; None: the model's own
    clip_skip: int = declare(1, Number(*CLIP_SKIP_RANGE, integer=True, step=1), "Clip skip",
                             help="2 = the penultimate text-encoder layer", group="addons:files", axis=True,
                             infotext=Infotext("Clip skip"))     # A1111's meaning: 1 = last layer, 2 = penultimate
    variants: str = declare("random", Choice(options=(("random", "random per image"), ("all", "every combination")),
                                             radio=True), "Variants",
                            caption="Prompt variants: {red|blue} and __colors__ (presets/wildcards/colors.txt)",
                            group="variants", rest="variants")   # {a|b} and __wildcards__: random per image, or "all"
    references: tuple = declare((), Custom(parsers.references), "Reference images",
                                caption="Reference images ({image} = the first; {image:name} by file name)",
                                group="references", compare=False, repr=False)   # (name, RGB array) for {image} tags
    reference_strength: float = declare(0.5, Number(0.0, 1.0, step=0.05), "Reference strength", help="0 = not used",
                                        group="references")
    reference_method: str = declare("reference-only", Choice(options=("reference-only", "ip-adapter"), radio=True),
                                    "Reference method", caption="Method", group="references",
                                    help="reference-only needs no weights; IP-Adapter needs models/ip-adapter")
    regions_ratio: str = declare("", Text(placeholder="1,1  or  1,2,1;2,3,2"), "Divide ratio", group="regions",
                                 rest="regions_ratio",
                                 help="the regions' sizes: widths of one row (or heights of one column); several rows: "
                                      "height,widths...;height,widths... (empty: all alike)",
                                 infotext=Infotext("RP Ratios", when=_regional, read=str.strip))
    base_ratio: float = declare(0.2, FRACTION, "Base ratio", group="regions", axis=True, rest="base_ratio",
                                help="how much of the ADDBASE prompt is mixed in everywhere",
                                infotext=Infotext("RP Base Ratios", always=True, when=lambda r: "ADDBASE" in r.prompt))
    regions_mask: np.ndarray | None = declare(None, Custom(parsers.regions_mask), "Painted regions", group="regions",
                                              rest="regions_mask", compare=False, repr=False)   # HxW labels: 0 unpainted, k colour k
    control: tuple[control.ControlUnit, ...] = declare((), Custom(control.units), "ControlNet", group="control",
                                                       compare=False, repr=False)   # studio/control/
    feature_cache: int = declare(0, Number(*FEATURE_CACHE_RANGE, integer=True, step=1, ui_high=5, refused=(
        (1, "Feature cache 1 would run the full UNet every step: use 0 (off) or 2 and up."),)),
        "Feature cache", caption="Feature cache (DeepCache)", group="addons", axis=True, rest="feature_cache",
        help="0 = off; N = the full UNet every N-th step, the deep features reused in between: faster, a little "
             "less faithful", infotext=Infotext("Feature cache"))   # studio/generation/deepcache.py
    tiling: str = declare("off", Edges(options=(("off", "off"), ("x", "left-right"), ("y", "top-bottom"),
                                                ("both", "both")), radio=True), "Tiling",
                          help="a seamless texture: the picture continues across these edges", group="addons",
                          axis=True, rest="tiling",    # studio/generation/tiling.py
                          infotext=Infotext("Tiling", show=lambda v: "True" if v == "both" else v, read=_tiling))
    variation_seed: int = declare(-1, SEED, "Variation seed", caption="Variation seed (-1 = random)", tabs=("txt2img",),
                                  group="variation", axis=True, rest="subseed",
                                  infotext=Infotext("Variation seed", write=False))   # A1111's subseed
    variation_strength: float = declare(0.0, FRACTION, "Variation strength", tabs=("txt2img",), group="variation",
                                        axis=True, rest="subseed_strength",
                                        help="0 = the seed's picture, 1 = the variation seed's; a batch keeps the "
                                             "seed and counts the variation seed up",
                                        infotext=Infotext("Variation seed strength"))
    # for callers that compose requests, not shown in a tab
    model: str = declare("", Choice(catalog="checkpoints"), "Model",
                         axis="Checkpoint")          # "": the one loaded when the job runs
    blend_prompt: str = declare("", Text(), "Blend prompt")           # prompt travel: the prompts' embeddings
    blend_negative_prompt: str = declare("", Text(), "Blend negative prompt")   # mixed toward these two's ...
    blend: float = declare(0.0, Number(0.0, 1.0), "Blend")           # ... by this much: 0 = off, 1 = the blend prompts
    # what a tool composing several requests records on this one's pictures (hires fix: the first
    # pass's steps and the Hires keys): A1111 infotext keys and values, over the engine's own
    recipe: tuple[tuple[str, Any], ...] = declare((), Custom(parsers.recipe), "Recipe")
    keep_latents: bool = declare(False, Flag(), "keep_latents")   # txt2img: also hand back each picture's last latents
    latents: np.ndarray | None = declare(None, Custom(parsers.latents), "Latents", compare=False,
                                         repr=False)              # img2img: start from these (a latent hires fix)

    def input_image(self) -> Image.Image | None:
        return None if self.image is None else Image.fromarray(self.image)

    def input_mask(self) -> Image.Image | None:
        return None if self.mask is None else Image.fromarray(self.mask)

    def reference_images(self) -> list[tuple[str, Image.Image]]:
        return [(name, Image.fromarray(array)) for name, array in self.references]

    def with_size(self, width: int, height: int) -> "GenerationRequest":
        return replace(self, width=width, height=height)

    def fields(self) -> dict[str, Any]:
        """The request as plain data (images left out), for the metadata."""
        out = {k: getattr(self, k) for k in self.__dataclass_fields__ if k not in ("image", "mask", "latents")}
        out["negative_presets"] = list(self.negative_presets)
        out["loras"] = [list(pair) for pair in self.loras]
        out["references"] = [name for name, _ in self.references]
        out["recipe"] = [list(pair) for pair in self.recipe]
        out["control"] = [unit.settings() for unit in self.control]
        if self.regions_mask is not None:      # a small PNG of the painting, as the API takes it
            out["regions_mask"] = encode_base64(parsers.painting(self.regions_mask))
        return out


@cache
def request_fields() -> tuple[Field, ...]:
    """The generation request's table, in the API's order."""
    return table(GenerationRequest)


def request_field(name: str) -> Field:
    return next(f for f in request_fields() if f.name == name)


@dataclass
class GeneratedImage:
    path: Path | None        # None: a live picture, held and not saved
    image: Image.Image
    seed: int
    parameters: str          # A1111 infotext
    data: dict[str, Any]     # the full JSON metadata
    latents: np.ndarray | None = None    # (1, C, h, w) float32, when the request kept them


@dataclass
class GenerationResult:
    request: GenerationRequest
    images: list[GeneratedImage]
    seed: int                 # the first image's seed (the one the UI offers to reuse)
    stopped: bool = False
    notes: list[str] = field(default_factory=list)
