"""What the embedded model's scribble ControlNet does, measured by the pixel checker.

    python -m embedded.evaluate_control [--model assets/embedded-model] [--n 200] [--card]

Held-out shapes (placed anywhere, from a seed the training never used, with noise seeds it never
saw), each asked for by a prompt that names only its colour and background ("cyan, black
background"); the scribble of its outline gives shape and place. A picture counts when the
checker reads the scribble's shape and the object's centroid lies within 6 px (at 64 px) of the
centroid of the shape the scribble outlines. The same prompts and seeds without the ControlNet
are the control: what the prompt alone gives. Then a cyan star drawn where no training picture
put a star (scribbles.STAR_HOLDOUT). Sampler, steps and CFG are the model record's (fidelity.py).
With --card the figures are written into the ControlNet folder's README.md.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from studio.models.sources import CONTROL_FOLDER

from .checker import check
from .fidelity import CFG, STEPS, fresh, generators, wilson
from .scribbles import STAR_HOLDOUT, Placed, colour_caption, render_placed, sample_placed, scribble
from .world import COLOURS, Obj, Scene

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "assets" / "embedded-model"
HELDOUT_SEED = 90_210        # placements: not the training's seed (3)
NOISE_SEED = 700_000         # noise seeds from here: none the training drew
WITHIN_PX = 6.0
SIZE = 64


def heldout(n: int, seed: int = HELDOUT_SEED) -> list[tuple[Placed, np.ndarray]]:
    """`n` held-out shapes and their scribbles (stroke 2 px, a little wobble, as a hand draws)."""
    rng = random.Random(seed)
    return [(p, scribble(p, SIZE, rng, width=2.0, wobble=0.03)) for p in (sample_placed(rng, train=False)
                                                                           for _ in range(n))]


def stars_in_holdout(n: int, seed: int = HELDOUT_SEED + 1) -> list[tuple[Placed, np.ndarray]]:
    """Cyan stars centred inside STAR_HOLDOUT, where no training star was, on varied backgrounds."""
    rng = random.Random(seed)
    hx, hy, hr = STAR_HOLDOUT
    out = []
    for _ in range(n):
        a, d = rng.uniform(0, 2 * math.pi), hr * 0.8 * math.sqrt(rng.random())
        r = rng.uniform(0.12, min(0.19, hy - 0.03))
        bg = rng.choice([c for c in COLOURS if c != "cyan"])
        p = Placed("star", "cyan", bg, hx + d * math.cos(a), hy + d * math.sin(a), r)
        out.append((p, scribble(p, SIZE, rng, width=2.0, wobble=0.03)))
    return out


def _scene(p: Placed) -> Scene:
    """The checker's scene for a placed shape (size and cell are not scored here)."""
    return Scene((Obj(p.shape, p.colour, "small", "center"),), p.background)


def target_centroid(p: Placed) -> tuple[float, float]:
    """The centroid of the shape the scribble outlines, read by the checker from its render."""
    return check(render_placed(p, SIZE), _scene(p)).found["centroid"]


def verdict(image: Image.Image, p: Placed) -> dict:
    s = check(image, _scene(p))
    got = s.found.get("centroid")
    want = target_centroid(p)
    off = math.hypot(got[0] - want[0], got[1] - want[1]) * SIZE if got else None
    placed = off is not None and off <= WITHIN_PX
    return {"shape": bool(s.shape), "placed": placed, "colour": bool(s.colour), "background": bool(s.background),
            "shape and place": bool(s.shape) and placed, "offset_px": None if off is None else round(off, 2)}


def load(model: Path):
    from diffusers import ControlNetModel, StableDiffusionControlNetPipeline, StableDiffusionPipeline
    controlnet = ControlNetModel.from_pretrained(model / CONTROL_FOLDER, torch_dtype=torch.float32)
    pipe = StableDiffusionControlNetPipeline.from_pretrained(
        model, controlnet=controlnet, dtype=torch.float32, local_files_only=True, safety_checker=None,
        requires_safety_checker=False)
    plain = StableDiffusionPipeline.from_pipe(pipe)
    for p in (pipe, plain):
        p.set_progress_bar_config(disable=True)
    return pipe, plain


def run(pipe, items: list[tuple[Placed, np.ndarray]], controlled: bool, first_seed: int,
        chunk: int = 25) -> list[dict]:
    """Each item's verdict, with the scribble as control (or without any)."""
    out = []
    for start in range(0, len(items), chunk):
        part = items[start:start + chunk]
        seeds = range(first_seed + start, first_seed + start + len(part))
        kwargs = dict(num_inference_steps=STEPS, guidance_scale=CFG, height=SIZE, width=SIZE,
                      generator=generators(seeds))
        if controlled:
            kwargs["image"] = [Image.fromarray(s).convert("RGB") for _, s in part]
        images = fresh(pipe, seeds[0])([colour_caption(p) for p, _ in part], **kwargs).images
        out += [verdict(img, p) for img, (p, _) in zip(images, part)]
    return out


KEYS = ("shape and place", "shape", "placed", "colour", "background")


