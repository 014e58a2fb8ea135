"""GenerationRequest and GenerationResult: the one object that crosses from UI/API to the engine.

A request is plain data: numbers, text, names of models and add-ons, and images as uint8 arrays
(RGB HxWx3, masks HxW), so that a backend in another process or on another machine can run it.

`make_request(...)` is the boundary: it takes raw values (from widgets or gradio_client, so
strings, floats and None are all possible), checks every field once and returns a frozen request
the engine can trust. Checks that need the loaded model (its size limits, a 9-channel UNet) are
the engine's first step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
from PIL import Image

from studio.errors import InvalidRequest
from studio.fields import bounded, empty, in_range, names, number, or_zero, text, word
from studio.inputs import load_image, mask_from_image
from studio.samplers import DEFAULT_SCHEDULER, SCHEDULERS

Mode = Literal["txt2img", "img2img", "inpaint"]
MODES: tuple[str, ...] = ("txt2img", "img2img", "inpaint")

MAX_SEED = 2**32 - 1
STEPS_RANGE = (1, 150)
CFG_RANGE = (0.0, 30.0)
MIN_SIDE = 64
LORA_WEIGHT_RANGE = (-4.0, 4.0)
MAX_LORAS = 8
MAX_REFERENCES = 4
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


@dataclass(frozen=True, kw_only=True)
class GenerationRequest:
    mode: Mode = "txt2img"
    model: str = ""           # by its name in the model list; "": the one loaded when the job runs
    prompt: str = ""
    negative_prompt: str = ""
    negative_presets: tuple[str, ...] = ()
    style: str | None = None
    scheduler: str = DEFAULT_SCHEDULER
    steps: int = 20
    cfg_scale: float = 7.0
    width: int = 0            # 0: the model's native size (txt2img) or the input image's size
    height: int = 0
    seed: int = -1            # -1: a random seed, chosen by the engine and recorded
    variation_seed: int = -1          # A1111's subseed: -1 = random (used only with a strength)
    variation_strength: float = 0.0   # 0 = the seed's noise; 1 = the variation seed's (txt2img)
    blend_prompt: str = ""            # prompt travel: the prompts' embeddings mixed toward these
    blend_negative_prompt: str = ""   # two's (presets and style apply to them too) ...
    blend: float = 0.0                # ... by this much: 0 = off, 1 = the blend prompts alone
    batch_count: int = 1
    batch_size: int = 1
    image: np.ndarray | None = field(default=None, repr=False, compare=False)   # RGB, HxWx3 uint8
    mask: np.ndarray | None = field(default=None, repr=False, compare=False)    # HxW uint8: 255 = repaint
    strength: float = 0.75
    mask_blur: int = 4
    only_masked: bool = False
    only_masked_padding: int = 32
    loras: tuple[tuple[str, float], ...] = ()   # (name in models/loras, weight)
    vae: str | None = None                       # name in models/vae; None: the model's own
    clip_skip: int = 1                           # A1111's meaning: 1 = last layer, 2 = penultimate
    feature_cache: int = 0                       # DeepCache interval (studio/generation/deepcache.py); 0 = off
    variants: str = "random"                     # {a|b} and __wildcards__: random per image, or "all"
    references: tuple = field(default=(), repr=False, compare=False)   # (name, RGB array) for {image} tags
    reference_strength: float = 0.5              # 0 = off
    reference_method: str = "reference-only"     # or "ip-adapter" (weights in models/ip-adapter)
    # what a tool composing several requests records on this one's pictures (hires fix: the first
    # pass's steps and the Hires keys): A1111 infotext keys and values, over the engine's own
    recipe: tuple[tuple[str, Any], ...] = ()
    keep_latents: bool = False       # txt2img: also hand back each picture's last latents (latent hires fix)
    latents: np.ndarray | None = field(default=None, repr=False, compare=False)  # img2img: start from these

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
        return out


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


# ---------------------------------------------------------------------------------------------
# The boundary

def _loras(value: Any, known: Sequence[str] | None) -> tuple[tuple[str, float], ...]:
    """LoRAs as [[name, weight], ...] (a table), {"data": rows} (Gradio's Dataframe), or
    "name:weight" strings; weight 1 when left out. Empty rows are skipped."""
    if empty(value):
        return ()
    if isinstance(value, dict):
        value = value.get("data", [])
    if isinstance(value, str):
        value = [v for v in value.split(",")]
    if not isinstance(value, (list, tuple)):
        raise InvalidRequest("LoRAs must be a list of [name, weight] rows.")
    out: list[tuple[str, float]] = []
    for row in value:
        if isinstance(row, str):
            name, _, weight = row.strip().rpartition(":") if ":" in row else (row.strip(), "", 1.0)
            row = [name, weight]
        if not isinstance(row, (list, tuple)) or not 1 <= len(row) <= 2:
            raise InvalidRequest(f"LoRA row {row!r}: expected [name, weight].")
        name = row[0]
        if name is None or (isinstance(name, str) and not name.strip()):
            continue
        if not isinstance(name, str):
            raise InvalidRequest(f"LoRA name must be text, got {name!r}.")
        name = name.strip()
        weight = number(f"Weight of LoRA {name!r}", row[1] if len(row) > 1 and row[1] not in ("", None)
                        else 1.0, integer=False)
        in_range(f"Weight of LoRA {name!r}", weight, *LORA_WEIGHT_RANGE)
        if known is not None and name not in known:
            raise InvalidRequest(f"Unknown LoRA {name!r}: put it in models/loras and press refresh "
                                 f"(available: {', '.join(known) or 'none'}).")
        if any(name == n for n, _ in out):
            raise InvalidRequest(f"LoRA {name!r} is listed twice.")
        out.append((name, float(weight)))
    if len(out) > MAX_LORAS:
        raise InvalidRequest(f"{len(out)} LoRAs; at most {MAX_LORAS} at once.")
    return tuple(out)


def _references(value: Any, limits: "Limits") -> tuple:
    """Reference images as (name, image): from file paths (the name is the file name without
    extension), {"name", "image"} dicts, (name, image) pairs or bare images (image1, image2...)."""
    if empty(value):
        return ()
    if not isinstance(value, (list, tuple)):
        value = [value]
    out: list[tuple[str, Image.Image]] = []
    for i, item in enumerate(value, 1):
        if isinstance(item, dict):
            name = item.get("name") if item.get("name") is not None else item.get("orig_name")
            img = item.get("image") if item.get("image") is not None else item.get("path")
        elif isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[0], str):
            name, img = item
        else:
            name, img = None, item
        if not isinstance(name, str):
            name = None
        if name is None and isinstance(img, (str, Path)):
            name = Path(str(img)).stem
        name = (str(name).strip() if name else f"image{i}")
        name = Path(name).stem if "." in name else name
        image = load_image(f"Reference image {name!r}", img)
        if image.width * image.height > limits.max_pixels * 4:
            raise InvalidRequest(f"Reference image {name!r} is {image.width}x{image.height}; too large.")
        if any(n == name for n, _ in out):
            name = f"{name}{i}"
        out.append((name, image))
    if len(out) > MAX_REFERENCES:
        raise InvalidRequest(f"{len(out)} reference images; at most {MAX_REFERENCES}.")
    return tuple(out)


def _array(image: Image.Image | None) -> np.ndarray | None:
    """A decoded image as a read-only uint8 array (RGB, or L for a mask)."""
    if image is None:
        return None
    array = np.array(image, dtype=np.uint8)
    array.flags.writeable = False
    return array


Get = Any      # get(field) -> the raw value sent, else the field's default


def make_request(*, mode: str = "txt2img", limits: Limits = Limits(),
                 known_presets: Sequence[str] | None = None, known_styles: Sequence[str] | None = None,
                 known_loras: Sequence[str] | None = None, known_vaes: Sequence[str] | None = None,
                 **raw: Any) -> GenerationRequest:
    """Check raw inputs once and return a trusted request, or raise InvalidRequest. The stages
    run in this order, so that of several mistakes the first one named here is reported."""
    if mode not in MODES:
        raise InvalidRequest(f"Unknown mode {mode!r}; expected one of {', '.join(MODES)}.")
    unknown = set(raw) - set(GenerationRequest.__dataclass_fields__)
    if unknown:
        raise InvalidRequest(f"Unknown parameter(s): {', '.join(sorted(unknown))}.")
    d = GenerationRequest()
    get = lambda k: raw.get(k, getattr(d, k))  # noqa: E731
    request = GenerationRequest(
        mode=mode, **_prompts(get, known_presets, known_styles), **_sampling(get, limits), **_size(get, limits),
        **_variation(mode, get), **_blend(get), **_inputs(mode, get, limits), **_addons(get, limits, known_loras, known_vaes),
        recipe=_recipe(get("recipe")), **_latents(mode, get, limits))
    if mode != "txt2img" and 0 < request.strength and int(request.steps * request.strength) < 1:
        raise InvalidRequest(f"Strength {request.strength:g} x {request.steps} steps leaves no "
                             "denoising step; raise the strength or the steps.")
    return request


def _prompts(get: Get, known_presets: Sequence[str] | None, known_styles: Sequence[str] | None) -> dict:
    """Prompt and negative prompt, the sampler, negative presets and style."""
    prompt = text("Prompt", get("prompt"))
    negative = text("Negative prompt", get("negative_prompt"))
    scheduler = word("Scheduler", get("scheduler"), DEFAULT_SCHEDULER)
    if scheduler not in SCHEDULERS:
        raise InvalidRequest(f"Unknown scheduler {scheduler!r}. Known: {', '.join(SCHEDULERS)}.")
    presets = names("Negative presets", get("negative_presets"))
    if known_presets is not None:
        for p in presets:
            if p not in known_presets:
                raise InvalidRequest(f"Unknown negative preset {p!r}. Known: {', '.join(known_presets)}.")
    style = word("Style", get("style"), None, ("", "None"))
    if style is not None and known_styles is not None and style not in known_styles:
        raise InvalidRequest(f"Unknown style {style!r}. Known: {', '.join(known_styles or [])}.")
    return dict(prompt=prompt, negative_prompt=negative, scheduler=scheduler, negative_presets=presets, style=style)


def _sampling(get: Get, limits: Limits) -> dict:
    """Steps, CFG scale, seed, batch count and batch size."""
    steps = bounded("Steps", get("steps"), STEPS_RANGE[0], min(STEPS_RANGE[1], limits.max_steps), integer=True)
    cfg = bounded("CFG scale", get("cfg_scale"), *CFG_RANGE, integer=False)
    seed = number("Seed", get("seed"), integer=True)
    if seed != -1:
        in_range("Seed", seed, 0, MAX_SEED)
    batch_count = bounded("Batch count", get("batch_count"), 1, limits.max_batch_count, integer=True)
    batch_size = bounded("Batch size", get("batch_size"), 1, limits.max_batch_size, integer=True)
    return dict(steps=steps, cfg_scale=cfg, seed=seed, batch_count=batch_count, batch_size=batch_size)


def _blend(get: Get) -> dict:
    """Prompt travel: a second prompt pair and how far toward it the embeddings are mixed."""
    blend = bounded("Blend", get("blend"), 0.0, 1.0, integer=False)
    return dict(blend_prompt=text("Blend prompt", get("blend_prompt")),
                blend_negative_prompt=text("Blend negative prompt", get("blend_negative_prompt")), blend=blend)


def _variation(mode: str, get: Get) -> dict:
    """Variation seed and strength (the starting noise slerped toward the variation seed's)."""
    strength = bounded("Variation strength", get("variation_strength"), 0.0, 1.0, integer=False)
    seed = number("Variation seed", get("variation_seed"), integer=True)
    if seed != -1:
        in_range("Variation seed", seed, 0, MAX_SEED)
    if strength and mode != "txt2img":
        raise InvalidRequest("Variation seeds work in text to image only (here the starting noise is mixed "
                             "with the input picture); set the variation strength to 0.")
    return dict(variation_seed=seed, variation_strength=strength)


def _latents(mode: str, get: Get, limits: Limits) -> dict:
    """keep_latents (txt2img) and latents to start from (img2img: 1 x C x h x w, finite floats,
    within the studio's size at 8 pixels a latent)."""
    keep = get("keep_latents")
    if keep not in (True, False, None, 0, 1):
        raise InvalidRequest(f"keep_latents must be true or false, got {keep!r}.")
    latents = get("latents")
    if latents is None:
        return dict(keep_latents=bool(keep))
    if mode != "img2img":
        raise InvalidRequest("Latents to start from are for image to image.")
    if (not isinstance(latents, np.ndarray) or latents.dtype.kind != "f" or latents.ndim != 4
            or latents.shape[0] != 1 or not 1 <= latents.shape[1] <= 16
            or latents.shape[2] * latents.shape[3] * 64 > limits.max_pixels or not np.isfinite(latents).all()):
        raise InvalidRequest("Latents must be a finite float array of shape (1, channels, height/8, width/8) "
                             "within this studio's size.")
    latents = np.array(latents, dtype=np.float32)
    latents.flags.writeable = False
    return dict(keep_latents=bool(keep), latents=latents)


def _recipe(value: Any) -> tuple[tuple[str, Any], ...]:
    """(key, value) pairs for the infotext: keys are plain words, values text or numbers."""
    if empty(value):
        return ()
    pairs = list(value.items()) if isinstance(value, dict) else value
    if not isinstance(pairs, (list, tuple)) or len(pairs) > 16:
        raise InvalidRequest("Recipe must be at most 16 (key, value) pairs.")
    out = []
    for pair in pairs:
        if (not isinstance(pair, (list, tuple)) or len(pair) != 2 or not isinstance(pair[0], str)
                or not pair[0].replace(" ", "").isalnum() or len(pair[0]) > 40
                or isinstance(pair[1], bool) or not isinstance(pair[1], (str, int, float))
                or isinstance(pair[1], float) and not math.isfinite(pair[1])):
            raise InvalidRequest(f"Recipe entry {pair!r}: expected (words, text or number).")
        out.append((pair[0], text("Recipe value", pair[1]) if isinstance(pair[1], str) else pair[1]))
    return tuple(out)


def _size(get: Get, limits: Limits) -> dict:
    """Width and height: 0 (the model's or the input's own), else multiples of 8 within the limits."""
    width = number("Width", or_zero(get("width")), integer=True)
    height = number("Height", or_zero(get("height")), integer=True)
    for name, side in (("Width", width), ("Height", height)):
        if side == 0:
            continue
        if side % 8:
            raise InvalidRequest(f"{name} must be a multiple of 8, got {side} "
                                 f"(try {side // 8 * 8} or {side // 8 * 8 + 8}).")
        in_range(name, side, MIN_SIDE, limits.max_side)
    if width and height and width * height > limits.max_pixels:
        raise InvalidRequest(f"{width}x{height} is {width * height:,} pixels; this studio allows "
                             f"at most {limits.max_pixels:,}.")
    return dict(width=width, height=height)


def _inputs(mode: str, get: Get, limits: Limits) -> dict:
    """img2img and inpainting: the input image and strength; inpainting: the mask and its options."""
    if mode not in ("img2img", "inpaint"):
        return {}
    image = load_image("Input image", get("image"))
    if image.width * image.height > limits.max_pixels * 4:
        raise InvalidRequest(f"Input image is {image.width}x{image.height}; too large for this studio.")
    if min(image.size) < 8:
        raise InvalidRequest(f"Input image is {image.width}x{image.height}; it must be at least 8x8.")
    strength = bounded("Strength", get("strength"), 0.0, 1.0, integer=False)
    fields = dict(image=_array(image), strength=strength)
    if mode == "inpaint":
        fields.update(_mask(get, image))
    return fields


def _mask(get: Get, image: Image.Image) -> dict:
    mask = mask_from_image("Mask", get("mask"))
    if mask.size != image.size:
        raise InvalidRequest(f"The mask is {mask.width}x{mask.height} but the image is "
                             f"{image.width}x{image.height}; they must be the same size.")
    if mask.getextrema()[1] == 0:
        raise InvalidRequest("The mask is empty: paint over the area to repaint, or upload a mask "
                             "(white = repaint).")
    mask_blur = bounded("Mask blur", get("mask_blur"), 0, 64, integer=True)
    only_masked = get("only_masked")
    if only_masked in (None, ""):
        only_masked = False
    if not isinstance(only_masked, (bool, int)) or isinstance(only_masked, int) and only_masked not in (0, 1):
        raise InvalidRequest(f"Only masked must be true or false, got {only_masked!r}.")
    padding = bounded("Only-masked padding", get("only_masked_padding"), 0, 256, integer=True)
    return dict(mask=_array(mask), mask_blur=mask_blur, only_masked=bool(only_masked), only_masked_padding=padding)


def _addons(get: Get, limits: Limits, known_loras: Sequence[str] | None, known_vaes: Sequence[str] | None) -> dict:
    """LoRAs, VAE, clip skip, feature cache, variants, reference images, and the model."""
    loras = _loras(get("loras"), known_loras)
    vae = word("VAE", get("vae"), None, ("", "None", "Automatic"))
    if vae is not None and known_vaes is not None and vae not in known_vaes:
        raise InvalidRequest(f"Unknown VAE {vae!r}: put it in models/vae and press refresh "
                             f"(available: {', '.join(known_vaes or []) or 'none'}).")
    clip_skip = bounded("Clip skip", get("clip_skip"), *CLIP_SKIP_RANGE, integer=True)
    feature_cache = bounded("Feature cache", get("feature_cache"), *FEATURE_CACHE_RANGE, integer=True)
    if feature_cache == 1:
        raise InvalidRequest("Feature cache 1 would run the full UNet every step: use 0 (off) or 2 and up.")
    variants = word("Variants", get("variants"), "random")
    if variants not in ("random", "all"):
        raise InvalidRequest(f"Variants must be 'random' or 'all', got {variants!r}.")
    references = _references(get("references"), limits)
    reference_strength = bounded("Reference strength", get("reference_strength"), 0.0, 1.0, integer=False)
    model = word("Model", get("model"), "")
    reference_method = word("Reference method", get("reference_method"), "reference-only")
    if reference_method not in ("reference-only", "ip-adapter"):
        raise InvalidRequest(f"Reference method must be 'reference-only' or 'ip-adapter', got {reference_method!r}.")
    return dict(loras=loras, vae=vae, clip_skip=clip_skip, feature_cache=feature_cache, variants=variants,
                references=tuple((name, _array(img)) for name, img in references),
                reference_strength=reference_strength, reference_method=reference_method, model=model)
