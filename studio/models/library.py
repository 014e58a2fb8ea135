"""The models folder: what an artist put in models/checkpoints, loras, vae, embeddings,
ip-adapter, upscalers, controlnet, face_restorers and detectors (and what the studio ships: the
embedded model's scribble ControlNet, BUILT_IN).

Scanned at start and on the UI's refresh button. Anything typed into the UI or sent through the
API names an entry of this library (or a hub id, read from the local cache only); a path is never
taken from a request, so nothing outside the configured folders can be read, whatever `..`,
absolute path or symlink is sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from studio.config import EMBEDDED_MODEL
from studio.errors import InvalidRequest
from studio.models.sources import CONTROL_FOLDER, CONTROL_NAME

KINDS = ("checkpoints", "diffusion_models", "text_encoders", "loras", "vae", "embeddings", "ip-adapter", "upscalers",
         "controlnet", "face_restorers", "detectors")
# ComfyUI's folders: transformers alone (Flux.1, SD 3.5) in diffusion_models, listed as models
# beside the checkpoints; their CLIP and T5 files in text_encoders (studio/families/files.py)
MODEL_KINDS = ("checkpoints", "diffusion_models")
# a kind whose diffusers folders are entries (the file that marks one)
FOLDER_MARKS = {"checkpoints": "model_index.json", "diffusion_models": "model_index.json", "controlnet": "config.json"}
WEIGHT_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
EMBEDDED = "embedded (shape world)"
# what the studio ships, listed beside the user's files (kind -> name -> folder) when it is there
BUILT_IN = {"controlnet": {CONTROL_NAME: EMBEDDED_MODEL / CONTROL_FOLDER}}


@dataclass(frozen=True)
class Entry:
    kind: str
    name: str        # relative to the kind's folder, with forward slashes: "sd15/dreamy.safetensors"
    path: Path


class ModelLibrary:
    def __init__(self, root: Path, allow_pickle: bool = False):
        self.root = Path(root)
        self.allow_pickle = allow_pickle
        self._entries: dict[str, dict[str, Entry]] = {k: {} for k in KINDS}
        self.scan()

    def folder(self, kind: str) -> Path:
        return self.root / kind

    def scan(self) -> dict[str, list[str]]:
        """Re-read the folders; returns kind -> sorted names."""
        pickles = WEIGHT_SUFFIXES + (PICKLE_SUFFIXES if self.allow_pickle else ())
        for kind in KINDS:
            # Embeddings are mostly A1111 .pt files of a few vectors; they are read with torch's
            # weights-only unpickler, which refuses anything but tensors and plain data.
            # Upscalers (ESRGAN and kin) are mostly .pth state dicts: read the same way (never .pt,
            # which may be TorchScript, i.e. code).
            # Face restorers (GFPGAN and kin) likewise. Detectors are OpenCV's ONNX graphs (data, run
            # by OpenCV), and YOLO .pt pickles (ultralytics unpickles its classes) with allow_pickle.
            suffixes = {"embeddings": WEIGHT_SUFFIXES + (".pt", ".bin"), "upscalers": WEIGHT_SUFFIXES + (".pth",),
                        "face_restorers": WEIGHT_SUFFIXES + (".pth",),
                        "detectors": (".onnx",) + ((".pt",) if self.allow_pickle else ()),
                        "checkpoints": pickles + (".gguf",), "diffusion_models": pickles + (".gguf",)}.get(kind, pickles)
            base = self.folder(kind)
            found: dict[str, Entry] = {}
            if base.is_dir():
                base_real = base.resolve()
                for path in sorted(base.rglob("*")):
                    real = path.resolve()
                    if not real.is_relative_to(base_real):
                        continue        # a symlink leading out of the folder is not offered
                    name = path.relative_to(base).as_posix()
                    mark = FOLDER_MARKS.get(kind)
                    if mark and path.is_dir() and (path / mark).is_file():
                        found[name] = Entry(kind, name, path)
                    elif path.is_file() and path.suffix.lower() in suffixes and not _inside_diffusers_folder(
                            path, base, mark or "model_index.json"):
                        found[name] = Entry(kind, name, path)
            for name, path in BUILT_IN.get(kind, {}).items():
                if name not in found and (path / FOLDER_MARKS.get(kind, "")).is_file():
                    found[name] = Entry(kind, name, path)
            self._entries[kind] = found
        return self.names()

    def names(self) -> dict[str, list[str]]:
        return {kind: sorted(entries) for kind, entries in self._entries.items()}

    def get(self, kind: str, name: str) -> Entry:
        """The entry named `name`; InvalidRequest for anything else (paths included)."""
        entry = self._entries[kind].get(str(name).strip())
        if entry is None:
            self.scan()                       # a file added since the last scan
            entry = self._entries[kind].get(str(name).strip())
        if entry is None:
            shown = ", ".join(sorted(self._entries[kind])[:8]) or "none"
            raise InvalidRequest(f"No {kind[:-1] if kind.endswith('s') else kind} named {name!r} in "
                                 f"{self.folder(kind)} (available: {shown}).")
        # the file may have been swapped for a symlink since the scan
        if entry.path != BUILT_IN.get(kind, {}).get(entry.name) and not entry.path.resolve().is_relative_to(self.folder(kind).resolve()):
            raise InvalidRequest(f"{name!r} leads outside {self.folder(kind)}; refused.")
        return entry


def _inside_diffusers_folder(path: Path, base: Path, mark: str = "model_index.json") -> bool:
    """Weights inside a diffusers folder belong to it, not to the list of single files."""
    parent = path.parent
    while parent != base and base in parent.parents:
        if (parent / mark).is_file():
            return True
        parent = parent.parent
    return False
