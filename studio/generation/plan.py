"""From a request to the images it will make: each image's seed and prompt variant, the parsed
prompts, the LoRAs (listed and <lora:> tags), and the add-ons applied for the request.
Pure bookkeeping except `apply_addons`, which changes the loaded model (under its lock)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from studio.errors import InvalidRequest
from studio.models.library import ModelLibrary
from studio.models.manager import ModelManager
from studio.prompts.syntax import ParsedPrompt, parse_prompts
from studio.generation.reference import Reference, select, take_reference_tags
from studio.requests import LORA_WEIGHT_RANGE, MAX_SEED, GenerationRequest
from studio.prompts.wildcards import expand_all, expand_random, has_variants

MAX_IMAGES = 8 * 16        # every combination of variants: at most this many images a request


def lora_list(asked: tuple[tuple[str, float], ...], tags: list[tuple[str, str]],
              library: ModelLibrary | None) -> list[tuple[str, float]]:
    """The request's LoRAs plus the prompt's `<lora:name:weight>` tags (by file name, with or
    without the extension, or its path in models/loras: `<lora:ann/azure:1>`; a tag overrides the
    same LoRA's weight from the list)."""
    out = dict(asked)
    if not tags:
        return list(out.items())
    names = library.names()["loras"] if library is not None else []

    def named(n: str, tag: str) -> bool:       # the file, its name, or its path without the extension
        return tag in (n, Path(n).stem, Path(n).name, Path(n).with_suffix("").as_posix())

    for tag, weight_text in tags:
        matches = [n for n in names if named(n, tag)]
        if not matches and library is not None:      # added since the last scan (a LoRA just trained)
            names = library.scan()["loras"]
            matches = [n for n in names if named(n, tag)]
        if not matches:
            raise InvalidRequest(f"<lora:{tag}> in the prompt: no such LoRA in models/loras "
                                 f"(available: {', '.join(Path(n).stem for n in names) or 'none'}).")
        if len(matches) > 1:
            raise InvalidRequest(f"<lora:{tag}> matches {', '.join(matches)}; write the full name.")
        try:
            weight = float(weight_text)
        except ValueError:
            raise InvalidRequest(f"<lora:{tag}:{weight_text}>: the weight must be a number.") from None
        if not (math.isfinite(weight) and LORA_WEIGHT_RANGE[0] <= weight <= LORA_WEIGHT_RANGE[1]):
            raise InvalidRequest(f"<lora:{tag}:{weight_text}>: the weight must be between "
                                 f"{LORA_WEIGHT_RANGE[0]:g} and {LORA_WEIGHT_RANGE[1]:g}.")
        out[matches[0]] = weight
    return list(out.items())


@dataclass
class PlannedImage:
    seed: int
    template: str          # the prompt after presets and style, before variants
    prompt: str            # this image's variant
    negative: str
    parsed: ParsedPrompt
    reference_tags: list   # {image} / {image:name} in the prompt
    variation_seed: int | None = None    # with a variation strength: the noise mixed in


def plan_images(request: GenerationRequest, template: str, neg_template: str, seed: int,
                wildcards: Path | None, variation_seed: int | None = None) -> list[PlannedImage]:
    """Every image of the request with its seed and prompts: random variants per image seed,
    or every combination ("all"; then the combinations set the number of images). With a
    variation seed (A1111's subseed, used when the strength is above 0) every image keeps the
    seed and the variation seeds count up instead, so a batch is variations around one picture."""
    every = request.variants == "all" and has_variants(template + neg_template)
    pairs = _all_pairs(template, neg_template, wildcards) if every else None
    count = len(pairs) if pairs else request.batch_count * request.batch_size
    seeds = [(seed + j) % (MAX_SEED + 1) for j in range(count)]
    variations: list[int | None] = [None] * count
    if variation_seed is not None:
        seeds, variations = [seed] * count, [(variation_seed + j) % (MAX_SEED + 1) for j in range(count)]
    if pairs is None:
        pairs = list(zip(expand_random(template, seeds, wildcards), expand_random(neg_template, seeds, wildcards)))
    out = []
    for s, v, (p, n) in zip(seeds, variations, pairs):
        text, tags = take_reference_tags(p)
        out.append(PlannedImage(s, template, p, n, parse_prompts(text, n), tags, v))
    return out


def _all_pairs(template: str, neg_template: str, wildcards: Path | None) -> list[tuple[str, str]]:
    pairs = [(p, n) for p in expand_all(template, wildcards, MAX_IMAGES)
             for n in expand_all(neg_template, wildcards, MAX_IMAGES)]
    if len(pairs) > MAX_IMAGES:
        raise InvalidRequest(f"{len(pairs)} combinations; at most {MAX_IMAGES} images a request.")
    return pairs


def request_loras(plan: list[PlannedImage], request: GenerationRequest,
                  library: ModelLibrary | None) -> list[tuple[str, float]]:
    """The LoRAs of the whole request (the list plus the prompt's tags, the same for every image)."""
    loras = None
    for img in plan:
        img_loras = lora_list(request.loras, img.parsed.loras, library)
        if loras is not None and img_loras != loras:
            raise InvalidRequest("<lora:...> tags differ between the variants of one request; put "
                                 "them outside the {a|b} choices.")
        loras = img_loras
    return loras or []


def request_references(plan: list[PlannedImage], request: GenerationRequest) -> list[Reference]:
    """The attached reference images the prompt's {image} tags select (the same for every image)."""
    tags = {tuple(img.reference_tags) for img in plan}
    if len(tags) > 1:
        raise InvalidRequest("{image} tags differ between the variants of one request; put them "
                             "outside the {a|b} choices.")
    return select([Reference(n, im) for n, im in request.reference_images()], list(tags.pop()))


def apply_addons(request: GenerationRequest, manager: ModelManager, library: ModelLibrary | None,
                 texts: list[str], lora_pairs: list[tuple[str, float]]) -> dict:
    """LoRAs, embeddings and VAE of this request onto the loaded model (under its lock);
    returns what was applied, for the metadata."""
    from studio.models.addons import apply_embeddings, apply_loras, used_embeddings

    base, family, arch = manager.base(), manager.info().family, manager.info().arch
    if (lora_pairs or request.vae) and library is None:
        raise InvalidRequest("LoRAs and VAE files need a models folder.")
    loras = [(name, library.get("loras", name).path, w) for name, w in lora_pairs]
    applied = {"loras": apply_loras(base, manager.addons, loras, family, arch)}
    available = {}
    if library is not None:
        available = {Path(n).stem: library.get("embeddings", n).path for n in library.names()["embeddings"]}
    used = used_embeddings(texts, available) if arch == "sd" else {}     # CLIP token rows: the SD families
    applied["embeddings"] = apply_embeddings(base, manager.addons, used, family)
    manager.set_vae(request.vae, library.get("vae", request.vae).path if request.vae else None)
    if request.vae:
        from studio.models.hashes import sha256_of
        applied["vae"] = {"name": request.vae, "sha256": sha256_of(library.get("vae", request.vae).path)}
    return applied
