"""What a model source is, read from its configs or tensors without loading weights: the
embedded model (or the untrained placeholder while it is missing), a diffusers folder, a single
checkpoint file, or a hub id in the local cache; and `read_pipeline`, which reads a resolved
source's weights (the one place that knows the download rules and the loaders' failures)."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path

from studio.config import EMBEDDED_MODEL, ROOT
from studio.prompts.vocabulary import read_vocabulary
from studio.errors import ModelLoadError
from studio.families import PIPELINE_CLASSES
from studio.models.fewstep import FewStep, embedded_student, from_name, from_unet_config

log = logging.getLogger(__name__)

INPAINT_FOLDER = "inpaint-unet"   # a model folder's own 9-channel UNet (embedded/inpaint.py)
STUDENT_FOLDER = "lcm-unet"       # the embedded model's few-step student (embedded/distill.py)
STUDENT = "embedded-shapes-4step"  # its name in the model list, the API and pictures' "Model:"
CONTROL_FOLDER = "controlnet-scribble"   # the embedded model's own scribble ControlNet (embedded/controlnet.py)
CONTROL_NAME = "embedded-scribble"       # its name in the ControlNet model list
# what a model folder holds beside its own weights (not part of its hash): another model's UNet
# (the student) and the model's control models
ALTERNATE_UNETS = (STUDENT_FOLDER, CONTROL_FOLDER)

PLACEHOLDER_NOTICE = (
    "The embedded default model is not in assets/ yet, so the studio runs an UNTRAINED tiny "
    "placeholder: every tab works, but images are noise. Start with --model PATH_OR_HUB_ID to use "
    "a real Stable Diffusion model."
)


@dataclass(frozen=True)
class ModelInfo:
    """What the UI and the metadata say about a model, read from its configs (no weights)."""
    source: str           # what the user gave (path or hub id)
    name: str             # short display name, also A1111's "Model:" field
    kind: str             # embedded | placeholder | folder | file | hub
    family: str           # SD 1.x | SD 2.x | SDXL | tiny SD-format
    native_size: int      # pixels per side the model was trained at
    in_channels: int      # 4, or 9 for a dedicated inpainting UNet
    notice: str = ""
    examples: tuple[str, ...] = ()   # prompts that work with it (the model's examples.txt)
    vocabulary: frozenset[str] = frozenset()   # the words it knows (vocabulary.txt), if it says
    knows: str = ""                  # what those words cover ("shapes, colours, ...")
    location: str = ""               # where to load it from: a folder, a file, or the hub id
    inpaint_unet: str = ""           # a 9-channel UNet that comes with the model (its subfolder)
    unet: str = ""                   # a UNet folder that replaces the model's own (the student)
    few_step: FewStep | None = None  # a few-step model: its sampler, steps and CFG
    arch: str = "sd"                 # its family's key in studio/families (sd | flux | sd3)
    own_modes: tuple[str, ...] = ()  # the only modes it serves, with its own pipeline (Flux Fill)
    variant: str = ""                # its row in studio/families' VARIANTS ("" for the UNet families)
    shift_by_size: bool = False      # its flow schedule shifts by picture size (Flux dev: `mu`)

    @property
    def inpaint_only(self) -> bool:
        return self.in_channels == 9 or self.own_modes == ("inpaint",)


def placeholder_dir() -> Path:
    return Path(os.environ.get("STUDIO_CACHE", ROOT / ".cache")) / "placeholder-model"


def _is_diffusers_folder(path: Path) -> bool:
    return (path / "model_index.json").is_file()


def looks_like_hub_id(text: str) -> bool:
    parts = text.split("/")
    return len(parts) == 2 and all(parts) and not text.startswith((".", "/", "~")) and "\\" not in text


def _config_reader(source: str, kind: str):
    """A function name -> parsed JSON of a file inside the model, without loading weights."""
    if kind == "hub":
        from huggingface_hub import try_to_load_from_cache

        def read(name: str) -> dict:
            found = try_to_load_from_cache(source, name)
            if not isinstance(found, str):
                return {}
            return json.loads(Path(found).read_text(encoding="utf-8"))
        return read

    def read_local(name: str) -> dict:
        f = Path(source) / name
        return json.loads(f.read_text(encoding="utf-8")) if f.is_file() else {}
    return read_local


def _family(unet: dict) -> str:
    cross = unet.get("cross_attention_dim")
    if unet.get("addition_embed_type") == "text_time" or cross == 2048:
        return "SDXL"
    if cross == 768:
        return "SD 1.x"
    if cross == 1024:
        return "SD 2.x"
    return "tiny SD-format"


def _describe_file(source: str, path: Path, allow_pickle: bool, prediction_type: str | None):
    from studio.families.files import GGUF, gguf_shapes, is_transformer_file
    from studio.models.checkpoints import SAFE_SUFFIXES, inspect, read_shapes

    if path.suffix.lower() in (*SAFE_SUFFIXES, GGUF):
        shapes = gguf_shapes(path) if path.suffix.lower() == GGUF else read_shapes(path)
        if is_transformer_file(shapes):
            return _describe_transformer_file(source, path, shapes)
        if path.suffix.lower() == GGUF:
            raise ModelLoadError(f"{path.name}: a GGUF file the studio reads holds a Flux.1, SD 3.5 or Z-Image "
                                 "transformer; this one holds none of them.")

    ck = inspect(path, allow_pickle=allow_pickle, prediction_type=prediction_type)
    info = ModelInfo(source=source, name=path.stem, kind="file", family=ck.family_name,
                     native_size=ck.native_size, in_channels=ck.configs["unet"]["in_channels"],
                     notice=" ".join(ck.notes), location=str(path), few_step=from_name(path.name))
    return info, ck


def describe(source: str, allow_pickle: bool = False, prediction_type: str | None = None) -> ModelInfo:
    """Resolve a model source and read what it is. Raises ModelLoadError if it cannot be found."""
    return resolve(source, allow_pickle, prediction_type)[0]


def student_available() -> bool:
    """Whether the embedded model ships its few-step student (assets/embedded-model/lcm-unet)."""
    return _is_diffusers_folder(EMBEDDED_MODEL) and (EMBEDDED_MODEL / STUDENT_FOLDER / "config.json").is_file()


def _student() -> ModelInfo:
    """The embedded model with its few-step student's UNet in place of its own."""
    if not student_available():
        raise ModelLoadError(f"{STUDENT} is not here: assets/embedded-model/{STUDENT_FOLDER} is missing "
                             "(python -m embedded.distill makes it).")
    teacher = resolve("")[0]
    record = json.loads((EMBEDDED_MODEL / STUDENT_FOLDER / "distillation.json").read_text(encoding="utf-8"))
    config = record.get("config", {})
    return replace(teacher, source=STUDENT, name=STUDENT, unet=str(EMBEDDED_MODEL / STUDENT_FOLDER),
                   inpaint_unet="", few_step=embedded_student(config.get("w_min", 2.0), config.get("w_max", 8.0)),
                   notice="The embedded model's few-step student (a consistency model distilled from the "
                          "teacher's ODE solutions): "
                          "a picture in 1-4 steps.")


