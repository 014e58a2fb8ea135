"""A synthetic world of coloured shapes with captions, the training data of the embedded model.

The world is small on purpose: a tiny latent-diffusion model can learn it on a CPU budget, and
a pixel checker (`embedded.checker`) can read every picture back, so prompt-following is
measured rather than eyeballed. Some (colour, shape) and (colour, background) combinations are
held out of training so the evaluation asks for compositions the model has never seen.

Everything is deterministic from a seed (`random.Random`, no global state) and rendering is a
pure function of the scene, so a dataset can be regenerated instead of stored.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw

__all__ = [
    "COLOURS", "SHAPES", "SIZES", "SIZE_RADIUS", "POSITIONS", "HELDOUT_PAIRS",
    "HELDOUT_COLOUR_BG", "Obj", "Scene", "object_centre", "object_box", "render", "draw_shape", "shape_polygon", "RING_HOLE",
    "position_phrase", "caption", "full_caption", "short_caption", "sample_scene", "heldout_prompts", "two_object_scene", "two_object_dataset",
    "make_dataset", "contact_sheet", "vocabulary", "VOCABULARY_KNOWS",
]

# Saturated, far-apart colours (every pair is >= ~99 apart in RGB), so that a nearest-colour
# classifier reads them unambiguously even from blurry generated pictures.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (245, 125, 15),
    "yellow": (240, 225, 40),
    "green": (30, 170, 60),
    "cyan": (30, 200, 220),
    "blue": (40, 70, 220),
    "purple": (140, 40, 190),
    "pink": (245, 130, 200),
    "white": (245, 245, 245),
    "black": (15, 15, 15),
    "gray": (128, 128, 128),
    "brown": (120, 70, 30),
}

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "ring")
PLURALS: dict[str, str] = {s: s + "s" for s in SHAPES}

SIZES: tuple[str, ...] = ("small", "large")
# Radius of the shape's bounding circle as a fraction of the image side. Large objects in a
# corner or edge cell are pulled inwards (see `object_centre`) so that they stay inside.
SIZE_RADIUS: dict[str, float] = {"small": 0.13, "large": 0.21}
EDGE_MARGIN = 0.035  # gap kept between any object and the image border (fraction of side)

POSITIONS: dict[str, tuple[float, float]] = {
    "top left": (1 / 6, 1 / 6), "top": (1 / 2, 1 / 6), "top right": (5 / 6, 1 / 6),
    "left": (1 / 6, 1 / 2), "center": (1 / 2, 1 / 2), "right": (5 / 6, 1 / 2),
    "bottom left": (1 / 6, 5 / 6), "bottom": (1 / 2, 5 / 6), "bottom right": (5 / 6, 5 / 6),
}

# (colour, shape) pairs never seen in training: ten colours, each shape exactly twice, so every
# colour and every shape still appears in training with other partners.
HELDOUT_PAIRS: frozenset[tuple[str, str]] = frozenset({
    ("red", "triangle"), ("orange", "star"), ("yellow", "circle"), ("green", "ring"),
    ("cyan", "square"), ("blue", "star"), ("purple", "circle"), ("pink", "triangle"),
    ("white", "ring"), ("brown", "square"),
})
# (object colour, background colour) pairs never seen in training.
HELDOUT_COLOUR_BG: frozenset[tuple[str, str]] = frozenset({
    ("red", "green"), ("blue", "yellow"), ("white", "black"), ("pink", "cyan"),
})

SUPERSAMPLE = 4


@dataclass(frozen=True)
class Obj:
    """One shape in a scene; all fields are names from the vocabularies above."""

    shape: str
    colour: str
    size: str
    position: str


@dataclass(frozen=True)
class Scene:
    """A picture's full description: rendering is a pure function of it."""

    objects: tuple[Obj, ...]
    background: str


# --------------------------------------------------------------------------------- geometry

def object_centre(obj: Obj) -> tuple[float, float]:
    """Centre of `obj` in image fractions: its cell centre, pulled in so it stays inside."""
    r = SIZE_RADIUS[obj.size]
    lo, hi = r + EDGE_MARGIN, 1.0 - r - EDGE_MARGIN
    cx, cy = POSITIONS[obj.position]
    return min(max(cx, lo), hi), min(max(cy, lo), hi)


def object_box(obj: Obj) -> tuple[float, float, float, float]:
    """Bounding box (x0, y0, x1, y1) in image fractions; every shape is drawn inside it."""
    cx, cy = object_centre(obj)
    r = SIZE_RADIUS[obj.size]
    return cx - r, cy - r, cx + r, cy + r


