"""PNG Info: what made a picture, read from whichever tool wrote it.

Readers, tried in order (a table of functions, each returning None when its chunk is absent):
the studio's own JSON record, AUTOMATIC1111's `parameters` text (PNG chunk, or EXIF UserComment in
a JPEG/WebP), ComfyUI's `prompt` graph, InvokeAI's `invokeai_metadata` (3.x+) and `sd-metadata`
(2.x). Each gives the prompt, the negative prompt, the settings as shown, and the studio request
fields to fill a tab with. The PNG Info tab and `POST /sdapi/v1/png-info` both use `read_info`.
Nothing read here is evaluated: chunks are text, parsed as JSON or A1111's "Key: value" line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable

from PIL import Image

from studio.samplers import SCHEDULERS, from_a1111
from studio.outputs.metadata import JSON_KEY, PARAMETERS_KEY, format_parameters, parse_parameters
from studio.requests import request_fields
from studio.fields import Number
from studio.requests.hires import hires_fields
from studio.requests.tools import RECORDED_BY_LABEL

# the finishing tools' fields (SD upscale, Restore faces, the detailer), each recorded under its label
TOOL_READ = tuple(f for declared in RECORDED_BY_LABEL for f in declared())
# the fields a picture may set in a tab: those a tab shows but pictures (the model is shown, not
# switched; reference pictures are not in the metadata), the request's, the hires fix's and the tools'
SENDABLE = tuple(f.name for f in (*request_fields(), *hires_fields(), *TOOL_READ)
                 if f.group and f.name not in ("references",))
# the request fields read from A1111's infotext by their key (Sampler and Size are read apart)
A1111_FIELDS = tuple(f for f in request_fields() if f.infotext is not None)
HIRES_READ = ("hires", "hires_scale", "hires_steps", "hires_strength", "hires_upscaler", "steps", "width", "height")
MAX_CHUNK_CHARS = 200_000      # a text chunk longer than this is shown cut, never parsed


@dataclass
class PictureInfo:
    source: str = ""                                        # who wrote it; "" = nothing found
    prompt: str = ""
    negative_prompt: str = ""
    settings: dict[str, str] = field(default_factory=dict)  # as the picture says (A1111's keys)
    fields: dict[str, Any] = field(default_factory=dict)    # studio request fields (SENDABLE)
    infotext: str = ""                                      # A1111's parameters text
    items: dict[str, str] = field(default_factory=dict)     # the other text chunks
    model: str = ""

    def a1111_parameters(self) -> dict[str, Any]:
        """As A1111's png-info answers `parameters`: Prompt, Negative prompt, each setting, and
        Size split into Size-1 and Size-2."""
        out: dict[str, Any] = {"Prompt": self.prompt, "Negative prompt": self.negative_prompt, **self.settings}
        width, _, height = str(self.settings.get("Size", "")).partition("x")
        if width.isdigit() and height.isdigit():
            out["Size-1"], out["Size-2"] = int(width), int(height)
        return out


def text_chunks(image: Image.Image) -> dict[str, str]:
    """Every text chunk (PNG tEXt/iTXt/zTXt, also after the image data) and, for JPEG/WebP, A1111's
    EXIF UserComment as `parameters`."""
    chunks = {**image.info, **(getattr(image, "text", None) or {})} if image.format == "PNG" else dict(image.info)
    out = {str(k): v for k, v in chunks.items() if isinstance(v, str)}
    comment = _exif_user_comment(image)
    if comment and PARAMETERS_KEY not in out:
        out[PARAMETERS_KEY] = comment
    return out


def _exif_user_comment(image: Image.Image) -> str:
    """EXIF UserComment (A1111 writes its infotext there in JPEG and WebP): 8 bytes saying the
    encoding, then the text."""
    try:
        raw = image.getexif().get_ifd(0x8769).get(0x9286)
    except Exception:  # noqa: BLE001 - damaged EXIF is no metadata
        return ""
    if isinstance(raw, str):
        return raw
    if not isinstance(raw, bytes) or len(raw) < 8:
        return ""
    head, body = raw[:8], raw[8:]
    if head.startswith(b"UNICODE"):
        big = body[:2] != b"\x00\x00" and body[:1] == b"\x00"
        return body.decode("utf-16-be" if big else "utf-16-le", errors="replace").rstrip("\x00")
    return body.decode("utf-8", errors="replace").rstrip("\x00")


# -- the readers ----------------------------------------------------------------------------------

def _from_studio(chunks: dict[str, str]) -> PictureInfo | None:
    record = _json(chunks.get(JSON_KEY))
    if not isinstance(record, dict) or not isinstance(record.get("request"), dict):
        return None
    request = record["request"]
    info = _from_a1111(chunks) or PictureInfo()
    fields = {k: request[k] for k in SENDABLE if k in request}
    if record.get("variation_seed") is not None:
        fields["variation_seed"] = record["variation_seed"]
    fields.update(seed=record.get("seed", fields.get("seed")), width=record.get("width", fields.get("width")),
                  height=record.get("height", fields.get("height")))
    if info.fields.get("hires"):       # a hires fix's second pass: send the whole generation
        fields.update({k: info.fields[k] for k in HIRES_READ if k in info.fields})
        fields.pop("strength", None)
    fields.update({f.name: info.fields[f.name] for f in TOOL_READ if f.name in info.fields})
    info.source, info.fields = "studio", fields
    info.prompt, info.negative_prompt = str(request.get("prompt", "")), str(request.get("negative_prompt", ""))
    info.model = str((record.get("model") or {}).get("name", ""))
    return info


def _from_a1111(chunks: dict[str, str]) -> PictureInfo | None:
    text = chunks.get(PARAMETERS_KEY)
    if not text:
        return None
    prompt, negative, settings = parse_parameters(text)
    fields: dict[str, Any] = {"prompt": prompt, "negative_prompt": negative}
    if "Sampler" in settings:
        fields["scheduler"] = from_a1111(settings["Sampler"], settings.get("Schedule type"))[0]
    for f in A1111_FIELDS:
        if f.infotext.key in settings:
            value = f.read_infotext(settings[f.infotext.key])
            if value is not None:
                fields[f.name] = value
    width, _, height = settings.get("Size", "").partition("x")
    for name, value in (("width", width), ("height", height)):
        if value.strip().isdigit():
            fields[name] = int(value)
    _hires_fields(settings, fields)
    _tool_fields(settings, fields)
    return PictureInfo("AUTOMATIC1111", prompt, negative, settings, fields, text, model=settings.get("Model", ""))


def _tool_fields(settings: dict[str, str], fields: dict[str, Any]) -> None:
    """The finishing tools' keys: a tool whose keys a picture has is switched on with them."""
    for declared in RECORDED_BY_LABEL:
        switch, *rest = declared()
        got = {f.name: f.read_infotext(settings[f.label]) if isinstance(f.kind, Number) else settings[f.label]
               for f in rest if f.label in settings}
        got = {name: value for name, value in got.items() if value is not None}
        if got:
            fields.update({switch.name: True, **got})


