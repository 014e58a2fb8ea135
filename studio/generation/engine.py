"""generate(): one request in, saved images out, in four named stages.

    prepare     sizes against the model, prompts (presets, style, variants, tags, inline
                negatives), the plan of images with their seeds, LoRAs, references, the mask
    condition   the request's add-ons onto the loaded model (LoRAs, embeddings, VAE, IP-Adapter),
                then per batch the prompts as embeddings per denoising step
    denoise     a fresh scheduler and pipeline object per batch, seeded CPU generators, progress,
                previews and Stop through `callback_on_step_end`, one retry after out-of-memory
    finish      paste-back (inpainting), the safety check, the metadata record (record.py), and
                the PNG saved before anyone sees it
"""

from __future__ import annotations

import contextlib
import logging
import platform
import secrets
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from PIL import Image, ImageFilter

from studio import __version__
from studio.control.guidance import ActiveUnit, ControlGuidance
from studio.control.maps import Annotate
from studio.control.regions import Regions, RegionalConditioner, has_regions, read_regions, regional_attention
from studio.control.units import active_unit, check_fits, control_maps
from studio.control.units import record as control_record
from studio.errors import BatchSkipped, GenerationStopped, InvalidRequest, StudioError
from studio.generation.deepcache import feature_cache
from studio.generation.noise import variation_latents
from studio.generation.plan import (PlannedImage, apply_addons, plan_images, request_loras,
                                    request_references)
from studio.generation.record import ImageRecord, ModelRecord, array_sha256, scheduler_record
from studio.generation.reference import Reference, ReferenceGuidance
from studio.generation.schedulers import build_scheduler
from studio.generation.tiling import tiling
from studio.models.library import ModelLibrary
from studio.models.manager import ModelManager
from studio.models.memory import MODES, free_device_memory
from studio.models.sources import ModelInfo
from studio.outputs.folder import HeldPictures, OutputFolder
from studio.families.run import conditioner, denoiser, family_of, guidance, image_kwargs, settle, spatial
from studio.prompts.conditioning import Conditioner, denoising_steps
from studio.prompts.presets import Presets
from studio.prompts.syntax import parse_prompts
from studio.prompts.vocabulary import vocabulary_note
from studio.requests import MAX_SEED, MIN_SIDE, GeneratedImage, GenerationRequest, GenerationResult
from studio.requests.request import REGION_KEYWORDS
from studio.generation.safety import ContentFilter

log = logging.getLogger(__name__)

OnStep = Callable[[int, int], None]
OnPreview = Callable[[Callable[[], Image.Image]], None]
ShouldStop = Callable[[], bool]


@dataclass
class Callbacks:
    """What a caller hears while a request runs (all optional)."""
    on_step: OnStep | None = None
    on_preview: OnPreview | None = None
    should_stop: ShouldStop | None = None
    should_skip: ShouldStop | None = None     # skip the batch being drawn, go on with the next


@dataclass
class Prepared:
    """A request checked against the model, with everything it will make (the `prepare` stage)."""
    request: GenerationRequest
    info: ModelInfo
    width: int
    height: int
    seed: int                          # the first image's
    plan: list[PlannedImage]
    loras: list[tuple[str, float]]
    references: list[Reference]
    steps: int                         # denoising steps actually run (img2img: steps x strength)
    image: Image.Image | None          # the input (img2img, inpaint)
    mask: Image.Image | None           # blurred (inpaint)
    notes: list[str] = field(default_factory=list)
    final_latents: dict = field(default_factory=dict)   # batch -> its last latents (keep_latents)
    toward: tuple[str, str] | None = None  # the blend prompts, read (prompt travel)
    control_maps: list = field(default_factory=list)     # each control unit's map at the picture's size
    sampler: str = ""                  # the sampler run: the request's, or its flow form (studio/families)

    @property
    def batches(self) -> list[list[PlannedImage]]:
        size = self.request.batch_size
        return [self.plan[i:i + size] for i in range(0, len(self.plan), size)]


