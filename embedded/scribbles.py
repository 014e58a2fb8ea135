"""The scribble ControlNet's world: one shape at any place and size (not only the nine cells of
the text-to-image world), its picture, and a scribble of its outline as an artist would draw it
on the sketch pad: white strokes on black, clean or wobbly, thin or thick.

Stars are never centred in STAR_HOLDOUT in training, so the evaluation can draw one where no
training picture put a star. Colour and background pairs held out of the world's training stay
held out here too. Everything is deterministic from a seed.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from .world import COLOURS, HELDOUT_COLOUR_BG, RING_HOLE, SHAPES, SUPERSAMPLE, draw_shape, shape_polygon

RADIUS = (0.10, 0.24)              # the shape's bounding circle, fractions of the side
MARGIN = 0.03                      # kept clear of the border
STAR_HOLDOUT = (0.62, 0.22, 0.10)  # (cx, cy, radius): no training star is centred in this disc


@dataclass(frozen=True)
class Placed:
    """A single shape anywhere: centre and radius in fractions of the side."""

    shape: str
    colour: str
    background: str
    cx: float
    cy: float
    r: float


def in_star_holdout(cx: float, cy: float) -> bool:
    hx, hy, hr = STAR_HOLDOUT
    return math.hypot(cx - hx, cy - hy) < hr


def sample_placed(rng: random.Random, train: bool = True) -> Placed:
    """A random placed shape; in training no held-out colour/background pair, no star in STAR_HOLDOUT."""
    while True:
        shape, colour = rng.choice(SHAPES), rng.choice(tuple(COLOURS))
        background = rng.choice([c for c in COLOURS if c != colour])
        r = rng.uniform(*RADIUS)
        cx, cy = (rng.uniform(r + MARGIN, 1 - r - MARGIN) for _ in range(2))
        if train and ((colour, background) in HELDOUT_COLOUR_BG or (shape == "star" and in_star_holdout(cx, cy))):
            continue
        return Placed(shape, colour, background, cx, cy, r)


def render_placed(p: Placed, size: int = 64) -> Image.Image:
    """The shape's picture, drawn as the world draws (4x supersampled, box-filtered)."""
    side = size * SUPERSAMPLE
    bg = COLOURS[p.background]
    img = Image.new("RGB", (side, side), bg)
    draw_shape(ImageDraw.Draw(img), p.shape, p.cx * side, p.cy * side, p.r * side, COLOURS[p.colour], bg)
    return img.resize((size, size), Image.Resampling.BOX)


def _outline(shape: str, cx: float, cy: float, r: float) -> list[list[tuple[float, float]]]:
    """The shape's outline as closed loops of points (a ring has two)."""
    def circle(radius: float) -> list[tuple[float, float]]:
        return [(cx + radius * math.cos(a), cy + radius * math.sin(a))
                for a in np.linspace(0, 2 * math.pi, 48, endpoint=False)]
    corners = shape_polygon(shape, cx, cy, r)
    if corners is not None:
        return [corners]
    return [circle(r), circle(RING_HOLE * r)] if shape == "ring" else [circle(r)]


def _densify(loop: list[tuple[float, float]], step: float) -> np.ndarray:
    """The closed loop with a point every `step` pixels along it (so wobble can bend the sides)."""
    pts = np.asarray(loop + loop[:1], dtype=np.float64)
    out = []
    for a, b in zip(pts[:-1], pts[1:]):
        n = max(1, int(np.hypot(*(b - a)) / step))
        out.extend(a + (b - a) * k / n for k in range(n))
    return np.asarray(out)


def _wobble(points: np.ndarray, amount: float, rng: random.Random) -> np.ndarray:
    """Smooth random displacement of a closed loop, `amount` pixels at most (a hand's tremble)."""
    if amount <= 0:
        return points
    n = len(points)
    noise = np.asarray([[rng.gauss(0, 1), rng.gauss(0, 1)] for _ in range(n)])
    kernel = np.ones(max(3, n // 8)) / max(3, n // 8)
    smooth = np.stack([np.convolve(np.tile(noise[:, i], 3), kernel, "same")[n:2 * n] for i in range(2)], axis=1)
    smooth /= max(np.abs(smooth).max(), 1e-6)
    return points + amount * smooth


def scribble(p: Placed, size: int = 64, rng: random.Random | None = None,
             width: float | None = None, wobble: float | None = None) -> np.ndarray:
    """White strokes on black (uint8 size x size) along the shape's outline. With `rng`: a random
    stroke width (1-3 px) and wobble (none, or up to 6% of the radius), unless given."""
    rng = rng or random.Random(0)
    side = size * SUPERSAMPLE
    width = rng.choice((1.0, 1.5, 2.0, 3.0)) if width is None else width
    wobble = (0.0 if rng.random() < 0.4 else rng.uniform(0.0, 0.06)) if wobble is None else wobble
    img = Image.new("L", (side, side), 0)
    draw = ImageDraw.Draw(img)
    for loop in _outline(p.shape, p.cx * side, p.cy * side, p.r * side):
        pts = _wobble(_densify(loop, 2.0 * SUPERSAMPLE), wobble * p.r * side, rng)
        line = [tuple(q) for q in pts] + [tuple(pts[0])]
        draw.line(line, fill=255, width=max(1, round(width * SUPERSAMPLE)), joint="curve")
    small = np.asarray(img.resize((size, size), Image.Resampling.BOX))
    return np.where(small >= 96, 255, 0).astype(np.uint8)


def _a(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def colour_caption(p: Placed, rng: random.Random | None = None) -> str:
    """A prompt naming only colour and background ("cyan, black background" or "a cyan one on a
    black background"): the scribble is to give shape and place."""
    if rng is None or rng.random() < 0.5:
        return f"{p.colour}, {p.background} background"
    return f"{p.colour} on {_a(p.background + ' background')}"


def shape_caption(p: Placed, rng: random.Random) -> str:
    """A prompt naming colour, shape and (mostly) background, as the world's captions do."""
    noun = _a(f"{p.colour} {p.shape}")
    return noun if rng.random() < 0.2 else f"{noun} on {_a(p.background + ' background')}"


CAPTIONS = ((0.45, colour_caption), (0.40, shape_caption))   # the rest: the empty caption


def caption_for(p: Placed, rng: random.Random) -> str:
    """A training caption: colour and background only, colour and shape, or none."""
    u = rng.random()
    for share, make in CAPTIONS:
        if u < share:
            return make(p, rng)
        u -= share
    return ""


def make_examples(n: int, seed: int, size: int = 64) -> tuple[np.ndarray, np.ndarray, list[str], list[Placed]]:
    """`n` training examples: pictures (n x size x size x 3), scribbles (n x size x size), captions, shapes."""
    rng = random.Random(seed)
    pictures = np.empty((n, size, size, 3), dtype=np.uint8)
    scribbles = np.empty((n, size, size), dtype=np.uint8)
    captions, placed = [], []
    for i in range(n):
        p = sample_placed(rng)
        pictures[i] = np.asarray(render_placed(p, size))
        scribbles[i] = scribble(p, size, rng)
        captions.append(caption_for(p, rng))
        placed.append(p)
    return pictures, scribbles, captions, placed