def _hires_fields(settings: dict[str, str], fields: dict[str, Any]) -> None:
    """A1111's hires keys: the first pass's size is the saved size over the upscale factor."""
    scale = _number(settings.get("Hires upscale", ""), float)
    if not scale or scale <= 0:
        return
    fields.update(hires=True, hires_scale=scale, hires_upscaler=settings.get("Hires upscaler", "Lanczos"))
    steps = _number(settings.get("Hires steps", ""), int)
    if steps is not None:
        fields["hires_steps"] = steps
    if "strength" in fields:
        fields["hires_strength"] = fields.pop("strength")
    for side in ("width", "height"):
        if side in fields:
            fields[side] = max(64, round(fields[side] / scale / 8) * 8)


COMFY_SAMPLERS = {"euler": "Euler", "euler_ancestral": "Euler a", "heun": "Heun", "dpm_2": "DPM2",
                  "dpm_2_ancestral": "DPM2 a", "lms": "LMS", "dpmpp_2m": "DPM++ 2M", "dpmpp_sde": "DPM++ SDE",
                  "dpmpp_2m_sde": "DPM++ 2M SDE", "ddim": "DDIM", "uni_pc": "UniPC", "lcm": "LCM", "deis": "DEIS"}
COMFY_SAMPLER_NODES = ("KSampler", "KSamplerAdvanced")


