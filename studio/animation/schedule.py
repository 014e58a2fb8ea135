"""Keyframe schedules in Deforum's syntax: a value for every frame of an animation.

    0:(1.0), 30:(1.02)                         numbers: linear or smooth in-betweens, held after
    0:(1.0025 + 0.002*sin(1.25*pi*t/30))       an expression of t (the frame), max_f (the last
                                               frame) and s (the seed): worked out every frame
                                               until the next key, as Deforum does
    "max_f-1":(0.5)                            a key that is an expression of max_f
    1.02                                       one value for every frame

Commas inside parentheses belong to the expression (`max(t, 3)` works, unlike Deforum's split).
Prompt schedules map frames to prompts (`{"0": "a red circle", "30": "a blue circle"}` or one
`frame: prompt` a line) and say, for each frame, which two keyframes' prompts it blends and how far.
Everything is read by studio.animation.expressions: nothing a user types is evaluated as code.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from studio.animation.expressions import Expression, ScheduleError

INTERPOLATIONS = ("linear", "smooth")
MAX_KEYS = 500
_KEY = re.compile(r'^\s*("[^"]*"|\'[^\']*\'|[^:]+?)\s*:\s*(.*?)\s*$', re.S)


@dataclass(frozen=True)
class Key:
    frame: int
    number: float | None = None            # a plain value ...
    expression: Expression | None = None   # ... or one worked out per frame

    def at(self, frame: int, max_f: int, seed: int) -> float:
        return self.number if self.expression is None else self.expression(t=frame, max_f=max_f, s=seed)


def split_top_level(text: str, separator: str = ",") -> list[str]:
    """Split at separators outside parentheses and quotes."""
    parts, depth, quote, start = [], 0, None, 0
    for i, ch in enumerate(text):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise ScheduleError(f"{text!r}: a ')' closes nothing.")
        elif ch == separator and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if depth or quote:
        raise ScheduleError(f"{text!r}: a parenthesis or quote is left open.")
    return [p for p in (*parts, text[start:]) if p.strip()]


def key_frame(text: str, frames: int) -> int:
    """A keyframe number: an integer, or an expression of max_f ("max_f-1")."""
    text = text.strip().strip("\"'")
    value = int(text) if text.lstrip("-").isdigit() else round(Expression(text, ("max_f",))(max_f=frames - 1))
    if value < 0:
        raise ScheduleError(f"Keyframe {text!r} is before frame 0.")
    return value


def parse_keys(text: str, frames: int) -> list[Key]:
    """The keys of one schedule string, sorted by frame (a repeated frame: the last one counts)."""
    text = (text or "").strip()
    if not text:
        raise ScheduleError("A schedule is empty; write a value such as 0:(1.0).")
    entries = split_top_level(text)
    if len(entries) > MAX_KEYS:
        raise ScheduleError(f"A schedule has {len(entries)} keyframes; at most {MAX_KEYS}.")
    keys: dict[int, Key] = {}
    for entry in entries:
        if len(split_top_level(entry, ":")) == 1:       # a bare value: every frame
            frame, value = 0, entry
        else:
            match = _KEY.match(entry)
            frame, value = key_frame(match.group(1), frames), match.group(2)
        keys[frame] = _key(frame, unwrap(value.strip()))
    return [keys[f] for f in sorted(keys)]


def unwrap(text: str) -> str:
    """`(expr)` -> `expr` when the first parenthesis closes at the end."""
    depth = 0
    for i, ch in enumerate(text):
        depth += (ch == "(") - (ch == ")")
        if depth == 0:
            return text[1:-1] if i == len(text) - 1 and text.startswith("(") else text
    return text


def _key(frame: int, text: str) -> Key:
    try:
        return Key(frame, number=float(text))
    except ValueError:
        return Key(frame, expression=Expression(text, ("t", "max_f", "s")))


def hermite_slopes(xs: list[float], ys: list[float]) -> list[float]:
    """Monotone cubic slopes (Fritsch-Carlson): no overshoot between keys; flat at both ends."""
    h = [b - a for a, b in zip(xs, xs[1:])]
    d = [(y1 - y0) / hk for y0, y1, hk in zip(ys, ys[1:], h)]
    slopes = [0.0] * len(xs)
    for k in range(1, len(xs) - 1):
        if d[k - 1] * d[k] > 0:
            w1, w2 = 2 * h[k] + h[k - 1], h[k] + 2 * h[k - 1]
            slopes[k] = (w1 + w2) / (w1 / d[k - 1] + w2 / d[k])
    return slopes


def _between(x: float, x0: float, x1: float, y0: float, y1: float, m0: float, m1: float, smooth: bool) -> float:
    h = x1 - x0
    u = (x - x0) / h
    if not smooth:
        return y0 + (y1 - y0) * u
    return ((2 * u ** 3 - 3 * u ** 2 + 1) * y0 + (u ** 3 - 2 * u ** 2 + u) * h * m0
            + (-2 * u ** 3 + 3 * u ** 2) * y1 + (u ** 3 - u ** 2) * h * m1)


def values(text: str, frames: int, seed: int = 0, interpolation: str = "linear") -> list[float]:
    """The schedule's value at frames 0 .. frames-1."""
    if interpolation not in INTERPOLATIONS:
        raise ScheduleError(f"Unknown interpolation {interpolation!r}; one of {', '.join(INTERPOLATIONS)}.")
    max_f = frames - 1
    keys = parse_keys(text, frames)         # keys past the end still shape the frames before them
    knots = [k.at(k.frame, max_f, seed) for k in keys]
    slopes = hermite_slopes([k.frame for k in keys], knots)
    out, i = [], 0
    for t in range(frames):
        while i + 1 < len(keys) and keys[i + 1].frame <= t:
            i += 1
        key = keys[i]
        if key.expression is not None:
            out.append(key.at(t, max_f, seed))
        elif t <= key.frame or i + 1 == len(keys):
            out.append(key.number)
        else:
            out.append(_between(t, key.frame, keys[i + 1].frame, knots[i], knots[i + 1], slopes[i],
                                slopes[i + 1], interpolation == "smooth"))
    return out


