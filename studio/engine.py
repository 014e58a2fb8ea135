"""generate(): one request in, saved images out.

    1. check the request against the loaded model (size, 9-channel UNet, strength x steps)
    2. resolve the prompt (style template, negative presets)
    3. for each batch: a fresh scheduler and pipeline object, seeded CPU generators
    4. run with `callback_on_step_end`: progress, and Stop at the next step
    5. inpaint: paste the result back so unmasked pixels are exactly the input's
    6. save each image with its metadata before anyone sees it
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import platform
import secrets
from pathlib import Path
from typing import Callable

from PIL import Image, ImageFilter

from . import __version__
from .conditioning import Conditioner, denoising_steps
from .errors import GenerationStopped, InvalidRequest, StudioError
from .library import ModelLibrary
from .memory import free_device_memory
from .metadata import format_parameters
from .models import ModelManager
from .outputs import OutputFolder
from .presets import Presets
from .plan import apply_addons, plan_images, request_loras, request_references
from .prompts import parse_prompts
from .deepcache import feature_cache
from .reference import ReferenceGuidance
from .safety import ContentFilter
from .requests import MAX_SEED, MIN_SIDE, GeneratedImage, GenerationRequest, GenerationResult
from .schedulers import SCHEDULERS, build_scheduler

log = logging.getLogger(__name__)

OnStep = Callable[[int, int], None]
ShouldStop = Callable[[], bool]


def _sha256(image: Image.Image | None) -> str | None:
    if image is None:
        return None
    return hashlib.sha256(image.tobytes() + repr((image.mode, image.size)).encode()).hexdigest()


def _versions() -> dict[str, str]:
    import diffusers
    import torch
    import transformers

    return {"studio": __version__, "torch": torch.__version__, "diffusers": diffusers.__version__,
            "transformers": transformers.__version__, "python": platform.python_version()}


def target_size(request: GenerationRequest, native: int, notes: list[str]) -> tuple[int, int]:
    """The size to generate at: as asked, else native (txt2img) or the input's size rounded
    down to a multiple of 8 (with a note, since the latent grid is 8 pixels)."""
    if request.mode == "txt2img" or request.image is None:
        return request.width or native, request.height or native
    w, h = request.image.size
    width = request.width or w // 8 * 8
    height = request.height or h // 8 * 8
    if (not request.width and width != w) or (not request.height and height != h):
        notes.append(f"The input is {w}x{h}; generated at {width}x{height} (a multiple of 8)"
                     + (" and pasted back at the input's size." if request.mode == "inpaint" else "."))
    if min(width, height) < MIN_SIDE:
        raise InvalidRequest(f"The input image is {w}x{h}; the smallest size this studio generates "
                             f"is {MIN_SIDE}x{MIN_SIDE}.")
    return width, height


def _a1111_fields(request: GenerationRequest, seed: int, size: tuple[int, int], model: str,
                  batch_pos: int, addons: dict | None = None) -> dict:
    spec = SCHEDULERS[request.scheduler]
    fields = {"Steps": request.steps, "Sampler": spec.sampler, "Schedule type": spec.schedule,
              "CFG scale": request.cfg_scale, "Seed": seed, "Size": f"{size[0]}x{size[1]}",
              "Model": model}
    if request.mode != "txt2img":
        fields["Denoising strength"] = request.strength
    if request.mode == "inpaint":
        fields["Mask blur"] = request.mask_blur
        if request.only_masked:
            fields["Inpaint area"] = "Only masked"
            fields["Masked area padding"] = request.only_masked_padding
    if request.batch_size > 1:
        fields["Batch size"] = request.batch_size
        fields["Batch pos"] = batch_pos
    if request.style:
        fields["Styles array"] = f'["{request.style}"]'
    addons = addons or {}
    if request.clip_skip > 1:
        fields["Clip skip"] = request.clip_skip
    if request.feature_cache:
        fields["Feature cache"] = request.feature_cache
    if addons.get("vae"):
        fields["VAE"] = addons["vae"]["name"]
        fields["VAE hash"] = addons["vae"]["sha256"][:10]
    if addons.get("loras"):
        fields["Lora weights"] = ", ".join(f"{Path(r['name']).stem}: {r['weight']:g}" for r in addons["loras"])
        fields["Lora hashes"] = ", ".join(f"{Path(r['name']).stem}: {r['sha256']}" for r in addons["loras"])
    if addons.get("embeddings"):
        fields["TI hashes"] = ", ".join(f"{r['name']}: {r['sha256']}" for r in addons["embeddings"])
    fields["Version"] = f"studio {__version__}"
    return fields


def explain(request: GenerationRequest, manager: ModelManager, presets: Presets) -> dict:
    """How the studio reads a request's prompts: presets and styles applied, tags and inline
    negatives taken out, the text of each denoising step, its weighted fragments and chunks."""
    prompt, negative = presets.resolve(request.prompt, request.negative_prompt,
                                       request.negative_presets, request.style)
    parsed = parse_prompts(prompt, negative)
    steps = denoising_steps(request.mode, request.steps, request.strength)
    with manager.lock:
        cond = Conditioner(manager.base(), parsed.positive_text, parsed.negative, steps, request.clip_skip)
        report = cond.chunk_report()
    return {"prompt as typed": request.prompt, "after presets and style": prompt,
            "prompt": parsed.positive_text, "negative prompt": parsed.negative,
            "moved to the negative prompt": parsed.moved_negatives,
            "lora tags": [f"{n}:{w}" for n, w in parsed.loras], "denoising steps": steps,
            "per step": report}


def generate(request: GenerationRequest, manager: ModelManager, outputs: OutputFolder,
             presets: Presets, *, on_step: OnStep | None = None,
             on_preview: Callable[[Callable[[], Image.Image]], None] | None = None,
             should_stop: ShouldStop | None = None, library: ModelLibrary | None = None,
             content_filter: ContentFilter | None = None) -> GenerationResult:
    import torch

    # 1. check inputs against the model
    info = manager.info()
    notes: list[str] = []
    if info.notice and info.kind == "placeholder":
        notes.append(info.notice)
    width, height = target_size(request, info.native_size, notes)
    if request.mode != "txt2img" and 0 < request.strength and int(request.steps * request.strength) < 1:
        raise InvalidRequest(f"Strength {request.strength:g} x {request.steps} steps leaves no "
                             "denoising step; raise the strength or the steps.")

    # 2. resolve the prompts: presets and style, variants per image, tags and inline negatives
    template, neg_template = presets.resolve(request.prompt, request.negative_prompt,
                                             request.negative_presets, request.style)
    seed = request.seed if request.seed != -1 else secrets.randbelow(MAX_SEED + 1)
    plan = plan_images(request, template, neg_template, seed, presets.wildcards)
    if content_filter is not None:
        for text in dict.fromkeys(img.prompt for img in plan):
            content_filter.check_prompt(text)
    loras = request_loras(plan, request, library)
    references = request_references(plan, request)
    if references and request.reference_strength == 0:
        notes.append("Reference strength is 0: the reference images are not used.")
    denoise_steps = denoising_steps(request.mode, request.steps, request.strength)
    images: list[GeneratedImage] = []
    stopped = False
    mask = _blurred_mask(request) if request.mode == "inpaint" else None
    batches = [plan[i:i + request.batch_size] for i in range(0, len(plan), request.batch_size)]

    with manager.lock:
        base = manager.base()
        versions = _versions()
        texts = [t for img in plan for t in (img.parsed.positive_text, img.parsed.negative)]
        addons = apply_addons(request, manager, library, texts, loras)
        own_inpaint = request.mode == "inpaint" and bool(info.inpaint_unet)
        if own_inpaint and addons["loras"]:
            notes.append(f"LoRAs act on the text encoder only here: {info.name} inpaints with its own "
                         "9-channel UNet, which has no LoRA layers.")
        conds: dict[tuple, Conditioner] = {}
        # what the text encoders' outputs depend on besides the text: the loaded weights and LoRAs
        # (embedding files change the token ids, and their hashes are part of the key too)
        text_state = (manager.loads, tuple((r["name"], r["weight"], r["sha256"]) for r in addons["loras"]),
                      tuple(sorted(manager.addons.embeddings.items())))
        stack = contextlib.ExitStack()
        ip_images = None
        use_ip = references and request.reference_strength > 0 and request.reference_method == "ip-adapter"
        if use_ip:
            if library is None:
                raise InvalidRequest("IP-Adapter needs a models folder (models/ip-adapter).")
            weights = stack.enter_context(manager.ip_adapter(library.folder("ip-adapter"),
                                                             request.reference_strength))
            addons["ip_adapter"] = {"file": weights.name}
            ip_images = references[0].image if len(references) == 1 else [[r.image for r in references]]
        guided = references if not use_ip else []
        # 3b. the feature cache (DeepCache) counts UNet calls: reference-only adds calls of its own,
        # and a compiled UNet would recompile for the stand-in blocks
        cache_every = request.feature_cache
        if cache_every and (guided and request.reference_strength > 0 or manager.fast.compile):
            why = "reference-only guidance" if guided else "torch.compile (--no-compile to use it)"
            notes.append(f"Feature cache is off for this generation: it does not combine with {why}.")
            cache_every = 0

        try:
            for batch, members in enumerate(batches):
                seeds = [m.seed for m in members]
                # 2b. the prompts as embeddings, per denoising step (emphasis, BREAK, editing)
                key = tuple((m.parsed.positive_text, m.parsed.negative) for m in members)
                if len(set(key)) == 1:
                    key = key[:1]
                if key not in conds:
                    conds[key] = Conditioner(base, [k[0] for k in key], [k[1] for k in key],
                                             denoise_steps, request.clip_skip,
                                             manager.text_cache, text_state)
                cond = conds[key]
                per_prompt = len(members) // cond.per_image
                # 3. a scheduler and pipeline object of this request's own
                scheduler = build_scheduler(request.scheduler, base.scheduler.config, seed=seeds[0])
                pipe = manager.pipeline_with_scheduler(request.mode, scheduler)
                generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]

                # 4. progress and Stop through the step callback
                def on_step_end(p, i, t, kwargs, _batch=batch, cond=cond, per_prompt=per_prompt):
                    if should_stop is not None and should_stop():
                        raise GenerationStopped()
                    if manager.inject_oom > 0:     # test hook: an OOM inside the denoising loop
                        manager.inject_oom -= 1
                        raise torch.OutOfMemoryError("CUDA out of memory (injected by the test hook)")
                    total = p.num_timesteps * len(batches)
                    if on_step is not None:
                        on_step(_batch * p.num_timesteps + i + 1, total)
                    if on_preview is not None and "latents" in kwargs and i + 1 < p.num_timesteps:
                        # the caller decides whether to look: the picture is made only then
                        on_preview(lambda latents=kwargs["latents"]: manager.preview(latents))
                    return cond.update(p, i, kwargs, per_prompt) if cond.changes else kwargs

                call = dict(num_inference_steps=request.steps, guidance_scale=request.cfg_scale,
                            num_images_per_prompt=per_prompt, generator=generators,
                            callback_on_step_end=on_step_end, output_type="pil",
                            **cond.pipeline_kwargs())
                if cond.changes or on_preview is not None:
                    call["callback_on_step_end_tensor_inputs"] = (
                        ["latents"] + (cond.tensor_inputs() if cond.changes else []))
                if ip_images is not None:
                    call["ip_adapter_image"] = ip_images
                if request.mode == "txt2img":
                    call.update(height=height, width=width)
                elif request.mode == "img2img":
                    call.update(image=request.image.resize((width, height), Image.LANCZOS),
                                strength=request.strength)
                else:
                    if request.only_masked:
                        call.update(image=request.image, mask_image=mask, height=height, width=width,
                                    padding_mask_crop=request.only_masked_padding)
                    else:
                        call.update(image=request.image.resize((width, height), Image.LANCZOS),
                                    mask_image=mask.resize((width, height), Image.LANCZOS),
                                    height=height, width=width)
                    call.update(strength=request.strength)

                if request.mode != "txt2img" and request.strength == 0:
                    # No denoising at all: the input is the result (no VAE round trip).
                    outs = [call["image"] for _ in seeds]
                else:
                    try:
                        with ReferenceGuidance(pipe, guided, request.reference_strength, width, height,
                                               seeds[0]), feature_cache(pipe.unet, cache_every):
                            outs = _run_with_oom_retry(pipe, call, request, manager, notes, width, height)
                    except GenerationStopped:
                        stopped = True
                        notes.append(f"Stopped: {len(images)} of {len(plan)} images finished and were kept.")
                        break

                # 5. + 6. paste back, check (shared studios), then save before showing
                flags = content_filter.flagged(outs, manager.device) if content_filter else [False] * len(outs)
                if any(flags):
                    notes.append(f"{sum(flags)} image(s) flagged by the safety checker were not saved or shown.")
                for i, (s, image, member) in enumerate(zip(seeds, outs, members)):
                    if flags[i]:
                        continue
                    if request.mode == "inpaint":
                        image = composite(image, request.image, mask)
                    parsed = member.parsed
                    prompt, negative = parsed.positive_text, parsed.negative
                    fields = _a1111_fields(request, s, image.size, info.name, i, addons)
                    if member.template != member.prompt:
                        fields["Wildcard prompt"] = member.template
                    parameters = format_parameters(prompt, negative, fields)
                    data = {
                        "format": 1, "mode": request.mode, "request": request.fields(),
                        "prompt": prompt, "negative_prompt": negative, "seed": s,
                        "batch_number": batch, "batch_pos": i, "width": image.width, "height": image.height,
                        "generated_size": [width, height],
                        "model": {"name": info.name, "source": info.source, "kind": info.kind,
                                  "family": info.family, "inpainting_unet": own_inpaint},
                        "scheduler": {"name": request.scheduler, "class": type(scheduler).__name__,
                                      "config": _plain(dict(scheduler.config))},
                        "device": manager.device, "dtype": str(manager.dtype).replace("torch.", ""),
                        "generator": "torch.Generator('cpu') per image, seeded with `seed`",
                        "versions": versions,
                        "input_image_sha256": _sha256(request.image), "mask_sha256": _sha256(request.mask),
                        "references": [{"name": r.name, "sha256": _sha256(r.image)} for r in references],
                        "reference_strength": request.reference_strength if references else 0.0,
                        "parsed": {"variant": member.prompt, "variant_negative": member.negative,
                                   "prompt": prompt, "negative_prompt": negative,
                                   "moved_to_negative": parsed.moved_negatives,
                                   "lora_tags": [list(t) for t in parsed.loras],
                                   "schedule": [[end, ps[i % len(ps)], ns[i % len(ns)]]
                                                for end, ps, ns in cond.segments] if cond.changes else []},
                        **addons,
                    }
                    path = outputs.save(image, parameters, data, seed=s)
                    log.info("Saved %s", path)
                    images.append(GeneratedImage(path=path, image=image, seed=s, parameters=parameters,
                                                 data=data))
        finally:
            stack.close()
    return GenerationResult(request=request, images=images, seed=seed, stopped=stopped, notes=notes)


def _run_with_oom_retry(pipe, call: dict, request: GenerationRequest, manager: ModelManager,
                        notes: list[str], width: int, height: int):
    """Run the pipeline; on out-of-memory free the cache, turn the memory savers on and try once
    more, telling the user what was done. A second failure is a clear message, not a crash."""
    import torch

    for attempt in (1, 2):
        try:
            return pipe(**call).images
        except torch.OutOfMemoryError:
            free_device_memory()
            if attempt == 1 and manager.savers_on():
                log.warning("Out of memory at %dx%d; retrying with memory savers on", width, height)
                notes.append("Ran out of memory; freed the cache and retried with attention slicing "
                             "and VAE slicing/tiling on (memory mode 'low' from now on).")
                continue
            raise StudioError(f"Out of memory at {width}x{height} with batch size {request.batch_size}"
                              f" (memory mode {manager.memory_in_use}); try a smaller size or batch, "
                              "or the 'offload' memory mode.") from None


def _plain(value):
    """Scheduler configs hold tuples and numpy values; make them JSON-friendly."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist"):
        return value.tolist()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _blurred_mask(request: GenerationRequest) -> Image.Image:
    mask = request.mask
    if request.mask_blur:
        mask = mask.filter(ImageFilter.GaussianBlur(request.mask_blur))
    return mask


def composite(generated: Image.Image, original: Image.Image, mask: Image.Image) -> Image.Image:
    """The generated pixels where the mask is set, the original's exactly where it is 0."""
    if generated.size != original.size:
        generated = generated.resize(original.size, Image.LANCZOS)
    return Image.composite(generated.convert("RGB"), original.convert("RGB"), mask)
