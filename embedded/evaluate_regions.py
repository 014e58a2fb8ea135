"""Regional prompts on the embedded model, measured by the pixel checker, through the studio.

    python -m embedded.evaluate_regions [--n 100]

Two-object prompts: "an orange circle on the left and a cyan square on the right on a black
background" (one prompt, as the world's two-object captions say it) against the same objects as
regions, "an orange circle on the left on a black background ADDCOL a cyan square on the right on
a black background" (ADDROW and top / bottom for the second half), and the one prompt as the
regions' base ("... ADDBASE <regions>", base ratio BASE_RATIO: what Regional Prompter's users do,
a description of the whole mixed into each region). A picture counts when the
checker reads each half (left / right, or top / bottom) as its object's colour and shape on the
background. Objects: (colour, shape) pairs of training, two different colours, a background
unlike both, drawn from a seed of their own; noise seeds the training never used; the studio's
defaults otherwise (sampler, 20 steps, CFG), through Studio.local.run (the product's own path).
BASE_RATIO was chosen on 30 prompts a layout of another draw (CHOOSING_SEED, noise seeds of their
own), not on the record's prompts: `--choose` prints that draw's figures for each ratio tried.
"""

from __future__ import annotations

import argparse
import json
import random
import time

import numpy as np
import torch

from .checker import check
from .fidelity import wilson
from .world import COLOURS, HELDOUT_PAIRS, SHAPES, Obj, Scene

PROMPT_SEED = 5_151
CHOOSING_SEED = 4_242        # the draw BASE_RATIO was chosen on
BASE_RATIO = 0.5
NOISE_SEED = 800_000
CHOICES = (0.3, 0.5, 0.7, 0.85)     # base ratios --choose tries
SIDES = {"columns": (("left", "right"), "ADDCOL"), "rows": (("top", "bottom"), "ADDROW")}


def _a(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def pairs(n: int, seed: int = PROMPT_SEED) -> list[tuple[Obj, Obj, str]]:
    """`n` (first object, second object, background): training pairs, two colours, a third background."""
    rng = random.Random(seed)
    known = [(c, s) for c in COLOURS for s in SHAPES if (c, s) not in HELDOUT_PAIRS]
    out = []
    while len(out) < n:
        (c1, s1), (c2, s2) = rng.sample(known, 2)
        if c1 == c2:
            continue
        bg = rng.choice([c for c in COLOURS if c not in (c1, c2)])
        out.append((Obj(s1, c1, "large", ""), Obj(s2, c2, "large", ""), bg))
    return out


def prompts(a: Obj, b: Obj, bg: str, layout: str) -> tuple[str, str, str]:
    """(the plain prompt, the regional prompt, the plain one as the regions' base) for `a` on the
    first side and `b` on the second."""
    (one, two), keyword = SIDES[layout]
    where = {"left": "on the left", "right": "on the right", "top": "at the top", "bottom": "at the bottom"}
    back = f"on {_a(bg + ' background')}"
    first, second = _a(f"{a.colour} {a.shape}"), _a(f"{b.colour} {b.shape}")
    plain = f"{first} {where[one]} and {second} {where[two]} {back}"
    regional = f"{first} {where[one]} {back} {keyword} {second} {where[two]} {back}"
    return plain, regional, f"{plain} ADDBASE {regional}"


def halves(picture: np.ndarray, layout: str) -> tuple[np.ndarray, np.ndarray]:
    h, w = picture.shape[:2]
    if layout == "columns":
        return picture[:, : w // 2], picture[:, w // 2:]
    return picture[: h // 2], picture[h // 2:]


def both_right(picture: np.ndarray, a: Obj, b: Obj, bg: str, layout: str) -> dict:
    verdicts = [check(part, Scene((o,), bg)) for part, o in zip(halves(picture, layout), (a, b))]
    return {"both": all(v.colour and v.shape for v in verdicts),
            "objects right": sum(bool(v.colour and v.shape) for v in verdicts) / 2,
            "colours right": sum(bool(v.colour) for v in verdicts) / 2}


def _studio(model: str, prefix: str):
    """The studio on `model` (a model folder; "": the embedded model), saving into a temporary folder."""
    from studio.config import Settings
    from studio.serving.studio import Studio
    import tempfile
    return Studio.from_settings(Settings(model=model, outputs=tempfile.mkdtemp(prefix=prefix)))


def evaluate(n: int, model: str = "") -> dict:
    began = time.time()
    studio = _studio(model, "regions-eval-")
    figures: dict = {}
    for layout in SIDES:
        rows = {"one prompt": [], "regions": [], "one prompt as the regions' base": []}
        for i, (a, b, bg) in enumerate(pairs(n, PROMPT_SEED + (layout == "rows"))):
            for name, text in zip(rows, prompts(a, b, bg, layout)):
                made = studio.make_request("txt2img", prompt=text, seed=NOISE_SEED + i, width=64, height=64,
                                           base_ratio=BASE_RATIO)
                picture = np.asarray(studio.local.run(made).images[0].image)
                rows[name].append(both_right(picture, a, b, bg, layout))
        figures[layout] = {name: _summary(v) for name, v in rows.items()}
    figures["settings"] = {"prompts a layout": n, "base ratio": BASE_RATIO, "threads": torch.get_num_threads(),
                           "seconds": round(time.time() - began, 1)}
    return figures


def choose(n: int = 30, model: str = "") -> dict:
    """Both objects right with the one prompt as the base, for each base ratio of CHOICES, on
    `n` prompts a layout of the choosing draw: what BASE_RATIO was chosen on."""
    studio = _studio(model, "regions-choose-")
    figures = {}
    for layout in SIDES:
        for ratio in CHOICES:
            right = 0
            for i, (a, b, bg) in enumerate(pairs(n, CHOOSING_SEED + (layout == "rows"))):
                made = studio.make_request("txt2img", prompt=prompts(a, b, bg, layout)[2], seed=NOISE_SEED + 10_000 + i,
                                           width=64, height=64, base_ratio=ratio)
                right += both_right(np.asarray(studio.local.run(made).images[0].image), a, b, bg, layout)["both"]
            figures[f"{layout}, base ratio {ratio}"] = round(right / n, 4)
    return figures


def _summary(verdicts: list[dict]) -> dict:
    n = len(verdicts)
    both = sum(v["both"] for v in verdicts) / n
    return {"both objects right": round(both, 4), "interval": wilson(both, n),
            "objects right": round(sum(v["objects right"] for v in verdicts) / n, 4),
            "colours right": round(sum(v["colours right"] for v in verdicts) / n, 4), "n": n}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m embedded.evaluate_regions", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=100, help="prompts a layout (columns, rows)")
    p.add_argument("--choose", action="store_true", help="the base ratios tried on the choosing draw instead")
    p.add_argument("--model", default="", help="a model folder (default: the embedded model)")
    args = p.parse_args(argv)
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    figures = choose(model=args.model) if args.choose else evaluate(args.n, args.model)
    print(json.dumps(figures, indent=2))
    return figures


if __name__ == "__main__":
    main()