def _boxes_clear(a: Obj, b: Obj, gap: float = 0.03) -> bool:
    """Whether two objects' boxes are at least `gap` apart, so shapes never touch."""
    ax0, ay0, ax1, ay1 = object_box(a)
    bx0, by0, bx1, by1 = object_box(b)
    return ax1 + gap <= bx0 or bx1 + gap <= ax0 or ay1 + gap <= by0 or by1 + gap <= ay0


def _star_points(cx: float, cy: float, r: float, inner: float = 0.5) -> list[tuple[float, float]]:
    """The ten vertices of an upright five-pointed star."""
    pts = []
    for k in range(10):
        rad = r if k % 2 == 0 else r * inner
        ang = -math.pi / 2 + k * math.pi / 5
        pts.append((cx + rad * math.cos(ang), cy + rad * math.sin(ang)))
    return pts


def _draw_obj(draw: ImageDraw.ImageDraw, obj: Obj, side: int, background: tuple[int, int, int],
              colours: dict[str, tuple[int, int, int]]) -> None:
    """Draw one object on a canvas of `side` pixels (already supersampled)."""
    cx, cy = object_centre(obj)
    draw_shape(draw, obj.shape, cx * side, cy * side, SIZE_RADIUS[obj.size] * side, colours[obj.colour],
               background)


RING_HOLE = 0.55      # a ring's hole, as a fraction of its radius


def shape_polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]] | None:
    """The corners of a square, triangle or star centred at (cx, cy) inside the circle of radius
    `r`; None for the round shapes (circle, ring)."""
    if shape == "square":
        h = 0.85 * r
        return [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if shape == "triangle":
        return [(cx, cy - r), (cx + 0.95 * r, cy + 0.8 * r), (cx - 0.95 * r, cy + 0.8 * r)]
    if shape == "star":
        return _star_points(cx, cy, r)
    if shape in ("circle", "ring"):
        return None
    raise ValueError(f"unknown shape {shape!r}")


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, fill, background) -> None:
    """Draw `shape` centred at (cx, cy) inside the circle of radius `r` (pixels): the world's
    five shapes at any place and size (a ring's hole takes `background`)."""
    corners = shape_polygon(shape, cx, cy, r)
    if shape == "square":
        draw.rectangle((*corners[0], *corners[2]), fill=fill)
    elif corners is not None:
        draw.polygon(corners, fill=fill)
    else:
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
        if shape == "ring":
            ri = RING_HOLE * r
            draw.ellipse((cx - ri, cy - ri, cx + ri, cy + ri), fill=background)


def render(scene: Scene, size: int = 64, colours: dict[str, tuple[int, int, int]] | None = None) -> Image.Image:
    """Draw `scene` as an RGB image, 4x supersampled and box-filtered for clean edges.

    No jitter: the picture depends on the scene alone, so checker and captions agree exactly.
    `colours`: the palette (default the world's twelve; the fine-tuning measure adds a 13th).
    """
    colours = colours or COLOURS
    side = size * SUPERSAMPLE
    bg = colours[scene.background]
    img = Image.new("RGB", (side, side), bg)
    draw = ImageDraw.Draw(img)
    for obj in scene.objects:
        _draw_obj(draw, obj, side, bg, colours)
    return img.resize((size, size), Image.Resampling.BOX)


# --------------------------------------------------------------------------------- captions

_CORNERS = ("top left", "top right", "bottom left", "bottom right")


def _a(phrase: str) -> str:
    """Prefix the right indefinite article ("an orange ...", "a large ...")."""
    return ("an " if phrase[:1] in "aeiou" else "a ") + phrase


def position_phrase(position: str, rng: random.Random | None = None) -> str:
    """An English phrase for a cell ("in the top left corner", "at the top", "on the left").

    With `rng=None` the canonical (first) phrasing is returned, for fixed evaluation prompts.
    """
    if position in _CORNERS:
        options = [f"in the {position} corner", f"at the {position}", f"in the {position}"]
    elif position in ("top", "bottom"):
        options = [f"at the {position}", f"at the {position} of the image", f"along the {position}"]
    elif position in ("left", "right"):
        options = [f"on the {position}", f"on the {position} side", f"at the {position}"]
    elif position == "center":
        options = ["in the center", "in the middle", "at the center"]
    else:
        raise ValueError(f"unknown position {position!r}")
    return options[0] if rng is None else rng.choice(options)


def _background_phrase(colour: str, rng: random.Random) -> str:
    """A phrase placing the scene on its background colour."""
    bg = _a(f"{colour} background")
    return rng.choice([f"on {bg}", f"on {bg}", f"against {bg}", f"with {bg}"])