def resolve(source: str, allow_pickle: bool = False, prediction_type: str | None = None):
    """(ModelInfo, Checkpoint or None): what `describe` says, plus a single file's inspection."""
    kind, path = "folder", source
    notice = ""
    if source == STUDENT:
        return _student(), None
    if not source:
        if _is_diffusers_folder(EMBEDDED_MODEL):
            kind, path = "embedded", str(EMBEDDED_MODEL)
            notice = ("The embedded default model: a tiny model of a world of coloured shapes, "
                      "for trying the studio offline.")
        else:
            kind, path = "placeholder", str(placeholder_dir())
            notice = PLACEHOLDER_NOTICE
    elif Path(source).expanduser().is_file():
        return _describe_file(source, Path(source).expanduser().resolve(), allow_pickle, prediction_type)
    elif Path(source).expanduser().exists():
        path = str(Path(source).expanduser().resolve())
        if not _is_diffusers_folder(Path(path)):
            raise ModelLoadError(f"{source} is not a diffusers model folder (it has no model_index.json) "
                                 "nor a checkpoint file.")
    elif looks_like_hub_id(source):
        kind = "hub"
    else:
        raise ModelLoadError(f"Model {source!r} was not found: it is neither an existing folder nor a "
                             "hub id like 'owner/name'.")
    read = _config_reader(path, kind)
    try:
        index = read("model_index.json")
        if index.get("_class_name") in PIPELINE_CLASSES:
            return _describe_transformer(source, path, kind, read, index), None
        unet = read("unet/config.json")
        vae = read("vae/config.json")
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"Could not read the configuration of {source or path}: {exc}") from None
    if kind == "placeholder" and not unet:
        unet, vae = {"sample_size": 16, "in_channels": 4}, {"block_out_channels": [1, 1, 1]}
    scale = 2 ** (len(vae.get("block_out_channels", [1, 1, 1, 1])) - 1)
    sample = unet.get("sample_size", 64)
    sample = sample[0] if isinstance(sample, (list, tuple)) else sample
    name = {"embedded": "embedded-shapes", "placeholder": "placeholder-untrained"}.get(
        kind, Path(path).name if kind == "folder" else source)
    few = from_unet_config(unet) or (from_name(name) if kind in ("folder", "hub") else None)
    examples_file = Path(path) / "examples.txt"
    examples = tuple(line.strip() for line in examples_file.read_text(encoding="utf-8").splitlines()
                     if line.strip()) if kind != "hub" and examples_file.is_file() else ()
    vocabulary, knows = read_vocabulary(path) if kind != "hub" else (frozenset(), "")
    return ModelInfo(source=source, name=name, kind=kind, family=_family(unet),
                     native_size=few.size if few and few.size else int(sample) * scale,
                     in_channels=int(unet.get("in_channels", 4)),
                     notice=notice, examples=examples, vocabulary=vocabulary, knows=knows,
                     location=source if kind == "hub" else str(Path(path).expanduser()),
                     inpaint_unet=_inpaint_unet(read, path, kind), few_step=few), None