@dataclass
class Setup:
    """The loaded model set up for this request (the first half of the `condition` stage)."""
    base: object
    addons: dict
    model: ModelRecord
    text_state: tuple                  # what text embeddings depend on besides the text
    guided: list[Reference]            # references for reference-only attention
    ip_images: object                  # IP-Adapter images, or None
    cache_every: int                   # the feature cache's interval (0: off)
    tiling: str                        # the edges the picture continues across ("off": none)
    control: list[ActiveUnit]          # the control units, their models loaded
    versions: dict[str, str]
    device: str
    dtype: str
    conds: dict = field(default_factory=dict)


def _versions() -> dict[str, str]:
    import diffusers
    import torch
    import transformers

    return {"studio": __version__, "torch": torch.__version__, "diffusers": diffusers.__version__,
            "transformers": transformers.__version__, "python": platform.python_version()}


# -------------------------------------------------------------------------------------------------
# prepare

def target_size(request: GenerationRequest, native: int, notes: list[str]) -> tuple[int, int]:
    """The size to generate at: as asked, else native (txt2img) or the input's size rounded
    down to a multiple of 8 (with a note, since the latent grid is 8 pixels)."""
    if request.mode == "txt2img" or request.image is None:
        return request.width or native, request.height or native
    h, w = request.image.shape[:2]
    width = request.width or w // 8 * 8
    height = request.height or h // 8 * 8
    if (not request.width and width != w) or (not request.height and height != h):
        notes.append(f"The input is {w}x{h}; generated at {width}x{height} (a multiple of 8)"
                     + (" and pasted back at the input's size." if request.mode == "inpaint" else "."))
    if min(width, height) < MIN_SIDE:
        raise InvalidRequest(f"The input image is {w}x{h}; the smallest size this studio generates "
                             f"is {MIN_SIDE}x{MIN_SIDE}.")
    return width, height


def prepare(request: GenerationRequest, info: ModelInfo, presets: Presets,
            library: ModelLibrary | None, content_filter: ContentFilter | None,
            annotate: Annotate | None = None) -> Prepared:
    notes = [info.notice] if info.notice and info.kind == "placeholder" else []
    width, height, sampler = settle(request, info, *target_size(request, info.native_size, notes), notes)
    template, neg_template = presets.resolve(request.prompt, request.negative_prompt,
                                             request.negative_presets, request.style)
    seed = request.seed if request.seed != -1 else secrets.randbelow(MAX_SEED + 1)
    variation_seed = None
    if request.variation_strength > 0:
        variation_seed = (request.variation_seed if request.variation_seed != -1
                          else secrets.randbelow(MAX_SEED + 1))
    plan = plan_images(request, template, neg_template, seed, presets.wildcards, variation_seed)
    if content_filter is not None:
        for text in dict.fromkeys(img.prompt for img in plan):
            content_filter.check_prompt(text)
    note = vocabulary_note(info.name, info.knows, info.vocabulary,
                           [REGION_KEYWORDS.sub(" ", img.parsed.positive_text) for img in plan])
    if note:
        notes.append(note)
    for text in dict.fromkeys(img.parsed.positive_text for img in plan):
        read_regions(text, request.regions_ratio, request.base_ratio, request.regions_mask)   # what does not fit: now
    references = request_references(plan, request)
    if references and request.reference_strength == 0:
        notes.append("Reference strength is 0: the reference images are not used.")
    mask = request.input_mask()
    if mask is not None and request.mask_blur:
        mask = mask.filter(ImageFilter.GaussianBlur(request.mask_blur))
    return Prepared(request=request, info=info, width=width, height=height, seed=seed, plan=plan,
                    loras=request_loras(plan, request, library), references=references,
                    steps=denoising_steps(request.mode, request.steps, request.strength),
                    image=request.input_image(), mask=mask, notes=notes,
                    toward=blend_target(request, presets, notes),
                    control_maps=control_maps(request, width, height, seed, annotate, mask), sampler=sampler)


def annotator_runner(manager: ModelManager, library: ModelLibrary | None) -> Annotate | None:
    """Preprocessors with weights run with the manager's kept annotators, from models/annotators."""
    if library is None:
        return None
    return lambda annotator, rgb: manager.annotators.run(annotator, rgb, library.folder("annotators"))