_PREFIXES = ("a picture of ", "an image of ", "a drawing of ", "a simple drawing of ")


def _caption_one(obj: Obj, background: str, rng: random.Random) -> str:
    """Caption a single-object scene; size, position and background each appear by chance."""
    say_size = rng.random() < 0.7
    say_pos = rng.random() < 0.75
    say_bg = rng.random() < 0.75
    noun = f"{obj.size} {obj.colour} {obj.shape}" if say_size else f"{obj.colour} {obj.shape}"
    if rng.random() < 0.2:  # tag style: "small red circle, top left, blue background"
        parts = [noun]
        if say_pos:
            parts.append(obj.position if rng.random() < 0.5 else position_phrase(obj.position, rng))
        if say_bg:
            parts.append(f"{background} background")
        return ", ".join(parts)
    words = [_a(noun)]
    if rng.random() < 0.15:
        words[0] = rng.choice(_PREFIXES) + words[0]
    pos = position_phrase(obj.position, rng) if say_pos else None
    bg = _background_phrase(background, rng) if say_bg else None
    tail = [pos, bg] if rng.random() < 0.7 else [bg, pos]
    words += [t for t in tail if t]
    return " ".join(words)


def _caption_two(a: Obj, b: Obj, background: str, rng: random.Random, places: bool = False) -> str:
    """Caption a two-object scene: "two yellow triangles" or "a red circle and a blue square"
    (`places`: always with each object's place)."""
    say_bg = rng.random() < 0.7
    say_pos = rng.random() < 0.5 or places
    bg = f" {_background_phrase(background, rng)}" if say_bg else ""
    if (a.shape, a.colour) == (b.shape, b.colour):
        size = f"{a.size} " if a.size == b.size and rng.random() < 0.5 else ""
        text = f"two {size}{a.colour} {PLURALS[a.shape]}{bg}"
        if say_pos:
            text += (f", one {position_phrase(a.position, rng)}"
                     f" and one {position_phrase(b.position, rng)}")
        return text
    if rng.random() < 0.5:
        a, b = b, a
    parts = []
    for o in (a, b):
        noun = f"{o.size} {o.colour} {o.shape}" if rng.random() < 0.4 else f"{o.colour} {o.shape}"
        noun = _a(noun)
        if say_pos:
            noun += f" {position_phrase(o.position, rng)}"
        parts.append(noun)
    return f"{parts[0]} and {parts[1]}{bg}"


def caption(scene: Scene, rng: random.Random) -> str:
    """A varied English caption that always names every object's colour and shape."""
    if len(scene.objects) == 1:
        return _caption_one(scene.objects[0], scene.background, rng)
    if len(scene.objects) == 2:
        return _caption_two(scene.objects[0], scene.objects[1], scene.background, rng)
    raise ValueError("captions cover scenes of one or two objects")


def full_caption(scene: Scene, variant: int = 0) -> str:
    """The fixed, complete evaluation phrasing of a single-object scene (two variants)."""
    o = scene.objects[0]
    noun = _a(f"{o.size} {o.colour} {o.shape}")
    pos = position_phrase(o.position)
    bg = _a(f"{scene.background} background")
    if variant % 2 == 0:
        return f"{noun} {pos} on {bg}"
    return f"{noun} on {bg}, {pos}"


def short_caption(scene: Scene, variant: int = 0) -> str:
    """A fixed evaluation phrasing with no position word ("a red circle on a blue background";
    odd variants name the size too): the model must then choose the place itself."""
    o = scene.objects[0]
    noun = _a(f"{o.size} {o.colour} {o.shape}" if variant % 2 else f"{o.colour} {o.shape}")
    return f"{noun} on {_a(f'{scene.background} background')}"


# --------------------------------------------------------------------------------- sampling

_TRAIN_PAIRS: tuple[tuple[str, str], ...] = tuple(
    (c, s) for c in COLOURS for s in SHAPES if (c, s) not in HELDOUT_PAIRS)
_HELDOUT_LIST: tuple[tuple[str, str], ...] = tuple(sorted(HELDOUT_PAIRS))
_COLOUR_NAMES: tuple[str, ...] = tuple(COLOURS)
_POSITION_NAMES: tuple[str, ...] = tuple(POSITIONS)


def _pick_background(colours: set[str], rng: random.Random, train: bool) -> str:
    """A background unlike every object colour (and not a held-out pairing in training)."""
    options = [c for c in _COLOUR_NAMES if c not in colours
               and not (train and any((oc, c) in HELDOUT_COLOUR_BG for oc in colours))]
    return rng.choice(options)