# ------------------------------------------------------------------------------ prompts

@dataclass(frozen=True)
class PromptBlend:
    """What frame t draws: `prompt` blended toward `toward` by `weight` (0: prompt alone)."""
    prompt: str
    negative: str
    toward: str
    toward_negative: str
    weight: float


def parse_prompts(text: str, frames: int) -> list[tuple[int, str, str]]:
    """(frame, prompt, negative) keys from a JSON object or `frame: prompt` lines; a prompt's
    negative follows `--neg` (Deforum's form) or comes from the tab's negative prompt."""
    text = (text or "").strip()
    if not text:
        raise ScheduleError("The prompt schedule is empty; write e.g. 0: a red circle.")
    if text.startswith("{"):
        try:
            pairs = list(json.loads(text).items())
        except (json.JSONDecodeError, AttributeError) as exc:
            raise ScheduleError(f"The prompt schedule is not a JSON object of frame: prompt ({exc}).") from None
    else:
        pairs = [line.split(":", 1) if ":" in line else ("0", line) for line in text.splitlines() if line.strip()]
    if len(pairs) > MAX_KEYS:
        raise ScheduleError(f"The prompt schedule has {len(pairs)} keyframes; at most {MAX_KEYS}.")
    keys = {}
    for frame, prompt in pairs:
        if not isinstance(prompt, str):
            raise ScheduleError(f"Keyframe {frame}: a prompt must be text, not {prompt!r}.")
        positive, _, negative = prompt.partition("--neg")
        try:
            at = key_frame(str(frame), frames)
        except ScheduleError:
            raise ScheduleError(f"Prompt keyframe {str(frame).strip()!r} is not a frame number: write one "
                                "`frame: prompt` a line, e.g. `0: a red circle`.") from None
        keys[at] = (positive.strip(), negative.strip())
    return [(f, *keys[f]) for f in sorted(keys)]


def prompt_blends(text: str, frames: int, negative: str = "", blend: bool = True,
                  loop: bool = False) -> list[PromptBlend]:
    """Per frame: the keyframe prompt it starts from, the next one and how far toward it (linear).
    `blend=False` cuts from one prompt to the next (Deforum's 2D behaviour); `loop` travels from
    the last keyframe back to the first, arriving one frame after the end, for a seamless loop."""
    keys = parse_prompts(text, frames)
    if loop:
        keys.append((frames, *keys[0][1:]))
    out, i = [], 0
    for t in range(frames):
        while i + 1 < len(keys) and keys[i + 1][0] <= t:
            i += 1
        frame, prompt, neg = keys[i]
        if blend and i + 1 < len(keys) and t >= frame:
            nframe, nprompt, nneg = keys[i + 1]
            weight = (t - frame) / (nframe - frame)
        else:
            nprompt, nneg, weight = prompt, neg, 0.0
        out.append(PromptBlend(prompt, neg or negative, nprompt, nneg or negative, weight))
    return out