def blend_target(request: GenerationRequest, presets: Presets, notes: list[str]) -> tuple[str, str] | None:
    """The blend prompts read as the prompts are (presets, style, inline negatives); their
    <lora:> tags are left out, with a note."""
    if request.blend <= 0:
        return None
    prompt, negative = presets.resolve(request.blend_prompt, request.blend_negative_prompt,
                                       request.negative_presets, request.style)
    parsed = parse_prompts(prompt, negative)
    if parsed.loras:
        notes.append("LoRA tags in the blend prompt are not applied; list LoRAs in the request or the prompt.")
    return parsed.positive_text, parsed.negative


# -------------------------------------------------------------------------------------------------
# condition

def set_up(prep: Prepared, manager: ModelManager, library: ModelLibrary | None,
           stack: contextlib.ExitStack) -> Setup:
    """The request's add-ons onto the loaded model (under its lock) and what they imply."""
    request, info = prep.request, prep.info
    base = manager.base()
    texts = [t for img in prep.plan for t in (img.parsed.positive_text, img.parsed.negative)]
    texts += list(prep.toward or ())
    addons = apply_addons(request, manager, library, texts, prep.loras)
    own_inpaint = request.mode == "inpaint" and bool(info.inpaint_unet)
    if MODES[manager.memory_in_use].fp8:
        prep.notes.append(f"Memory mode {manager.memory_in_use}: the denoiser's weights were stored in fp8 "
                          "(a little less faithful).")
    if own_inpaint and addons["loras"]:
        prep.notes.append(f"LoRAs act on the text encoder only here: {info.name} inpaints with its own "
                          "9-channel UNet, which has no LoRA layers.")
    # text embeddings depend on the loaded weights and LoRAs besides the text (embedding files
    # change the token ids, and their hashes are part of the key too)
    text_state = (manager.loads, tuple((r["name"], r["weight"], r["sha256"]) for r in addons["loras"]),
                  tuple(sorted(manager.addons.embeddings.items())))
    ip_images, guided = None, prep.references
    if prep.references and request.reference_strength > 0 and request.reference_method == "ip-adapter":
        if library is None:
            raise InvalidRequest("IP-Adapter needs a models folder (models/ip-adapter).")
        weights = stack.enter_context(manager.ip_adapter(library.folder("ip-adapter"), request.reference_strength))
        addons["ip_adapter"] = {"file": weights.name}
        images = [r.image for r in prep.references]
        ip_images, guided = (images[0] if len(images) == 1 else [images]), []
    return Setup(base=base, addons=addons, text_state=text_state, guided=guided, ip_images=ip_images,
                 cache_every=_feature_cache_interval(prep, guided, manager), tiling=_tiling(prep, manager),
                 control=_control(prep, manager, library, addons),
                 model=ModelRecord(name=info.name, source=info.source, kind=info.kind, family=info.family,
                                   hash=manager.model_hash(), inpainting_unet=own_inpaint, arch=info.arch),
                 versions=_versions(), device=manager.device,
                 dtype=str(manager.dtype).replace("torch.", ""))


def _feature_cache_interval(prep: Prepared, guided: list, manager: ModelManager) -> int:
    """The feature cache (DeepCache) counts UNet calls: reference-only adds calls of its own, and
    a compiled UNet would recompile for the stand-in blocks."""
    every = prep.request.feature_cache
    if every and (guided and prep.request.reference_strength > 0 or manager.fast.compile):
        why = "reference-only guidance" if guided else "torch.compile (--no-compile to use it)"
        prep.notes.append(f"Feature cache is off for this generation: it does not combine with {why}.")
        return 0
    return every


def _control(prep: Prepared, manager: ModelManager, library: ModelLibrary | None, addons: dict) -> list[ActiveUnit]:
    """The control units' models (loaded once, kept beside the model), checked against it."""
    units = prep.request.control
    if not units:
        return []
    if library is None:
        raise InvalidRequest("ControlNet needs a models folder (models/controlnet).")
    base, active, records = manager.base(), [], []
    for unit, map_ in zip(units, prep.control_maps):
        model = manager.controls.get(library.get("controlnet", unit.model), manager.device, base.unet.dtype,
                                     manager.allow_pickle)
        check_fits(model, base.unet, base.vae_scale_factor)
        active.append(active_unit(unit, map_, model, manager.device, base.unet.dtype))
        records.append(control_record(unit, model))
    addons["controlnet"] = records
    return active