def sample_scene(rng: random.Random, split: Literal["train", "heldout"] = "train",
                 max_objects: int = 2) -> Scene:
    """Sample a scene: train scenes (~70% one object, ~30% two) avoid every held-out pairing;
    held-out scenes are single objects whose (colour, shape) pair is held out."""
    if split == "heldout":
        colour, shape = rng.choice(_HELDOUT_LIST)
        obj = Obj(shape, colour, rng.choice(SIZES), rng.choice(_POSITION_NAMES))
        return Scene((obj,), _pick_background({colour}, rng, train=False))
    if split != "train":
        raise ValueError(f"unknown split {split!r}")
    colour, shape = rng.choice(_TRAIN_PAIRS)
    if max_objects < 2 or rng.random() < 0.7:
        obj = Obj(shape, colour, rng.choice(SIZES), rng.choice(_POSITION_NAMES))
        return Scene((obj,), _pick_background({colour}, rng, train=True))
    if rng.random() < 0.4:
        colour2, shape2 = colour, shape
    else:
        colour2, shape2 = colour, shape
        while (colour2, shape2) == (colour, shape):
            colour2, shape2 = rng.choice(_TRAIN_PAIRS)
    while True:  # resample placements until the two boxes are clear of each other
        p1, p2 = rng.sample(_POSITION_NAMES, 2)
        a = Obj(shape, colour, rng.choice(SIZES), p1)
        b = Obj(shape2, colour2, rng.choice(SIZES), p2)
        if _boxes_clear(a, b):
            break
    return Scene((a, b), _pick_background({colour, colour2}, rng, train=True))


def two_object_scene(rng: random.Random) -> tuple[Scene, str]:
    """Two different training (colour, shape) pairs of two colours, anywhere their boxes stay
    clear, on a third colour, captioned with each object's place ("an orange circle on the left
    and a cyan square on the right"): what `--two-objects` adds to the world (embedded/refine.py)."""
    while True:
        (c1, s1), (c2, s2) = rng.sample(_TRAIN_PAIRS, 2)
        if c1 != c2:
            break
    while True:
        p1, p2 = rng.sample(_POSITION_NAMES, 2)
        a, b = Obj(s1, c1, rng.choice(SIZES), p1), Obj(s2, c2, rng.choice(SIZES), p2)
        if _boxes_clear(a, b):
            break
    scene = Scene((a, b), _pick_background({c1, c2}, rng, train=True))
    return scene, _caption_two(a, b, scene.background, rng, places=True)


def heldout_prompts(n: int = 200, seed: int = 0, position: bool = True) -> list[tuple[Scene, str]]:
    """A fixed evaluation set: distinct single-object held-out scenes with full captions (with
    `position=False`: captions without the position, `short_caption`; the scene's position then
    means nothing).

    Pairs are cycled so each held-out (colour, shape) pair is asked for equally often.
    """
    phrase = full_caption if position else short_caption
    rng = random.Random(seed)
    seen: set[Scene] = set()
    out: list[tuple[Scene, str]] = []
    for i in range(n):
        colour, shape = _HELDOUT_LIST[i % len(_HELDOUT_LIST)]
        for _ in range(100):
            obj = Obj(shape, colour, rng.choice(SIZES), rng.choice(_POSITION_NAMES))
            scene = Scene((obj,), _pick_background({colour}, rng, train=False))
            if scene not in seen:
                break
        seen.add(scene)
        out.append((scene, phrase(scene, rng.randrange(2))))
    return out


def make_dataset(n: int, seed: int, size: int = 64,
                 split: Literal["train", "heldout"] = "train",
                 ) -> tuple[np.ndarray, list[str], list[Scene]]:
    """`n` rendered scenes (uint8, n x size x size x 3), their captions and scenes.

    Deterministic from `seed`; the same rng draws scenes and captions in order.
    """
    rng = random.Random(seed)
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    captions: list[str] = []
    scenes: list[Scene] = []
    for i in range(n):
        scene = sample_scene(rng, split)
        images[i] = np.asarray(render(scene, size))
        captions.append(caption(scene, rng))
        scenes.append(scene)
    return images, captions, scenes


def two_object_dataset(n: int, seed: int, share: float, size: int = 64) -> tuple[np.ndarray, list[str]]:
    """`n` pictures and captions: a `share` of `two_object_scene`s, the rest the world's own mix
    (`sample_scene`); deterministic from `seed`."""
    rng = random.Random(seed)
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    captions: list[str] = []
    for i in range(n):
        if rng.random() < share:
            scene, text = two_object_scene(rng)
        else:
            scene = sample_scene(rng)
            text = caption(scene, rng)
        images[i] = np.asarray(render(scene, size))
        captions.append(text)
    return images, captions