def _from_comfyui(chunks: dict[str, str]) -> PictureInfo | None:
    graph = _json(chunks.get("prompt"))
    if not isinstance(graph, dict):
        return None
    nodes = {k: v for k, v in graph.items() if isinstance(v, dict) and isinstance(v.get("inputs"), dict)}
    sampler = next((n["inputs"] for n in nodes.values() if n.get("class_type") in COMFY_SAMPLER_NODES), None)
    if sampler is None:
        return None
    prompt, negative = _comfy_text(nodes, sampler.get("positive")), _comfy_text(nodes, sampler.get("negative"))
    label = COMFY_SAMPLERS.get(str(sampler.get("sampler_name", "")), str(sampler.get("sampler_name", "")))
    schedule = str(sampler.get("scheduler", ""))
    settings = {"Steps": sampler.get("steps"), "Sampler": label, "Schedule type": schedule,
                "CFG scale": sampler.get("cfg"), "Seed": sampler.get("seed", sampler.get("noise_seed")),
                "Denoising strength": sampler.get("denoise")}
    latent = _comfy_node(nodes, sampler.get("latent_image"))
    if latent and latent.get("class_type") == "EmptyLatentImage":
        settings["Size"] = f"{latent['inputs'].get('width')}x{latent['inputs'].get('height')}"
    loader = next((n["inputs"] for n in nodes.values() if n.get("class_type") == "CheckpointLoaderSimple"), {})
    settings["Model"] = loader.get("ckpt_name")
    return _made("ComfyUI", prompt, negative, settings, schedule)


def _comfy_node(nodes: dict, link: Any) -> dict | None:
    """The node a ComfyUI input links to ([node id, output index])."""
    if isinstance(link, list) and link and str(link[0]) in nodes:
        return nodes[str(link[0])]
    return None


def _comfy_text(nodes: dict, link: Any, depth: int = 0) -> str:
    """The text of a CLIPTextEncode (or any node with a `text` input), following links a few deep."""
    node = _comfy_node(nodes, link)
    if node is None or depth > 4:
        return ""
    text = node["inputs"].get("text", node["inputs"].get("text_g", ""))
    if isinstance(text, list):
        return _comfy_text(nodes, text, depth + 1)
    return str(text)


INVOKE_SCHEDULERS = {"euler": ("Euler", ""), "euler_a": ("Euler a", ""), "euler_k": ("Euler", "Karras"),
                     "dpmpp_2m": ("DPM++ 2M", "Uniform"), "dpmpp_2m_k": ("DPM++ 2M", "Karras"),
                     "dpmpp_2m_sde": ("DPM++ 2M SDE", "Uniform"), "dpmpp_2m_sde_k": ("DPM++ 2M SDE", "Karras"),
                     "dpmpp_sde": ("DPM++ SDE", ""), "dpmpp_sde_k": ("DPM++ SDE", "Karras"),
                     "ddim": ("DDIM", ""), "pndm": ("PLMS", ""), "lms": ("LMS", ""), "lms_k": ("LMS", "Karras"),
                     "heun": ("Heun", ""), "kdpm_2": ("DPM2", "Uniform"), "kdpm_2_a": ("DPM2 a", "Uniform"),
                     "unipc": ("UniPC", ""), "deis": ("DEIS", ""), "lcm": ("LCM", "")}


