"""What the REST API lists and the options it keeps: checkpoints with A1111's titles, LoRAs, VAEs,
embeddings, styles, samplers, and the settings REST callers share (`GET/POST /options`).

A checkpoint's title is A1111's "<name> [<sha256[:10]>]"; its hash shows once it is known (the
loaded model's always; others once hashed, so listing a folder of multi-GB files reads none).
Callers may name a checkpoint by title, name, file name, stem or hash, as A1111 accepts.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from studio.config import EMBEDDED_MODEL
from studio.errors import InvalidRequest
from studio.samplers import A1111_ALIASES, A1111_DEFAULT_SCHEDULE, SCHEDULERS
from studio.models.hashes import known_model_sha256, model_sha256
from studio.models.library import EMBEDDED
from studio.models.sources import STUDENT, STUDENT_FOLDER
from studio.models.upscalers import upscaler_names
from studio.requests import CLIP_SKIP_RANGE
from studio.serving.studio import Studio

AUTOMATIC = "Automatic"
QUICK_HASH_BYTES = 256 << 20      # hashed for a listing: well under a second


@dataclass(frozen=True)
class Checkpoint:
    choice: str          # the studio's name for it (what select_model takes)
    title: str
    model_name: str
    filename: str
    sha256: str | None

    def aliases(self) -> set[str]:
        names = {self.choice, self.title, self.model_name, self.filename, Path(self.filename).name,
                 Path(self.choice).stem}
        if self.sha256:
            names |= {self.sha256, self.sha256[:10], self.sha256[:8]}
        return {n.lower() for n in names if n}


def checkpoints(studio: Studio) -> list[Checkpoint]:
    out = []
    for choice in studio.model_choices():
        location = _location(studio, choice)
        current = choice == studio.current_choice()
        sha = (studio.known_model_sha256() if current else None) or _known_sha(location, _unet(choice))
        filename = "embedded-model" if choice == EMBEDDED else choice
        stem = Path(choice).stem if location is not None and location.is_file() else choice
        out.append(Checkpoint(choice, f"{choice} [{sha[:10]}]" if sha else choice,
                              stem.replace("/", "_").replace("\\", "_"), filename, sha))
    return out


def _location(studio: Studio, choice: str) -> Path | None:
    if choice in (EMBEDDED, STUDENT):
        return EMBEDDED_MODEL
    if choice in studio.names("checkpoints"):
        return studio.file_of("checkpoints", choice)
    kind, _, name = choice.partition("/")
    if kind == "diffusion_models" and name in studio.names(kind):
        return studio.file_of(kind, name)
    path = Path(choice)
    return path if path.exists() else None        # the --model source (a hub id: None)


def _unet(choice: str) -> Path | None:
    """The UNet that stands in for the folder's own (the embedded model's student)."""
    return EMBEDDED_MODEL / STUDENT_FOLDER if choice == STUDENT else None


def _known_sha(location: Path | None, unet: Path | None = None) -> str | None:
    """The hash when known, or quick to know (a small model is hashed now, so its title does not
    change later); a large one's once it was loaded (as A1111's titles gain their hash)."""
    if location is None:
        return None
    try:
        known = known_model_sha256(location, unet)
        if known is None and _weights_size(location) <= QUICK_HASH_BYTES:
            known = model_sha256(location, unet)
        return known
    except OSError:
        return None


def _weights_size(location: Path) -> int:
    files = [location] if location.is_file() else [p for p in location.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files)


def find_checkpoint(studio: Studio, text: Any) -> str:
    """The studio's name of the checkpoint `text` names (title, name, file, stem or hash)."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidRequest("sd_model_checkpoint must name a model (GET /sdapi/v1/sd-models lists them).")
    wanted = text.strip().lower()
    listed = checkpoints(studio)
    for entry in listed:
        if wanted in entry.aliases():
            return entry.choice
    bare = wanted.rsplit(" [", 1)[0]                   # a title whose hash was not known yet
    for entry in listed:
        if bare in entry.aliases():
            return entry.choice
    raise InvalidRequest(f"Model {text!r} not found. Known: {', '.join(e.title for e in listed)}.")


def sd_models(studio: Studio) -> list[dict]:
    return [{"title": c.title, "model_name": c.model_name, "hash": c.sha256[:10] if c.sha256 else None,
             "sha256": c.sha256, "filename": c.filename, "config": None} for c in checkpoints(studio)]


def current_checkpoint(studio: Studio) -> Checkpoint:
    current = studio.current_choice()
    return next((c for c in checkpoints(studio) if c.choice == current),
                Checkpoint(current, current, current, current, None))


# -- the options REST callers share -------------------------------------------------------------

OPTIONS_FILE = ".a1111-options.json"   # in the outputs folder: what REST callers set, kept across restarts
MAX_STORED = 64 << 10                  # bytes of it at most (a caller cannot fill the disk)
KEPT = ("sd_vae", "CLIP_stop_at_last_layers")   # acted on and kept; the model is the studio's own choice