def summary(verdicts: list[dict]) -> dict:
    n = len(verdicts)
    row = {k: round(sum(v[k] for v in verdicts) / n, 4) for k in KEYS}
    row["n"] = n
    row["interval"] = wilson(row["shape and place"], n)
    offs = [v["offset_px"] for v in verdicts if v["offset_px"] is not None]
    row["median offset px"] = round(float(np.median(offs)), 2) if offs else None
    return row


def evaluate(model: Path, n: int, stars: int) -> dict:
    began = time.time()
    pipe, plain = load(model)
    items, star_items = heldout(n), stars_in_holdout(stars)
    figures = {"with the scribble": summary(run(pipe, items, True, NOISE_SEED)),
               "without control (the prompt alone)": summary(run(plain, items, False, NOISE_SEED)),
               "cyan star where no training star was": summary(run(pipe, star_items, True, NOISE_SEED + 50_000)),
               "settings": {"held-out shapes": n, "stars": stars, "steps": STEPS, "cfg": CFG, "size": SIZE,
                            "within px": WITHIN_PX, "threads": torch.get_num_threads()}}
    figures["seconds"] = round(time.time() - began, 1)
    return figures


def card(model: Path, figures: dict) -> str:
    """The ControlNet's README: what it is, how it was made (training.json), what it does."""
    rec = json.loads((model / CONTROL_FOLDER / "training.json").read_text(encoding="utf-8"))
    w, p, s = (figures[k] for k in ("with the scribble", "without control (the prompt alone)",
                                     "cyan star where no training star was"))
    rows = "\n".join(f"| {name} | {r['shape and place']:.1%} ({r['interval'][0]:.1%}-{r['interval'][1]:.1%}) | "
                     f"{r['shape']:.1%} | {r['placed']:.1%} | {r['colour']:.1%} | {r['median offset px']} |"
                     for name, r in (("with the scribble", w), ("without control", p), ("cyan star, held-out place", s)))
    c = rec["config"]
    from .controlnet import teacher_unet_sha256
    trained_beside = rec.get("teacher_unet_sha256")
    teacher = ("" if trained_beside in (None, teacher_unet_sha256(model)) else
               f"\n- trained beside an earlier teacher UNet (sha256 {trained_beside[:12]}...); the teacher has been "
               "trained on since (its card says how): the figures below are measured with the current one")
    return f"""# embedded-scribble: the embedded model's scribble ControlNet

A ControlNet (diffusers `ControlNetModel`, {rec['params']:,} parameters) for the embedded shape-world
model: draw an outline (white strokes on black, as ControlNet's scribble models take it; a drawing
in black on white goes through the `invert` preprocessor) and the object takes its shape and place,
while the prompt gives colour and background. The studio lists it as `embedded-scribble` in every
ControlNet unit; the sketch pad draws what it takes.

## How it was made
    {rec['command']}

- from the teacher UNet's encoder (`ControlNetModel.from_unet`, zero convolutions at zero); UNet, text
  encoder and VAE frozen
- {c['n_examples']:,} pictures of one shape anywhere at any size (embedded/scribbles.py), each with a
  scribble of its outline (1-3 px strokes, clean or wobbly) and a caption naming colour and
  background only (45%), colour and shape (40%) or nothing (15%); no star centred in the held-out disc
  {STAR_HOLDOUT[:2]} radius {STAR_HOLDOUT[2]}
- {rec['steps']} steps, batch {c['batch']}, lr {c['lr']} (constant after {c['warmup']} warm-up steps), the
  teacher's v-prediction loss and noise weighting, {c['high_noise_share']:.0%} of each batch at t >= 900;
  exported: a slow average (decay {c['average']}) in fp16
- time: {rec['seconds'] / 60:.0f} min of training (+{rec['data seconds']:.0f} s of data) on {rec['machine']},
  {rec['threads']} threads; loss {rec['loss_first_100']} (first 100 steps) -> {rec['loss_last_100']} (last 100){teacher}

## What it does (python -m embedded.evaluate_control --card)
{figures['settings']['held-out shapes']} held-out shapes placed anywhere (seeds the training never used), the
prompt naming only colour and background ("cyan, black background"), {STEPS} steps, CFG {CFG}, 64 px. A
picture counts when the pixel checker reads the scribble's shape and the object's centroid is within
{WITHIN_PX:g} px of the outlined shape's:

| | shape and place (95% interval) | shape | place | colour | median offset px |
|---|---|---|---|---|---|
{rows}

The star row: {figures['settings']['stars']} cyan stars drawn inside the disc where training never centred a
star. Measured in {figures['seconds']:.0f} s on the CPU.
"""


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m embedded.evaluate_control", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--stars", type=int, default=40)
    p.add_argument("--card", action="store_true", help="write the figures into the ControlNet's README.md")
    args = p.parse_args(argv)
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    figures = evaluate(args.model, args.n, args.stars)
    print(json.dumps(figures, indent=2))
    if args.card:
        (args.model / CONTROL_FOLDER / "evaluation.json").write_text(json.dumps(figures, indent=2) + "\n")
        (args.model / CONTROL_FOLDER / "README.md").write_text(card(args.model, figures), encoding="utf-8")
    return figures


if __name__ == "__main__":
    main()