def _describe_transformer(source: str, path: str, kind: str, read, index: dict) -> ModelInfo:
    """A transformer family's folder (Flux.1, SD 3.5): family and variant from the pipeline class
    and the transformer's config (studio/families)."""
    from studio.families import VARIANTS, model_label, variant_key

    transformer, vae = read("transformer/config.json"), read("vae/config.json")
    name = Path(path).name if kind == "folder" else source
    key = variant_key(index["_class_name"], transformer, name)
    variant = VARIANTS[key]
    vocabulary, knows = read_vocabulary(path) if kind != "hub" else (frozenset(), "")
    return ModelInfo(source=source, name=name, kind=kind, family=model_label(key, transformer),
                     native_size=int(vae.get("sample_size", 1024)),
                     in_channels=int(transformer.get("in_channels", 64)), vocabulary=vocabulary, knows=knows,
                     location=source if kind == "hub" else str(Path(path).expanduser()),
                     few_step=variant.defaults, arch=variant.family, own_modes=variant.own_modes, variant=key,
                     shift_by_size=bool(read("scheduler/scheduler_config.json").get("use_dynamic_shifting")))


def _describe_transformer_file(source: str, path: Path, shapes: dict):
    """A Flux.1, SD 3.5 or Z-Image single file (studio/families/files.py) and where its parts are."""
    from studio.families import VARIANTS
    from studio.families.files import inspect_file

    ck = inspect_file(path, shapes)
    variant = VARIANTS[ck.variant]
    info = ModelInfo(source=source, name=path.stem, kind="file", family=ck.label, native_size=1024,
                     in_channels=ck.configs["transformer"]["in_channels"], notice=" ".join(ck.notes),
                     location=str(path), few_step=variant.defaults, arch=ck.family, own_modes=variant.own_modes,
                     variant=ck.variant, shift_by_size=ck.variant != "FluxPipeline/schnell" and ck.family == "flux")
    return info, ck


