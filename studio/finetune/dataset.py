"""Training pictures and their captions, read the way kohya's trainers read a folder; no torch.

- A caption is the first line of a `.txt` (or `.caption`) file beside the picture; without one,
  the folder's class token (`10_cat` -> "cat"), else the file name ("red_car-2" -> "red car 2").
- `N_name` subfolders repeat each of their pictures N times a epoch; other subfolders are skipped
  with a note (as kohya does).
- A trigger word is put in front of every caption that does not already have it.
- Datasets live only in the studio's datasets folder: a name from a caller is never a path.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from studio.errors import InvalidRequest

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
CAPTION_SUFFIXES = (".txt", ".caption")
FOLDER_RULE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.-]{0,63}$")
REPEATS_RULE = re.compile(r"^(\d+)_(.+)$")
MIN_SIDE = 64
MAX_PICTURES = 2000


@dataclass
class Item:
    path: Path
    caption: str
    repeats: int
    folder: str               # the subfolder it came from ("" for the dataset's own)


@dataclass
class Dataset:
    root: Path
    items: list[Item]
    notes: list[str] = field(default_factory=list)     # what was skipped or looks wrong

    @property
    def with_repeats(self) -> int:
        return sum(i.repeats for i in self.items)

    def dataset_dirs(self) -> dict:
        """kohya's `ss_dataset_dirs`: {folder: {n_repeats, img_count}}."""
        out: dict = {}
        for item in self.items:
            entry = out.setdefault(item.folder or self.root.name, {"n_repeats": item.repeats, "img_count": 0})
            entry["img_count"] += 1
        return out

    def tag_frequency(self) -> dict:
        """kohya's `ss_tag_frequency`: {folder: {comma-separated tag: count}}."""
        out: dict = {}
        for item in self.items:
            tags = out.setdefault(item.folder or self.root.name, Counter())
            tags.update(t.strip() for t in item.caption.split(",") if t.strip())
        return {k: dict(v) for k, v in out.items()}


def dataset_folder(root: Path, name: str) -> Path:
    """The folder of dataset `name` inside `root` (the studio's datasets folder); a name that is
    a path, or leaves the folder through a link, is refused."""
    name = str(name or "").strip()
    if not FOLDER_RULE.match(name) or name in (".", ".."):
        raise InvalidRequest(f"Dataset name {name!r}: letters, digits, spaces, '_', '-', '.', up to 64 "
                             "characters; datasets live in the studio's datasets folder.")
    folder = (root / name)
    if folder.exists() and root.resolve() not in folder.resolve().parents:
        raise InvalidRequest(f"Dataset {name!r} leaves the datasets folder (a link?); refused.")
    return folder


def dataset_names(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir() and FOLDER_RULE.match(p.name)) if root.is_dir() else []


def read_dataset(folder: Path, trigger: str = "", repeats: int = 0) -> Dataset:
    """The pictures of `folder` and its `N_name` subfolders with their captions. `repeats` > 0
    overrides the folders' own counts."""
    if not folder.is_dir():
        raise InvalidRequest(f"No dataset folder {folder.name!r}: add pictures first.")
    items, notes = _pictures(folder, "", "", repeats or 1, trigger), []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        match = REPEATS_RULE.match(sub.name)
        if not match:
            notes.append(f"Skipped the folder {sub.name!r}: kohya's folders are named N_name (N repeats).")
            continue
        items += _pictures(sub, sub.name, match.group(2).strip(), repeats or int(match.group(1)), trigger)
    if not items:
        raise InvalidRequest(f"Dataset {folder.name!r} has no pictures ({', '.join(IMAGE_SUFFIXES)}).")
    if len(items) > MAX_PICTURES:
        raise InvalidRequest(f"Dataset {folder.name!r} has {len(items)} pictures; at most {MAX_PICTURES}.")
    return Dataset(folder, items, notes)


def _pictures(folder: Path, name: str, class_token: str, repeats: int, trigger: str) -> list[Item]:
    items = []
    for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()):
        caption = _caption(path, class_token)
        items.append(Item(path, with_trigger(caption, trigger), repeats, name))
    return items


def _caption(path: Path, class_token: str) -> str:
    for suffix in CAPTION_SUFFIXES:
        side = path.with_suffix(suffix)
        if side.is_file():
            lines = side.read_text(encoding="utf-8", errors="replace").strip().splitlines()
            return lines[0].strip() if lines else ""
    return class_token or re.sub(r"[_\-]+", " ", path.stem).strip()


def with_trigger(caption: str, trigger: str) -> str:
    trigger = trigger.strip()
    if not trigger or re.search(r"(?<![\w-])" + re.escape(trigger) + r"(?![\w-])", caption):
        return caption
    return f"{trigger}, {caption}" if caption else trigger


def preflight(dataset: Dataset) -> list[str]:
    """What an artist should fix before training: empty captions, tiny or unreadable pictures,
    duplicates; plus the notes from reading the folders."""
    from PIL import Image

    problems, seen = list(dataset.notes), {}
    for item in dataset.items:
        if not item.caption.strip():
            problems.append(f"{item.path.name}: empty caption.")
        try:
            with Image.open(item.path) as img:
                if min(img.size) < MIN_SIDE:
                    problems.append(f"{item.path.name}: {img.size[0]}x{img.size[1]} is very small.")
        except OSError:
            problems.append(f"{item.path.name}: not a readable picture.")
            continue
        digest = hashlib.sha1(item.path.read_bytes()).hexdigest()
        if digest in seen:
            problems.append(f"{item.path.name}: the same picture as {seen[digest]}.")
        seen.setdefault(digest, item.path.name)
    return problems


def blocking(problems: list[str]) -> list[str]:
    return [p for p in problems if p.endswith(("empty caption.", "not a readable picture."))]


def add_files(root: Path, name: str, files: list[str | Path]) -> Path:
    """Copy uploaded pictures (and caption .txt files named like them) into dataset `name`."""
    folder = dataset_folder(root, name)
    folder.mkdir(parents=True, exist_ok=True)
    added = 0
    for src in files or []:
        src = Path(src)
        if src.suffix.lower() not in IMAGE_SUFFIXES + CAPTION_SUFFIXES:
            raise InvalidRequest(f"{src.name}: only pictures ({', '.join(IMAGE_SUFFIXES)}) and .txt captions.")
        target = folder / re.sub(r"[^A-Za-z0-9_.-]", "_", src.name)
        shutil.copyfile(src, target)
        added += src.suffix.lower() in IMAGE_SUFFIXES
    if not added and not any(folder.iterdir()):
        raise InvalidRequest("Add at least one picture.")
    return folder


def write_captions(dataset: Dataset, captions: dict[str, str]) -> int:
    """Write edited captions (file name -> caption) as `.txt` files beside the pictures."""
    by_name = {i.path.name: i for i in dataset.items}
    written = 0
    for file, caption in captions.items():
        item = by_name.get(file)
        if item is None:
            raise InvalidRequest(f"{file!r} is not a picture of dataset {dataset.root.name!r}.")
        item.path.with_suffix(".txt").write_text(str(caption).strip() + "\n", encoding="utf-8")
        written += 1
    return written
