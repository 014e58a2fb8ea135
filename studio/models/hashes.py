"""File hashes as AUTOMATIC1111 writes them: sha256, cut to 10 hex digits for a model or VAE
("Model hash", "VAE hash") and 12 for LoRAs and embeddings ("Lora hashes", "TI hashes"). A LoRA's
is not its file's: A1111 takes the `sshs_model_hash` kohya's trainers write into the metadata, or
for a .safetensors file sd-webui-additional-networks' hash of the tensor data after the header
(the same whatever the metadata says), so that Civitai and A1111 name the same LoRA the same way.

Each file is read once: hashes are remembered per (path, size, mtime), in memory and in
`.cache/hashes.json` (as A1111 keeps its cache.json), so a checkpoint of several GB is hashed
when first used, not at every image nor after every restart.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
from pathlib import Path

from studio.config import ROOT
from studio.models.sources import ALTERNATE_UNETS

log = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth")
DISK_MIN_BYTES = 16 << 20      # smaller files are quicker to hash than to look up on disk
_CACHE: dict[str, str] = {}    # "path|size|mtime_ns" -> sha256
_LOCK = threading.Lock()
_loaded_from: Path | None = None


def cache_file() -> Path:
    return Path(os.environ.get("STUDIO_CACHE", ROOT / ".cache")) / "hashes.json"


def sha256_of(path: str | Path, after_header: bool = False) -> str:
    """The full sha256 of a file (hex), read once per (path, size, mtime); `after_header`: of a
    safetensors file's tensor data only (the "addnet" hash)."""
    st = Path(path).stat()
    key = f"{'addnet|' if after_header else ''}{Path(path).resolve()}|{st.st_size}|{st.st_mtime_ns}"
    with _LOCK:
        _load_disk()
        if key in _CACHE:
            return _CACHE[key]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        if after_header:
            f.seek(8 + int.from_bytes(f.read(8), "little"))
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    with _LOCK:
        _CACHE[key] = h.hexdigest()
        if st.st_size >= DISK_MIN_BYTES:
            _save_disk()
    return _CACHE[key]


def _load_disk() -> None:
    """Read the hashes file once (again if STUDIO_CACHE moved); a damaged one is ignored."""
    global _loaded_from
    if _loaded_from == cache_file():
        return
    _loaded_from = cache_file()
    try:
        saved = json.loads(_loaded_from.read_text(encoding="utf-8"))
        _CACHE.update({k: v for k, v in saved.items() if isinstance(k, str) and isinstance(v, str)})
    except (OSError, ValueError, AttributeError):
        pass


def _save_disk() -> None:
    path = cache_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(_CACHE, indent=0, sort_keys=True), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:          # a read-only cache folder costs a re-hash after a restart, nothing more
        log.debug("could not write %s", path, exc_info=True)


def file_hash(path: str | Path) -> str:
    """A1111's short hash of an embedding file ("TI hashes"): sha256, first 12 hex digits."""
    return sha256_of(path)[:12]


def lora_hash(path: str | Path) -> str:
    """A1111's short hash of a LoRA ("Lora hashes"): the trainer's `sshs_model_hash` when the
    metadata has one, else the addnet hash of a .safetensors file, else the file's sha256; 12 hex."""
    if Path(path).suffix.lower() != ".safetensors":
        return file_hash(path)
    written = safetensors_metadata(path).get("sshs_model_hash", "")
    if re.fullmatch(r"[0-9a-fA-F]{12,64}", written):
        return written[:12].lower()
    return sha256_of(path, after_header=True)[:12]


def safetensors_metadata(path: str | Path) -> dict:
    """The `__metadata__` of a safetensors file's header ({} when it has none or is unreadable)."""
    try:
        with open(path, "rb") as f:
            header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    except (OSError, ValueError):
        return {}
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    return meta if isinstance(meta, dict) else {}


def model_sha256(location: str | Path, unet: str | Path | None = None) -> str:
    """The full sha256 behind A1111's `Model hash` (and the REST API's `sd_checkpoint_hash`): of the
    checkpoint file, or for a diffusers folder (no one file) the sha256 of its weight files'
    relative paths and sha256s, in path order (it changes whenever any of its weights do). A UNet
    the folder keeps for another model (the embedded model's student) is not part of the folder's
    hash; with `unet`, that UNet's files stand in for `unet/`."""
    h = hashlib.sha256()
    files = _model_files(Path(location), unet)
    if isinstance(files, Path):
        return sha256_of(files)
    for name, p in files:
        h.update(f"{name} {sha256_of(p)}\n".encode())
    return h.hexdigest()


def model_hash(location: str | Path, unet: str | Path | None = None) -> str:
    """A1111's `Model hash`: the first 10 hex digits of model_sha256."""
    return model_sha256(location, unet)[:10]


def known_model_sha256(location: str | Path, unet: str | Path | None = None) -> str | None:
    """model_sha256 when every file it needs was hashed before (nothing is read); else None.
    Listings use it, so that listing a folder of multi-GB checkpoints reads none of them."""
    files = _model_files(Path(location), unet)
    with _LOCK:
        _load_disk()
        for p in [files] if isinstance(files, Path) else [p for _, p in files]:
            st = p.stat()
            if f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}" not in _CACHE:
                return None
    return model_sha256(location, unet)


def _model_files(path: Path, unet: str | Path | None) -> Path | list[tuple[str, Path]]:
    """A checkpoint file, or a folder's weight files as (name in the folder, file) in path order."""
    if path.is_file():
        return path
    files = [(p.relative_to(path).as_posix(), p) for p in _weight_files(path)
             if p.relative_to(path).parts[0] not in ALTERNATE_UNETS]
    if unet is not None:
        files = [(n, p) for n, p in files if not n.startswith("unet/")]
        files += [("unet/" + p.relative_to(unet).as_posix(), p) for p in _weight_files(Path(unet))]
    return sorted(files, key=lambda item: item[0].split("/"))


def _weight_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
