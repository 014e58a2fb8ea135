"""Prior preservation without homework (DreamBooth's class images, Ruiz et al. 2023): when a run
asks for it (`prior_weight` > 0), the trainer makes pictures of what the model already draws for
the dataset's captions with the new words taken out — the trigger, and the words a small model's
vocabulary does not know — or with the words the user names in their place (the class the new
thing is a kind of), from the base model itself at fixed seeds; caches them in the job folder
(reused on resume and when nothing changed), and trains on them beside the user's pictures with
the loss weighted by `prior_weight`: the LoRA learns the new thing against the model's own
pictures instead of pulling every prompt towards it."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from studio.prompts.vocabulary import unknown_words

FOLDER = "class"
MANIFEST = "class.json"
SEED_OFFSET = 100_000          # class pictures' seeds, apart from the samples' (settings.seed + k)


@dataclass(frozen=True)
class ClassPicture:
    path: Path
    caption: str
    seed: int


def new_words(captions: list[str], trigger: str, vocabulary: frozenset[str]) -> list[str]:
    """The words a run teaches: the trigger's, and those the model's vocabulary (when it has
    one: the embedded model) does not know."""
    words = dict.fromkeys(w.lower() for w in re.findall(r"[\w-]+", trigger or ""))
    if vocabulary:
        for caption in captions:
            words.update(dict.fromkeys(unknown_words(caption, vocabulary)))
    return list(words)


def without_words(caption: str, words: list[str]) -> str:
    """`caption` with `words` taken out (and the commas and spaces they leave)."""
    for word in words:
        caption = re.sub(r"(?<![\w-])" + re.escape(word) + r"(?![\w-]),?", "", caption, flags=re.IGNORECASE)
    return re.sub(r"\s+", " ", caption).strip(" ,")


def class_captions(captions: list[str], words: list[str], count: int, instead: list[str] = ()) -> list[str]:
    """`count` captions of what the model knows: the dataset's, in turn, with the new words
    replaced by the words `instead` (the class the new thing is a kind of: "dog", or "red, blue,
    green" for a new colour), one after another, or dropped when there are none."""
    out = []
    for i in range(count):
        caption = captions[i % len(captions)]
        if instead:
            word = instead[i % len(instead)]
            for new in words:
                caption = re.sub(r"(?<![\w-])" + re.escape(new) + r"(?![\w-])", word, caption, flags=re.IGNORECASE)
        out.append(without_words(caption, words) or "a picture")
    return out


def class_pictures(folder: Path, captions: list[str], seed: int, resolution: int, model: str,
                   draw) -> list[ClassPicture]:
    """The class pictures in `folder` (made with `draw(prompt, seed) -> PIL image` where missing
    or made for other captions, seeds, size or model; kept otherwise)."""
    folder.mkdir(parents=True, exist_ok=True)
    wanted = [{"file": f"{i:04d}.png", "caption": c, "seed": seed + SEED_OFFSET + i, "resolution": resolution,
               "model": model} for i, c in enumerate(captions)]
    manifest = folder / MANIFEST
    try:
        had = {e["file"]: e for e in json.loads(manifest.read_text(encoding="utf-8"))}
    except (OSError, ValueError, TypeError, KeyError):
        had = {}
    for entry in wanted:
        path = folder / entry["file"]
        if had.get(entry["file"]) != entry or not path.is_file():
            draw(entry["caption"], entry["seed"]).save(path)
    manifest.write_text(json.dumps(wanted, indent=1), encoding="utf-8")
    return [ClassPicture(folder / e["file"], e["caption"], e["seed"]) for e in wanted]