def _tiling(prep: Prepared, manager: ModelManager) -> str:
    """A compiled UNet keeps the padding it was compiled with: tiling there is said, not done."""
    if prep.request.tiling != "off" and manager.fast.compile:
        prep.notes.append("Tiling is off for this generation: it does not combine with torch.compile "
                          "(--no-compile to use it).")
        return "off"
    return prep.request.tiling


def condition(prep: Prepared, setup: Setup, members: list[PlannedImage], manager: ModelManager):
    """A batch's prompts as embeddings per denoising step (emphasis, BREAK, prompt editing);
    batches with the same prompts share one Conditioner. A prompt with regions (ADDCOL,
    ADDROW...) is encoded region by region (studio/control/regions.py)."""
    key = tuple((m.parsed.positive_text, m.parsed.negative) for m in members)
    if len(set(key)) == 1:
        key = key[:1]
    toward = (*prep.toward, prep.request.blend) if prep.toward else None
    if key not in setup.conds:
        regions = _regions(prep, setup, key)
        positives = list(regions.texts) if regions else [k[0] for k in key]
        cond = conditioner(setup.base, prep.info, positives, [k[1] for k in key], prep.steps,
                           prep.request.clip_skip, manager.text_cache, setup.text_state, toward, prep.request.t5_tokens)
        setup.conds[key] = RegionalConditioner(cond, regions) if regions else cond
    return setup.conds[key]


def _regions(prep: Prepared, setup: Setup, key: tuple) -> Regions | None:
    r = prep.request
    if not any(has_regions(positive) for positive, _ in key):
        return None
    why = ("prompt variants that differ within a batch (use batch size 1)" if len(key) > 1 else
           "prompt travel (blend)" if prep.toward else "IP-Adapter" if setup.ip_images is not None else "")
    if why:
        raise InvalidRequest(f"Regional prompts do not combine with {why} yet.")
    return read_regions(key[0][0], r.regions_ratio, r.base_ratio, r.regions_mask)


# -------------------------------------------------------------------------------------------------
# denoise

