"""File hashes as AUTOMATIC1111 writes them: sha256, cut to 10 hex digits for a model or VAE
("Model hash", "VAE hash") and 12 for LoRAs and embeddings ("Lora hashes", "TI hashes").

Each file is read once per process: hashes are remembered per (path, size, mtime), so a
checkpoint of several GB is hashed when first used, not at every image.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth")
_CACHE: dict[tuple[str, int, int], str] = {}
_LOCK = threading.Lock()


def sha256_of(path: str | Path) -> str:
    """The full sha256 of a file (hex), read once per (path, size, mtime)."""
    st = Path(path).stat()
    key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
    with _LOCK:
        if key in _CACHE:
            return _CACHE[key]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    with _LOCK:
        _CACHE[key] = h.hexdigest()
    return _CACHE[key]


def file_hash(path: str | Path) -> str:
    """A1111's short hash of a LoRA or embedding file: sha256, first 12 hex digits."""
    return sha256_of(path)[:12]


def model_hash(location: str | Path) -> str:
    """A1111's `Model hash`: sha256 of the checkpoint file, first 10 hex digits. A diffusers folder
    has no one file, so its hash is the sha256 of its weight files' relative paths and sha256s,
    in path order (it changes whenever any of its weights do)."""
    path = Path(location)
    if path.is_file():
        return sha256_of(path)[:10]
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    h = hashlib.sha256()
    for p in files:
        h.update(f"{p.relative_to(path).as_posix()} {sha256_of(p)}\n".encode())
    return h.hexdigest()[:10]
