"""The pixel checker's reading of a LoRA trained on the embedded model, at the end of every job on
it: the studio's trainer finds this through the package's entry point `sd_studio.lora_checks`
(the product never imports the embedded model's code; the package plugs its own model's check in).

- the new word's hit rate: the caption pictures the evaluation drew (studio/finetune/evaluate.py)
  read with the new colour added to the palette — its colour taken from the training pictures'
  objects — with the LoRA and without;
- shapes: right as often with the LoRA as without, on the same pictures;
- the world's own prompts (no new word): every axis with the LoRA at 1 and without.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

import numpy as np

from embedded.checker import check, score_many
from embedded.world import COLOURS, PLURALS, SHAPES, Obj, Scene, heldout_prompts

PLAIN_PROMPTS = 12
AXES = ("colour", "background", "position", "shape", "all")


def new_colour(pictures: list[Path]) -> tuple[int, int, int] | None:
    """The median colour of the objects in the training pictures, as the checker reads them."""
    from PIL import Image

    found = []
    for path in pictures:
        with Image.open(path) as img:
            score = check(np.asarray(img.convert("RGB")), Scene((Obj("circle", "red", "large", "center"),), "white"))
        if "colour_rgb" in score.found:
            found.append(score.found["colour_rgb"])
    return tuple(int(v) for v in np.median(found, axis=0)) if found else None


def asked_shape(caption: str) -> str | None:
    """The one shape a caption asks for (None for two objects or none)."""
    words = re.findall(r"[a-z]+", caption.lower())
    named = [s for s in SHAPES if s in words or PLURALS[s] in words]
    return named[0] if len(named) == 1 and "two" not in words and "and" not in words else None


def figures(drawn: list[tuple[str, np.ndarray, np.ndarray]], words: list[str], pictures: list[Path],
            draw: Callable[[str, int, float], np.ndarray], seed: int) -> dict:
    """`drawn`: (caption, picture with the LoRA, without) from the evaluation; `words`: the new
    words; `pictures`: the training pictures; `draw(prompt, seed, weight)`."""
    rgb = new_colour(pictures)
    word = words[0] if words else None
    palette = {**COLOURS, word: rgb} if word and rgb else COLOURS
    concept = [(caption, a, b) for caption, a, b in drawn if asked_shape(caption) and word and word in caption.split()]
    out: dict = {"new_colour_rgb": list(rgb) if rgb else None, "concept_prompts": len(concept)}
    for label, index in (("with", 1), ("without", 2)):
        scores = [check(row[index], Scene((Obj(asked_shape(row[0]), word, "large", "center"),), "white"), palette)
                  for row in concept]
        out[f"hit_{label}"] = _share(s.colour for s in scores)
        out[f"shape_{label}"] = _share(s.shape for s in scores)
    plain = heldout_prompts(PLAIN_PROMPTS, seed)
    for label, weight in (("with", 1.0), ("without", 0.0)):
        images = [draw(prompt, seed + i, weight) for i, (_, prompt) in enumerate(plain)]
        out[f"plain_{label}"] = {k: round(100 * v) for k, v in score_many(images, [s for s, _ in plain], palette).items()}
    out["summary"] = summary(out, word)
    return out


def _share(values) -> int | None:
    values = list(values)
    return round(100 * sum(map(bool, values)) / len(values)) if values else None


def summary(out: dict, word: str | None) -> str:
    plain = ", ".join(f"{k} {out['plain_without'][k]}→{out['plain_with'][k]}%" for k in AXES)
    text = f"The pixel checker, on the world's own prompts without the new word: {plain}."
    if out["concept_prompts"]:
        text = (f"The pixel checker reads {word} on {out['hit_with']}% of your captions' pictures "
                f"({out['hit_without']}% without the LoRA), shapes right {out['shape_with']}% "
                f"({out['shape_without']}% without). " + text)
    return text