def denoise(prep: Prepared, setup: Setup, cond: Conditioner, members: list[PlannedImage], batch: int,
            manager: ModelManager, callbacks: Callbacks):
    """One batch through a pipeline of its own; returns (images, the scheduler used).
    Raises GenerationStopped when the caller asked to stop."""
    import torch

    request, seeds = prep.request, [m.seed for m in members]
    scheduler = build_scheduler(prep.sampler, setup.base.scheduler.config, seed=seeds[0],
                                flow=family_of(prep.info).flow, shift=request.shift)
    pipe = manager.pipeline_with_scheduler(request.mode, scheduler)
    call = dict(num_inference_steps=request.steps, **guidance(request, prep.info, pipe),
                num_images_per_prompt=len(members) // cond.per_image,
                generator=[torch.Generator("cpu").manual_seed(s) for s in seeds],
                callback_on_step_end=_step_callback(prep, cond, batch, len(members), manager, callbacks),
                output_type="pil", **cond.pipeline_kwargs(),
                **image_kwargs(prep.info, _images_kwargs(prep), prep.width, prep.height))
    if cond.changes or callbacks.on_preview is not None or request.keep_latents:
        call["callback_on_step_end_tensor_inputs"] = ["latents"] + (cond.tensor_inputs() if cond.changes else [])
    if setup.ip_images is not None:
        call["ip_adapter_image"] = setup.ip_images
    if request.variation_strength > 0:
        call["latents"] = variation_latents(pipe, call["generator"], [m.variation_seed for m in members],
                                            request.variation_strength, prep.width, prep.height,
                                            _embeds_dtype(call["prompt_embeds"]))
    if request.mode != "txt2img" and call.get("strength", 1) == 0:
        return [call["image"] for _ in seeds], scheduler     # no denoising: the input is the result
    # the control hook first: reference-only's own pass inside a step then carries the step's control
    regional = cond.regions if isinstance(cond, RegionalConditioner) else None
    latent, net = (prep.height // pipe.vae_scale_factor, prep.width // pipe.vae_scale_factor), denoiser(pipe, prep.info)
    with ControlGuidance(pipe, setup.control), \
            regional_attention(net, regional, getattr(cond, "tokens", 0), *latent), \
            ReferenceGuidance(pipe, setup.guided, request.reference_strength, prep.width, prep.height, seeds[0]), \
            feature_cache(net, setup.cache_every), tiling(setup.tiling, net, pipe.vae):
        return _run_with_oom_retry(pipe, call, prep, manager), scheduler


def _embeds_dtype(embeds):
    """The noise's dtype, as the pipelines take it from the prompt embeddings (Z-Image's: a list)."""
    return (embeds[0] if isinstance(embeds, list) else embeds).dtype


def _images_kwargs(prep: Prepared) -> dict:
    """Size, input image and mask as each mode's pipeline takes them."""
    r, size = prep.request, (prep.width, prep.height)
    if r.mode == "txt2img":
        return dict(height=prep.height, width=prep.width)
    if r.mode == "img2img" and r.latents is not None:       # a latent upscale: no encoding
        import torch
        return dict(image=torch.from_numpy(np.array(r.latents)), strength=r.strength)
    if r.mode == "img2img":
        sized = dict(height=prep.height, width=prep.width) if family_of(prep.info).sized_input else {}
        return dict(image=prep.image.resize(size, Image.LANCZOS), strength=r.strength, **sized)
    if r.only_masked:
        return dict(image=prep.image, mask_image=prep.mask, height=prep.height, width=prep.width,
                    padding_mask_crop=r.only_masked_padding, strength=r.strength)
    return dict(image=prep.image.resize(size, Image.LANCZOS), mask_image=prep.mask.resize(size, Image.LANCZOS),
                height=prep.height, width=prep.width, strength=r.strength)


def _step_callback(prep: Prepared, cond: Conditioner, batch: int, images: int, manager: ModelManager,
                   callbacks: Callbacks):
    """diffusers' callback_on_step_end: Stop, progress, previews, and per-step prompt changes."""
    import torch

    per_prompt, batches = images // cond.per_image, len(prep.batches)

    def on_step_end(p, i, t, kwargs):
        if callbacks.should_stop is not None and callbacks.should_stop():
            raise GenerationStopped()
        if callbacks.should_skip is not None and callbacks.should_skip():
            raise BatchSkipped()
        if manager.inject_oom > 0:     # test hook: an OOM inside the denoising loop
            manager.inject_oom -= 1
            raise torch.OutOfMemoryError("CUDA out of memory (injected by the test hook)")
        if callbacks.on_step is not None:
            callbacks.on_step(batch * p.num_timesteps + i + 1, p.num_timesteps * batches)
        if prep.request.keep_latents and i + 1 == p.num_timesteps:
            prep.final_latents[batch] = kwargs["latents"].detach().float().cpu()
        if callbacks.on_preview is not None and "latents" in kwargs and i + 1 < p.num_timesteps:
            # the caller decides whether to look: the picture is made only then
            callbacks.on_preview(lambda latents=kwargs["latents"]: manager.preview(
                spatial(p, latents, prep.width, prep.height)))
        return cond.update(p, i, kwargs, per_prompt) if cond.changes else kwargs

    return on_step_end


def _run_with_oom_retry(pipe, call: dict, prep: Prepared, manager: ModelManager):
    """Run the pipeline; on out-of-memory free the cache, turn the memory savers on and try once
    more, telling the user what was done. A second failure is a clear message, not a crash."""
    import torch

    for attempt in (1, 2):
        try:
            return pipe(**call).images
        except torch.OutOfMemoryError:
            free_device_memory()
            if attempt == 1 and manager.savers_on():
                log.warning("Out of memory at %dx%d; retrying with memory savers on", prep.width, prep.height)
                prep.notes.append("Ran out of memory; freed the cache and retried with attention slicing "
                                  "and VAE slicing/tiling on (memory mode 'low' from now on).")
                continue
            raise StudioError(f"Out of memory at {prep.width}x{prep.height} with batch size "
                              f"{prep.request.batch_size} (memory mode {manager.memory_in_use}); try a "
                              "smaller size or batch, or the 'offload' memory mode.") from None


# -------------------------------------------------------------------------------------------------
# finish

def finish(prep: Prepared, setup: Setup, cond: Conditioner, members: list[PlannedImage], batch: int,
           outs: list[Image.Image], scheduler, outputs: OutputFolder | HeldPictures,
           content_filter: ContentFilter | None) -> list[GeneratedImage]:
    """Paste back, check (shared studios), and save each image with its record before showing it."""
    flags = content_filter.flagged(outs, setup.device) if content_filter else [False] * len(outs)
    if any(flags):
        prep.notes.append(f"{sum(flags)} image(s) flagged by the safety checker were not saved or shown.")
    config = scheduler_record(scheduler.config)
    references = [(r.name, array_sha256(_rgb_array(r.image))) for r in prep.references]
    saved = []
    for pos, (image, member, flagged) in enumerate(zip(outs, members, flags)):
        if flagged:
            continue
        if prep.request.mode == "inpaint":
            image = composite(image, prep.image, prep.mask)
        record = image_record(prep, setup, cond, member, batch, pos, image.size, type(scheduler).__name__,
                              config, references)
        parameters, data = record.parameters(), record.studio_json()
        path = outputs.save(image, parameters, data, seed=member.seed)
        if path is not None:
            log.info("Saved %s", path)
        kept = prep.final_latents.get(batch)
        saved.append(GeneratedImage(path=path, image=image, seed=member.seed, parameters=parameters, data=data,
                                    latents=None if kept is None else kept[pos:pos + 1].numpy()))
    return saved


def image_record(prep: Prepared, setup: Setup, cond: Conditioner, member: PlannedImage, batch: int, pos: int,
                 size: tuple[int, int], scheduler_class: str, scheduler_config: dict,
                 references: list[tuple[str, str]]) -> ImageRecord:
    parsed, k = member.parsed, pos % cond.per_image
    schedule = [[end, ps[k], ns[k]] for end, ps, ns in cond.segments] if cond.changes else []
    return ImageRecord(
        request=prep.request, model=setup.model, seed=member.seed, variation_seed=member.variation_seed,
        batch_number=batch, batch_pos=pos,
        size=size, generated_size=(prep.width, prep.height), prompt=parsed.positive_text,
        negative=parsed.negative, template=member.template, variant=member.prompt,
        variant_negative=member.negative, moved_negatives=parsed.moved_negatives, lora_tags=parsed.loras,
        schedule=schedule, scheduler_class=scheduler_class, scheduler_config=scheduler_config,
        device=setup.device, dtype=setup.dtype, versions=setup.versions, addons=setup.addons,
        references=references, notes=list(prep.notes),
        sampler=prep.sampler if family_of(prep.info).flow else "")


def _rgb_array(image: Image.Image):
    return np.asarray(image.convert("RGB"))


def composite(generated: Image.Image, original: Image.Image, mask: Image.Image) -> Image.Image:
    """The generated pixels where the mask is set, the original's exactly where it is 0."""
    if generated.size != original.size:
        generated = generated.resize(original.size, Image.LANCZOS)
    return Image.composite(generated.convert("RGB"), original.convert("RGB"), mask)


# -------------------------------------------------------------------------------------------------
# the stages in order

def generate(request: GenerationRequest, manager: ModelManager, outputs: OutputFolder | HeldPictures,
             presets: Presets, *, on_step: OnStep | None = None, on_preview: OnPreview | None = None,
             should_stop: ShouldStop | None = None, should_skip: ShouldStop | None = None,
             library: ModelLibrary | None = None, content_filter: ContentFilter | None = None) -> GenerationResult:
    callbacks = Callbacks(on_step, on_preview, should_stop, should_skip)
    prep = prepare(request, manager.info(), presets, library, content_filter, annotator_runner(manager, library))
    images: list[GeneratedImage] = []
    stopped = False
    with manager.lock, contextlib.ExitStack() as stack:
        setup = set_up(prep, manager, library, stack)
        for batch, members in enumerate(prep.batches):
            cond = condition(prep, setup, members, manager)
            try:
                outs, scheduler = denoise(prep, setup, cond, members, batch, manager, callbacks)
            except BatchSkipped:
                prep.notes.append(f"Skipped batch {batch + 1} of {len(prep.batches)}.")
                continue
            except GenerationStopped:
                stopped = True
                prep.notes.append(f"Stopped: {len(images)} of {len(prep.plan)} images finished and were kept.")
                break
            images += finish(prep, setup, cond, members, batch, outs, scheduler, outputs, content_filter)
    return GenerationResult(request=request, images=images, seed=prep.seed, stopped=stopped, notes=prep.notes)
