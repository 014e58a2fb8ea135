"""The output folder: every generated image saved as a numbered PNG with its metadata.

Files appear atomically (temporary file, fsync, rename) so a crash, a full disk or a
browser polling the gallery never sees a half-written PNG, and numbering is decided under
a lock so concurrent generations never overwrite each other.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from PIL import Image

from studio.outputs import metadata

__all__ = ["HeldPictures", "OutputFolder", "save_as"]

_DAY_RE = re.compile(r"\d{4}-\d{2}-\d{2}\Z")
_NUMBERED_RE = re.compile(r"(\d+)-")

# One lock per folder for the whole process, so two OutputFolder objects for the same
# root still number their files safely.
_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def _lock_for(root: Path) -> threading.Lock:
    """The process-wide lock for `root`."""
    key = os.path.normcase(os.path.abspath(root))
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(key, threading.Lock())


def _number(name: str) -> int:
    """The NNNNN prefix of a saved file name, or -1 for other files."""
    match = _NUMBERED_RE.match(name)
    return int(match.group(1)) if match else -1


def _fsync_dir(folder: Path) -> None:
    """Make the rename durable; some platforms (Windows) can't open folders, so skip."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomically(folder: Path, image: Image.Image, info, place: Callable[[Path], Path]) -> Path:
    """Encode the PNG into a hidden temporary file in `folder` and fsync it; `place(tmp)` renames
    it into place and returns the final path. On any error the temporary file is removed."""
    tmp = folder / f".{secrets.token_hex(8)}.tmp"
    # O_EXCL: never reuse someone else's file; mode 0o666 so the umask applies
    # (mkstemp would leave every saved image readable by the owner only).
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    fd = os.open(tmp, flags, 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            image.save(handle, format="PNG", pnginfo=info)
            handle.flush()
            os.fsync(handle.fileno())
        return place(tmp)
    except BaseException:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        raise


def save_as(path: Path, image: Image.Image, parameters: str, data: dict[str, Any]) -> Path:
    """Write one picture with its metadata under a name of the caller's (an animation frame),
    atomically: the name holds a whole PNG or nothing."""
    def place(tmp: Path) -> Path:
        os.replace(tmp, path)
        return path

    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path.parent, image, metadata.pnginfo(parameters, data), place)
    _fsync_dir(path.parent)
    return path


RESERVED = ("training", "animations")      # the outputs folder's own subfolders


def space_name(owner: str) -> str:
    """A login as a folder name: letters, digits, '.', '-' and '_' kept, anything else '_'; a name
    the outputs folder uses itself (its training jobs, a day folder) gets a '_' in front."""
    name = re.sub(r"[^\w.-]", "_", owner).lstrip(".") or "_"
    return f"_{name}" if name in RESERVED or _DAY_RE.match(name) else name


class OutputFolder:
    """Saves images as root/YYYY-MM-DD/NNNNN-<seed>.png (a login's own under root/<login>/ when
    each login has its own space) and lists them back."""

    def __init__(self, root: str | Path, *, clock: Callable[[], datetime] = datetime.now,
                 on_saved: Callable[[Path, str, dict], None] | None = None):
        """Nothing is created on disk until the first save (a read-only browse is free).

        `clock` gives the date of the day folder; tests pass a fixed one. `on_saved(path,
        parameters, data)` hears of each picture once it is in place (the history index).
        """
        self.root = Path(root)
        self._clock = clock
        self._lock = _lock_for(self.root)
        self.on_saved = on_saved
        self._spaces: dict[str, OutputFolder] = {}

    def space(self, owner: str | None) -> "OutputFolder":
        """Where `owner`'s pictures go when each login has its own space: root/<owner>/ (day
        folders inside, the same history index); None: this folder."""
        if not owner:
            return self
        if owner not in self._spaces:
            self._spaces[owner] = OutputFolder(self.root / space_name(owner), clock=self._clock, on_saved=self.on_saved)
        return self._spaces[owner]

    def save(
        self, image: Image.Image, parameters: str, data: dict[str, Any], *, seed: int,
        kind: str | None = None,
    ) -> Path:
        """Write `image` with its metadata chunks and return the final path: NNNNN-SEED.png,
        or NNNNN-KIND.png for a picture made of others (`kind` "grid": a plot's grid).

        The PNG is encoded into a hidden temporary file outside the lock (encoding is the
        slow part); the number is chosen and the file renamed into place under the lock.
        On any error the temporary file is removed and the error re-raised.
        """
        if kind is not None and not kind.isalpha():
            raise ValueError(f"kind must be a word, got {kind!r}")
        seed_text = kind or str(int(seed))
        info = metadata.pnginfo(parameters, data)
        day = self.root / self._clock().strftime("%Y-%m-%d")
        day.mkdir(parents=True, exist_ok=True)

        def place(tmp: Path) -> Path:
            with self._lock:
                number = self._next_number(day)
                final = day / f"{number:05d}-{seed_text}.png"
                while final.exists():  # never overwrite, e.g. a file another process made
                    number += 1
                    final = day / f"{number:05d}-{seed_text}.png"
                os.replace(tmp, final)
                return final

        final = write_atomically(day, image, info, place)
        _fsync_dir(day)
        if self.on_saved is not None:
            try:
                self.on_saved(final, parameters, data)
            except Exception:  # noqa: BLE001 - the picture is saved; the index catches up at the next start
                logging.getLogger(__name__).warning("Could not index %s", final, exc_info=True)
        return final

    def remove_stale(self) -> int:
        """Delete hidden temporary files a killed process left behind (call at start, before
        any save); returns how many. Finished images are never touched."""
        if not self.root.is_dir():
            return 0
        removed = 0
        days = [*self.root.glob("*"), *self.root.glob("*/*")]       # the folder's and each login space's
        for day in days:
            if day.is_dir() and _DAY_RE.match(day.name):
                for tmp in day.glob(".*.tmp"):
                    try:
                        tmp.unlink()
                        removed += 1
                    except OSError:
                        pass
        return removed

    @staticmethod
    def _next_number(day: Path) -> int:
        """1 + the highest NNNNN in the day folder (1 for an empty folder)."""
        highest = 0
        with os.scandir(day) as entries:
            for entry in entries:
                if not entry.name.startswith("."):
                    highest = max(highest, _number(entry.name))
        return highest + 1

    def history(self, limit: int = 100) -> list[Path]:
        """Saved PNGs, newest first (by day, then number); temporary files never appear."""
        if limit <= 0 or not self.root.is_dir():
            return []
        days = sorted(
            (p for p in self.root.iterdir() if p.is_dir() and _DAY_RE.match(p.name)),
            key=lambda p: p.name,
            reverse=True,
        )
        found: list[Path] = []
        for day in days:
            pngs = [
                p
                for p in day.iterdir()
                if p.suffix.lower() == ".png" and not p.name.startswith(".") and p.is_file()
            ]
            pngs.sort(key=lambda p: (_number(p.name), p.name), reverse=True)
            found.extend(pngs)
            if len(found) >= limit:
                break
        return found[:limit]


class HeldPictures:
    """Where a live picture goes instead of the folder: nowhere. The engine makes its metadata as
    for any picture and "saves" it here; the caller keeps the picture and its metadata, and
    `OutputFolder.save` writes them if the user keeps it."""

    def save(self, image: Image.Image, parameters: str, data: dict[str, Any], *, seed: int,
             kind: str | None = None) -> None:
        return None