def _from_invokeai(chunks: dict[str, str]) -> PictureInfo | None:
    data = _json(chunks.get("invokeai_metadata"))
    if isinstance(data, dict):
        label, schedule = INVOKE_SCHEDULERS.get(str(data.get("scheduler", "")), (str(data.get("scheduler", "")), ""))
        model = data.get("model")
        settings = {"Steps": data.get("steps"), "Sampler": label, "Schedule type": schedule,
                    "CFG scale": data.get("cfg_scale"), "Seed": data.get("seed"),
                    "Size": f"{data.get('width')}x{data.get('height')}",
                    "Denoising strength": data.get("strength"),
                    "Model": model.get("name") if isinstance(model, dict) else model}
        return _made("InvokeAI", str(data.get("positive_prompt", "")), str(data.get("negative_prompt", "")),
                     settings, schedule)
    old = _json(chunks.get("sd-metadata"))            # InvokeAI 2.x
    image = old.get("image") if isinstance(old, dict) else None
    if not isinstance(image, dict):
        return None
    prompt = image.get("prompt")
    if isinstance(prompt, list):
        prompt = " ".join(str(p.get("prompt", "")) for p in prompt if isinstance(p, dict))
    positive, negative = _invoke2_split(str(prompt or ""))
    settings = {"Steps": image.get("steps"), "Sampler": image.get("sampler"), "CFG scale": image.get("cfg_scale"),
                "Seed": image.get("seed"), "Size": f"{image.get('width')}x{image.get('height')}",
                "Denoising strength": image.get("strength"), "Model": old.get("model_weights")}
    return _made("InvokeAI", positive, negative, settings, "")


def _invoke2_split(prompt: str) -> tuple[str, str]:
    """InvokeAI 2.x wrote negatives in brackets inside the prompt: "a cat [blurry, dog]"."""
    negatives, kept, depth, current = [], [], 0, []
    for ch in prompt:
        if ch == "[":
            depth += 1
            if depth == 1:
                continue
        elif ch == "]" and depth:
            depth -= 1
            if depth == 0:
                negatives.append("".join(current).strip())
                current = []
                continue
        (current if depth else kept).append(ch)
    return " ".join("".join(kept).split()), ", ".join(n for n in negatives if n)


def _made(source: str, prompt: str, negative: str, settings: dict[str, Any], schedule: str) -> PictureInfo:
    """A PictureInfo from another tool's settings: shown as A1111 would write them, with the
    studio fields a tab takes."""
    shown = {k: str(v) for k, v in settings.items() if v not in (None, "", "NonexNone")}
    a1111 = {**shown, "Schedule type": None} if not schedule else shown
    info = _from_a1111({PARAMETERS_KEY: format_parameters(prompt, negative, a1111)}) or PictureInfo()
    if "Sampler" in shown:
        info.fields["scheduler"] = from_a1111(shown["Sampler"], schedule)[0]
    info.source, info.settings = source, shown
    return info


READERS: tuple[Callable[[dict[str, str]], PictureInfo | None], ...] = (
    _from_studio, _from_a1111, _from_comfyui, _from_invokeai)


def read_info(image: Image.Image) -> PictureInfo:
    """What made this picture, from the first reader that finds its chunk; the other text chunks
    are kept in `items`. A picture without any gives an empty PictureInfo (source "")."""
    chunks = {k: v for k, v in text_chunks(image).items() if len(v) <= MAX_CHUNK_CHARS}
    info = next((found for read in READERS if (found := _safe(read, chunks)) is not None), PictureInfo())
    info.items = {k: v for k, v in chunks.items() if k not in (PARAMETERS_KEY,)}
    info.fields = {k: v for k, v in info.fields.items() if k in SENDABLE and v is not None}
    if info.fields.get("scheduler") not in SCHEDULERS:
        info.fields.pop("scheduler", None)
    return info


def _safe(read: Callable, chunks: dict[str, str]) -> PictureInfo | None:
    """A reader that meets a chunk it cannot make sense of finds nothing (the next one tries)."""
    try:
        return read(chunks)
    except (ValueError, TypeError, KeyError, AttributeError):
        return None


def _json(text: str | None) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except (ValueError, RecursionError):     # not JSON, or nested too deep to be metadata
        return None


def _number(text: str, kind: type) -> float | int | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    if value != value or value in (float("inf"), float("-inf")):
        return None
    return int(value) if kind is int and value == int(value) else (value if kind is float else None)
