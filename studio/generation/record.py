"""The metadata record of one saved image, built in one place from a typed record.

`ImageRecord.parameters()` is AUTOMATIC1111's infotext (its key order, its quoting, hashes cut as
it cuts them), `ImageRecord.studio_json()` the studio's full JSON record. Both are made from the
same fields, so they cannot disagree. Pure data: no torch here.

One deliberate difference from A1111: the `Negative prompt:` line is written even when it is
empty. A1111 leaves it out, but ComfyUI's importer then silently imports nothing, and every other
reader (A1111 itself, sd-parsers, sd-prompt-reader, Civitai) reads an empty line as "no negative".
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from studio import __version__
from studio.samplers import FLOW_SCHEDULERS, SCHEDULERS
from studio.outputs.metadata import format_parameters, strict_json
from studio.requests import GenerationRequest, request_fields
from studio.requests.control import CONTROL_MODES, RESIZE_MODES


def scheduler_record(config) -> dict:
    """The scheduler's config as saved. diffusers lists the defaulted keys from a set
    (`_use_default_values`), in an order that changes with each process's hash seed: sorted, the
    same request has the same record anywhere (a Ray worker, the next run of the studio)."""
    return strict_json({k: sorted(v) if k == "_use_default_values" and isinstance(v, list) else v
                        for k, v in dict(config).items()})


# A1111's key order (processing.py create_infotext); a field's key not named here comes after these
INFOTEXT_ORDER = ("Steps", "Sampler", "Schedule type", "CFG scale", "Seed", "Size", "Model hash", "Model", "VAE hash",
                  "VAE", "Variation seed", "Variation seed strength", "Denoising strength", "Clip skip", "Mask blur",
                  "Inpaint area", "Masked area padding", "Batch size", "Batch pos", "Styles array", "Wildcard prompt",
                  "Feature cache", "Lora weights", "Lora hashes", "TI hashes")


@dataclass(frozen=True)
class ModelRecord:
    name: str
    source: str
    kind: str
    family: str
    hash: str                 # A1111's Model hash (sha256, 10 hex digits)
    inpainting_unet: bool     # the model's own 9-channel UNet made this image
    arch: str = "sd"          # its family's key (studio/families): which fields it reads


@dataclass(frozen=True)
class ImageRecord:
    request: GenerationRequest
    model: ModelRecord
    seed: int
    variation_seed: int | None            # with a variation strength above 0
    batch_number: int
    batch_pos: int
    size: tuple[int, int]                 # of the saved image
    generated_size: tuple[int, int]       # what the model drew (inpainting pastes back at the input's)
    prompt: str                           # as read: variant chosen, tags and inline negatives out
    negative: str
    template: str                         # the prompt after presets and style, before variants
    variant: str
    variant_negative: str
    moved_negatives: list[str]
    lora_tags: list[tuple[str, str]]
    schedule: list                        # [end step, prompt, negative] per prompt-editing segment
    scheduler_class: str
    scheduler_config: dict
    device: str
    dtype: str
    versions: dict[str, str]
    addons: dict = field(default_factory=dict)          # loras, embeddings, vae, ip_adapter
    references: list[tuple[str, str]] = field(default_factory=list)   # (name, sha256)
    notes: list[str] = field(default_factory=list)      # what the user was told (unknown words...)
    sampler: str = ""                     # the sampler run, where the family's table differs (flow)

    # -- AUTOMATIC1111 -----------------------------------------------------------------------------
    def a1111_fields(self) -> dict[str, Any]:
        """Infotext fields in A1111's order (processing.py create_infotext): its own keys, then its
        extra generation parameters, then the studio's own, `Version` last. None = left out.
        The request's fields write their own keys (each field's `infotext` in
        studio/requests/request.py); the record writes what only it knows."""
        r, vae = self.request, self.addons.get("vae")
        spec = FLOW_SCHEDULERS[self.sampler] if self.sampler in FLOW_SCHEDULERS else SCHEDULERS[r.scheduler]
        loras, embeddings = self.addons.get("loras") or [], self.addons.get("embeddings") or []
        batched = r.batch_size > 1
        made = {
            "Sampler": spec.sampler, "Schedule type": spec.schedule, "Seed": self.seed,
            "Size": f"{self.size[0]}x{self.size[1]}", "Model hash": self.model.hash or None,
            "Model": self.model.name, "VAE hash": vae["sha256"][:10] if vae else None,
            "VAE": vae["name"] if vae else None, "Variation seed": self.variation_seed,
            "Batch pos": self.batch_pos if batched else None,
            "Wildcard prompt": self.template if self.template != self.variant else None,
            "Lora weights": ", ".join(f"{_alias(x['name'])}: {x['weight']:g}" for x in loras) or None,
            "Lora hashes": ", ".join(f"{_alias(x['name'])}: {x['sha256']}" for x in loras) or None,
            "TI hashes": ", ".join(f"{_bare(x['name'])}: {x['sha256']}" for x in embeddings) or None,
        }
        written = {f.infotext.key: f.written(r) for f in request_fields() if f.infotext and f.infotext.write
                   and (f.families is None or self.model.arch in f.families)}
        return {**{key: made.get(key, written.get(key)) for key in INFOTEXT_ORDER},
                **{key: value for key, value in written.items() if key not in INFOTEXT_ORDER},
                **control_infotext(self.addons.get("controlnet") or []),
                "Version": f"studio {__version__}"}

    def parameters(self) -> str:
        fields = self.a1111_fields()
        version = fields.pop("Version")
        fields.update(self.request.recipe)       # a composing tool's keys (hires fix) over the engine's
        return format_parameters(self.prompt, self.negative, {**fields, "Version": version})

    # -- the studio's own record ---------------------------------------------------------------------
    def studio_json(self) -> dict[str, Any]:
        """Everything needed to make the image again; strict JSON (no NaN or Infinity)."""
        r = self.request
        return strict_json({
            "format": 1, "mode": r.mode, "request": r.fields(),
            "prompt": self.prompt, "negative_prompt": self.negative, "seed": self.seed,
            "variation_seed": self.variation_seed,
            "batch_number": self.batch_number, "batch_pos": self.batch_pos,
            "width": self.size[0], "height": self.size[1], "generated_size": list(self.generated_size),
            "model": vars(self.model).copy(),
            "scheduler": {"name": self.sampler or r.scheduler, "class": self.scheduler_class,
                          "config": self.scheduler_config},
            "device": self.device, "dtype": self.dtype,
            "generator": "torch.Generator('cpu') per image, seeded with `seed`",
            "versions": self.versions,
            "input_image_sha256": array_sha256(r.image), "mask_sha256": array_sha256(r.mask),
            "references": [{"name": n, "sha256": h} for n, h in self.references],
            "reference_strength": r.reference_strength if self.references else 0.0,
            "notes": list(self.notes),
            "parsed": {"variant": self.variant, "variant_negative": self.variant_negative,
                       "prompt": self.prompt, "negative_prompt": self.negative,
                       "moved_to_negative": self.moved_negatives,
                       "lora_tags": [list(t) for t in self.lora_tags], "schedule": self.schedule},
            **self.addons,
        })


def control_infotext(units: list[dict]) -> dict[str, str]:
    """`ControlNet 0: "Module: canny, Model: name [hash], Weight: 1, ..."`, as sd-webui-controlnet
    writes each unit (its labels, its names of the modes)."""
    out = {}
    for i, u in enumerate(units):
        parts = {"Module": u["module"], "Model": u["title"], "Weight": f"{u['weight']:g}",
                 "Resize Mode": _title(RESIZE_MODES, u["resize_mode"]), "Processor Res": u["processor_res"],
                 "Threshold A": f"{u['threshold_a']:g}", "Threshold B": f"{u['threshold_b']:g}",
                 "Guidance Start": f"{u['start']:g}", "Guidance End": f"{u['end']:g}",
                 "Pixel Perfect": u["pixel_perfect"], "Control Mode": _title(CONTROL_MODES, u["control_mode"])}
        if u["control_type"]:
            parts["Control Type"] = u["control_type"]
        out[f"ControlNet {i}"] = ", ".join(f"{k}: {v}" for k, v in parts.items())
    return out


def _title(table: tuple, name: str) -> str:
    return next(title for n, title, _ in table if n == name)


def _alias(name: str) -> str:
    """A LoRA as A1111 names it in hashes: the file's stem, without ':' and ','."""
    return _bare(Path(name).stem)


def _bare(name: str) -> str:
    """A name as it can stand in a "name: hash, name: hash" value: without ':' and ','. Embedding
    names are already what the prompt says (`verybadimagenegative_v1.3`): no stem is taken."""
    return name.replace(":", "").replace(",", "")


def array_sha256(array: np.ndarray | None) -> str | None:
    """Identifies an input image: its pixels, shape and dtype."""
    if array is None:
        return None
    return hashlib.sha256(np.ascontiguousarray(array).tobytes() + repr((array.shape, str(array.dtype))).encode()).hexdigest()