def region_split(a: Obj, b: Obj, rng: random.Random) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Two regions (left, top, right, bottom fractions) of a two-object scene, `a`'s then `b`'s:
    columns or rows parted in the middle of the gap between the objects' boxes (whichever way
    they are apart; either, by chance, when both)."""
    (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = object_box(a), object_box(b)
    ways = []
    for lo, hi, first in ((ax1, bx0, True), (bx1, ax0, False)):
        if lo <= hi:
            ways.append(("columns", (lo + hi) / 2, first))
    for lo, hi, first in ((ay1, by0, True), (by1, ay0, False)):
        if lo <= hi:
            ways.append(("rows", (lo + hi) / 2, first))
    way, cut, a_first = rng.choice(ways)
    one, two = ((0.0, 0.0, cut, 1.0), (cut, 0.0, 1.0, 1.0)) if way == "columns" else \
        ((0.0, 0.0, 1.0, cut), (0.0, cut, 1.0, 1.0))
    return (one, two) if a_first else (two, one)


REGION_MODES = (("plain", 1 / 3), ("regions", 1 / 3), ("base", 1 / 3))
BASE_RATIOS = (0.2, 0.7)     # a base's ratio is drawn from this range (the studio's default: 0.2)


def regional_dataset(n: int, seed: int, share: float, size: int = 64):
    """`n` pictures, a `share` of them two-object scenes, the rest the world's own mix; each
    with three texts (the whole picture's caption, then a region's each) and the regions' boxes
    and base ratio, what `embedded/regional.py` trains with. Two-object scenes are captioned
    by REGION_MODES: the whole caption alone (base ratio 1), the regions alone, each its object's
    own caption (ratio 0), or the regions under the whole caption as their base (a ratio of
    BASE_RATIOS), as Regional Prompter's users write them. Deterministic from `seed`."""
    rng = random.Random(seed)
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    texts: list[tuple[str, str, str]] = []
    boxes = np.tile(np.array([[0, 0, .5, 1], [.5, 0, 1, 1]], np.float32), (n, 1, 1))
    ratios = np.ones(n, np.float32)
    for i in range(n):
        if rng.random() < share:
            scene, text = two_object_scene(rng)
            mode = rng.choices([m for m, _ in REGION_MODES], [w for _, w in REGION_MODES])[0]
        else:
            scene, mode = sample_scene(rng), "plain"
            text = caption(scene, rng)
        texts.append((text, text, text))
        if mode != "plain":
            a, b = scene.objects
            boxes[i] = region_split(a, b, rng)
            texts[i] = (text, _caption_one(a, scene.background, rng), _caption_one(b, scene.background, rng))
            ratios[i] = 0.0 if mode == "regions" else rng.uniform(*BASE_RATIOS)
        images[i] = np.asarray(render(scene, size))
    return images, texts, boxes, ratios

VOCABULARY_KNOWS = "shapes, colours, sizes, positions and backgrounds"


def vocabulary(n: int = 20_000, seed: int = 0) -> list[str]:
    """Every word the training captions use (lower case), read from `n` drawn captions: what the
    embedded model knows. 20,000 draws reach every word of every caption template many times."""
    rng = random.Random(seed)
    words: set[str] = set()
    for _ in range(n):
        words.update(re.findall(r"[a-z]+", caption(sample_scene(rng), rng).lower()))
    return sorted(words)


def contact_sheet(path: str | Path, n: int = 64, seed: int = 0, size: int = 64,
                  split: Literal["train", "heldout"] = "train") -> list[str]:
    """Save a grid of `n` samples as a PNG (to eyeball the world) and return their captions."""
    images, captions, _ = make_dataset(n, seed, size, split)
    cols = int(math.ceil(math.sqrt(n)))
    rows = int(math.ceil(n / cols))
    sheet = Image.new("RGB", (cols * (size + 2), rows * (size + 2)), (255, 255, 255))
    for i, arr in enumerate(images):
        sheet.paste(Image.fromarray(arr), ((i % cols) * (size + 2), (i // cols) * (size + 2)))
    sheet.save(path)
    return captions


if __name__ == "__main__":  # python -m embedded.world out.png [split]
    import sys

    target = sys.argv[1] if len(sys.argv) > 1 else "world.png"
    which = sys.argv[2] if len(sys.argv) > 2 else "train"
    for line in contact_sheet(target, split=which):  # type: ignore[arg-type]
        print(line)