@cache
def a1111_defaults() -> dict[str, Any]:
    """A1111's settings and defaults (a1111_options.json, read from its shared_options.py)."""
    return json.loads(Path(__file__).with_name("a1111_options.json").read_text(encoding="utf-8"))["defaults"]


class Options:
    """A1111's settings as REST callers see them: every key of A1111's table with its default,
    what callers posted (kept in the outputs folder across restarts, unknown keys too), and the
    studio's own values. The model is the studio's (switching it here is switching it for
    everyone, as in the UI's picker); the VAE and clip skip are the defaults of REST requests;
    keys that state what the studio does (PNG info on, no grid...) stay as they are."""

    def __init__(self, studio: Studio) -> None:
        self.studio = studio
        self.vae: str | None = None
        self.clip_skip = 1
        self._lock = threading.Lock()
        self._file = studio.outputs_root() / OPTIONS_FILE
        self.stored = self._read()
        for key in KEPT:
            if key in self.stored:
                try:
                    SETTERS[key](self, self.stored[key])
                except InvalidRequest:           # a VAE file removed since: the default again
                    self.stored.pop(key)

    def _own(self) -> dict[str, Any]:
        current = current_checkpoint(self.studio)
        return {"sd_model_checkpoint": current.title, "sd_checkpoint_hash": current.sha256,
                "sd_vae": self.vae or AUTOMATIC, "CLIP_stop_at_last_layers": self.clip_skip,
                "samples_format": "png", "enable_pnginfo": True, "save_images_add_number": True,
                "sd_checkpoints_limit": 1, "return_grid": False, "show_progress_every_n_steps": -1}

    def get(self) -> dict[str, Any]:
        return {**a1111_defaults(), **self.stored, **self._own()}

    def set(self, body: Any) -> None:
        """Apply the keys that changed (clients post back the whole dict GET returned): the ones
        the studio acts on take effect, its own statements stay, every other key is kept. A model
        switch is done before this returns."""
        if not isinstance(body, dict):
            raise InvalidRequest("POST /options takes a JSON object of option names and values.")
        with self._lock:
            now, own = self.get(), self._own()
            changed = {k: v for k, v in body.items() if k not in now or v != now[k]}
            kept = dict(self.stored)
            for key, value in changed.items():
                if key in SETTERS:
                    SETTERS[key](self, value)
                    if key in KEPT:
                        kept[key] = value
                elif key not in own:
                    kept[key] = value
            if kept != self.stored:
                self._write(kept)
                self.stored = kept

    def _read(self) -> dict[str, Any]:
        try:
            stored = json.loads(self._file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return stored if isinstance(stored, dict) else {}

    def _write(self, kept: dict[str, Any]) -> None:
        try:
            text = json.dumps(kept, indent=1, allow_nan=False, sort_keys=True)
        except ValueError:
            raise InvalidRequest("Options are plain JSON values: no NaN or Infinity.") from None
        if len(text.encode()) > MAX_STORED:
            raise InvalidRequest(f"These options would take {len(text.encode()):,} bytes; the studio keeps at most "
                                 f"{MAX_STORED:,} of callers' options.")
        self._file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._file.with_name(f".{self._file.name}.{threading.get_ident()}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, self._file)

    def vae_name(self, value: Any) -> str | None:
        if value in (None, "", AUTOMATIC, "None"):
            return None
        names = self.studio.names("vae")
        match = next((n for n in names if value in (n, Path(n).stem, Path(n).name)), None)
        if match is None:
            raise InvalidRequest(f"Unknown VAE {value!r} (GET /sdapi/v1/sd-vae lists them).")
        return match

    def _set_model(self, value: Any) -> None:
        self.studio.select_model(find_checkpoint(self.studio, value))

    def _set_vae(self, value: Any) -> None:
        self.vae = self.vae_name(value)

    def _set_clip_skip(self, value: Any) -> None:
        self.clip_skip = clip_skip(value)

    def _set_format(self, value: Any) -> None:
        if str(value).lower() != "png":
            raise InvalidRequest(f"samples_format {value!r}: this studio saves and sends PNG only.")


def clip_skip(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise InvalidRequest(f"CLIP_stop_at_last_layers must be a whole number, got {value!r}.")
    try:
        number = int(float(value))
    except (ValueError, OverflowError):     # not a number, infinite, or too many digits for a float
        raise InvalidRequest(f"CLIP_stop_at_last_layers must be a whole number from {CLIP_SKIP_RANGE[0]} to "
                             f"{CLIP_SKIP_RANGE[1]}.") from None
    if not CLIP_SKIP_RANGE[0] <= number <= CLIP_SKIP_RANGE[1]:
        raise InvalidRequest(f"CLIP_stop_at_last_layers must be between {CLIP_SKIP_RANGE[0]} and "
                             f"{CLIP_SKIP_RANGE[1]}, got {number}.")
    return number


SETTERS = {"sd_model_checkpoint": Options._set_model, "sd_vae": Options._set_vae,
           "CLIP_stop_at_last_layers": Options._set_clip_skip, "samples_format": Options._set_format}


# -- listings -------------------------------------------------------------------------------------

def samplers() -> list[dict]:
    labels = dict.fromkeys(spec.sampler for spec in SCHEDULERS.values())
    return [{"name": label, "aliases": list(A1111_ALIASES.get(label, ())),
             "options": {"scheduler": A1111_DEFAULT_SCHEDULE[label].lower()} if label in A1111_DEFAULT_SCHEDULE else {}}
            for label in labels]


def schedulers() -> list[dict]:
    """The schedule types the studio has (others fall back, with a note in the answer's info)."""
    return [{"name": "automatic", "label": "Automatic", "aliases": None, "default_rho": -1, "need_inner_model": False},
            {"name": "uniform", "label": "Uniform", "aliases": None, "default_rho": -1, "need_inner_model": True},
            {"name": "karras", "label": "Karras", "aliases": None, "default_rho": 7.0, "need_inner_model": False}]


def loras(studio: Studio) -> list[dict]:
    """A1111's entries, with the model family each was made for (read from its keys)."""
    return [{"name": Path(n).stem, "alias": Path(n).stem, "path": n, "metadata": {}, "family": family}
            for n, family in studio.lora_families()]


def sd_vae(studio: Studio) -> list[dict]:
    return [{"model_name": Path(n).stem, "filename": n} for n in studio.names("vae")]


def embeddings(studio: Studio) -> dict:
    """Embedding files by the name a prompt uses, with their vector width where the file's header
    says it (safetensors; .pt files are not unpickled for a listing)."""
    loaded = {}
    for name in studio.names("embeddings"):
        path = studio.file_of("embeddings", name)
        width, count = _safetensors_shape(path)
        loaded[Path(name).stem] = {"step": None, "sd_checkpoint": None, "sd_checkpoint_name": None,
                                   "shape": width, "vectors": count}
    return {"loaded": loaded, "skipped": {}}


def _safetensors_shape(path: Path) -> tuple[int | None, int | None]:
    """(vector width, vectors) of a one-tensor .safetensors embedding, from its header only."""
    if path.suffix.lower() != ".safetensors":
        return None, None
    from safetensors import safe_open
    try:
        with safe_open(str(path), framework="numpy") as f:
            keys = list(f.keys())
            shape = f.get_slice(keys[0]).get_shape() if len(keys) == 1 else None
    except Exception:  # noqa: BLE001 - a damaged file is listed without its shape
        return None, None
    return (shape[-1], shape[0] if len(shape) > 1 else 1) if shape else (None, None)


def prompt_styles(studio: Studio) -> list[dict]:
    return [{"name": s.name, "prompt": s.prompt, "negative_prompt": s.negative}
            for s in studio.styles().values()]


def upscalers(studio: Studio) -> list[dict]:
    """None, the built-in ones, then the models in models/upscalers when spandrel can run them
    (by file name; the scale a model has is known once it is loaded, so 4, the usual, is said)."""
    from studio.models.arches import available
    files = studio.names("upscalers") if available() else []
    return [{"name": name, "model_name": None if name in ("None", "Lanczos", "Nearest") else name,
             "model_path": None, "model_url": None, "scale": 4}
            for name in ("None", *upscaler_names(files))]


def face_restorers(studio: Studio) -> list[dict]:
    """The files in models/face_restorers when spandrel can run them and a face detector is there
    to find the faces (A1111's shape: name and folder)."""
    from studio.models.arches import available
    if not (available() and studio.names("detectors")):
        return []
    return [{"name": name, "cmd_dir": str(studio.file_of("face_restorers", name).parent)}
            for name in studio.names("face_restorers")]


def sd_upscale_info(studio: Studio) -> dict:
    """/script-info's entry of the SD upscale script (A1111's shape): its script_args in order,
    the numbers' ranges and defaults read from the field table (studio/requests/sd_upscale.py)."""
    from studio.requests.sd_upscale import sd_upscale_fields
    from studio.upscale.sd_upscale import SCRIPT
    declared = {f.name: f for f in sd_upscale_fields()}

    def arg(label: str, value=None, name: str | None = None, choices: list | None = None) -> dict:
        kind = declared[name].kind if name else None
        return {"label": label, "value": declared[name].default if name else value, "choices": choices,
                "minimum": getattr(kind, "low", None), "maximum": getattr(kind, "high", None),
                "step": getattr(kind, "step", None)}
    return {"name": SCRIPT, "is_alwayson": False, "is_img2img": True,
            "args": [arg("", ""), arg("Tile overlap", name="sd_upscale_overlap"),
                     arg("Upscaler", "None", choices=[u["name"] for u in upscalers(studio)]),
                     arg("Scale Factor", name="sd_upscale_scale")]}