def _inpaint_unet(read, path: str, kind: str) -> str:
    """The model's own inpainting UNet: a subfolder `inpaint-unet` with a 9-channel
    UNet2DConditionModel, as the embedded model's training writes (embedded/inpaint.py)."""
    if kind == "hub":
        return ""
    config = read(f"{INPAINT_FOLDER}/config.json")
    if config.get("in_channels") != 9:
        return ""
    return str(Path(path).expanduser() / INPAINT_FOLDER)


def read_pipeline(info: ModelInfo, checkpoint, dtype, allow_pickle: bool, allow_download: bool):
    """The weights of a resolved source as a diffusers pipeline, on the CPU: a single file through
    checkpoints.py, a folder or cached hub id offline; a hub id named with --model is downloaded
    only if it is missing and the hub is allowed. Every failure is a ModelLoadError that says why."""
    from diffusers import DiffusionPipeline

    path = info.location
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    kwargs = dict(dtype=dtype, safety_checker=None, requires_safety_checker=False)
    try:
        try:
            if info.kind == "file" and info.arch != "sd":
                from studio.families.files import load_dit
                pipe = load_dit(checkpoint, dtype)
            elif info.kind == "file":
                from studio.models.checkpoints import load_pipeline
                pipe = load_pipeline(checkpoint, dtype, allow_pickle)
            else:
                own = {"unet": _unet(info.unet, dtype)} if info.unet else {}
                pipe = DiffusionPipeline.from_pretrained(path, local_files_only=True, **own, **_left_out(info),
                                                         **kwargs)
        except (OSError, ValueError) as first:
            if info.kind != "hub":
                raise
            if not allow_download:
                raise ModelLoadError(
                    f"{info.source} is not in the local Hugging Face cache. The studio downloads "
                    f"only models named with --model at start: python app.py --model {info.source}") from first
            if offline:
                raise ModelLoadError(
                    f"{info.source} is not in the local Hugging Face cache "
                    f"({os.environ.get('HF_HUB_CACHE') or '~/.cache/huggingface/hub'}) and "
                    "HF_HUB_OFFLINE=1 forbids downloading it.") from first
            log.info("Downloading %s from the hub (asked for with --model)", info.source)
            pipe = DiffusionPipeline.from_pretrained(path, **kwargs)
    except ModelLoadError:
        raise
    except Exception as exc:  # noqa: BLE001 - any loader failure becomes a clear message
        hint = " (no network: downloads are impossible offline)" if "connect" in str(exc).lower() else ""
        raise ModelLoadError(f"Could not load model {info.source or info.name}: "
                             f"{type(exc).__name__}: {exc}{hint}") from exc
    return pipe


def _left_out(info: ModelInfo) -> dict:
    """Components a folder saved as absent (SD 3.5 without T5: `"text_encoder_3": [null, null]`),
    passed as None, which diffusers otherwise refuses."""
    if info.kind == "hub" or info.arch == "sd":
        return {}
    index = json.loads((Path(info.location) / "model_index.json").read_text(encoding="utf-8"))
    return {k: None for k, v in index.items() if isinstance(v, list) and v == [None, None]}


def _unet(folder: str, dtype):
    from diffusers import UNet2DConditionModel
    return UNet2DConditionModel.from_pretrained(folder, torch_dtype=dtype, local_files_only=True)
