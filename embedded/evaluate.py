"""Evaluate the embedded model and print the figures of issue 3 (and write them to its README).

    python -m embedded.evaluate [--model assets/embedded-model] [--n 200] [--readme]
    python -m embedded.evaluate --validation [--draws 2]   # validation prompts only

1. prompt fidelity on held-out prompts (colour/shape pairs never seen in training), scored by
   the pixel checker (embedded/checker.py): colour, background, position, shape, on three
   draws of 200 prompts pooled (600: on 200, a figure near 90% is known only to +-4 points;
   `draw_seeds`), with each draw's figures, 95% intervals and colour by held-out pair; and on
   held-out prompts that name no position ("a red circle on a blue background"); beside them the
   checker on the VAE's own reconstructions of those scenes' renders: what the decoder lets
   any UNet reach
2. negative prompt: "a circle" with negative "red" vs none -> share of red object pixels; the same
   for the colour the model paints most for "a circle"
3. img2img at strength 0.3 keeps the layout (object still in its cell)
4. inpainting "a blue square" in a masked cell -> a blue object in the mask, the rest unchanged
   (with the model's own 9-channel inpainting UNet when it has one, as the studio does; the
   text-to-image UNet's latent blending is printed beside it)
5. a reference image of a pink circle ({image}, reference-only attention): pink share without/with
6. speed: median seconds per 20-step image on this machine (batch 1)
All at the studio's default sampler, 20 steps, CFG 5, fixed seeds (deterministic).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from studio.generation.engine import composite
from studio.models.sources import INPAINT_FOLDER
from studio.samplers import DEFAULT_SCHEDULER

from .checker import check, nearest_colour, score_many
from .common import machine_name
from .fidelity import (CFG, RECORD_DRAWS, REFERENCE_COLOUR, REFERENCE_KEY, STEPS, colour_by_pair, draw_seeds,
                       fidelity_scores, fresh, generators, shares, wilson)
from .world import COLOURS, POSITIONS, Scene, heldout_prompts, render

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "assets" / "embedded-model"


def load(model: Path, device: str):
    from diffusers import (StableDiffusionImg2ImgPipeline, StableDiffusionInpaintPipeline,
                           StableDiffusionPipeline)
    pipe = StableDiffusionPipeline.from_pretrained(model, dtype=torch.float32, local_files_only=True,
                                                   safety_checker=None, requires_safety_checker=False)
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    blend = StableDiffusionInpaintPipeline.from_pipe(pipe)
    own = None
    if (model / INPAINT_FOLDER / "config.json").is_file():   # what the studio's Inpainting tab uses
        from diffusers import UNet2DConditionModel
        unet9 = UNet2DConditionModel.from_pretrained(model / INPAINT_FOLDER, torch_dtype=torch.float32)
        own = StableDiffusionInpaintPipeline.from_pipe(pipe, unet=unet9.to(device))
        own.set_progress_bar_config(disable=True)
    return pipe, StableDiffusionImg2ImgPipeline.from_pipe(pipe), own or blend, blend if own else None


def object_colour_share(image: Image.Image, colour: str) -> float:
    """Among pixels that differ from the background (border median), the share nearest to
    `colour` in the world's palette."""
    arr = np.asarray(image.convert("RGB"), dtype=np.float32)
    border = np.concatenate([arr[:2].reshape(-1, 3), arr[-2:].reshape(-1, 3),
                             arr[:, :2].reshape(-1, 3), arr[:, -2:].reshape(-1, 3)])
    bg = np.median(border, axis=0)
    obj = arr[np.sqrt(((arr - bg) ** 2).sum(-1)) > 40]
    if len(obj) == 0:
        return 0.0
    names = list(COLOURS)
    palette = np.array([COLOURS[n] for n in names], dtype=np.float32)
    nearest = ((obj[:, None] - palette[None]) ** 2).sum(-1).argmin(1)
    return float((nearest == names.index(colour)).mean())


def fidelity(pipe, n: int, size: int, chunk: int = 25, position: bool = True) -> dict:
    """Shares of `n` held-out prompts whose picture has the asked colour, background, position
    and shape (and all of them); with `position=False` the prompts name no position and it is
    not scored."""
    return shares(fidelity_scores(pipe, n, size, chunk, position), position)


@torch.no_grad()
def reconstruction(vae, n: int, size: int) -> dict:
    """The checker on encode -> decode of the held-out scenes' own renders (the scenes `fidelity`
    prompts for): the UNet paints through this decoder, so its colour or shape cannot beat these
    by much. Measured (issue 3): the 2026-12-01 VAE read back held-out colour only 62% of the
    time (a yellow circle, never in its training, came back an orange ring), and the model's
    generations scored 64%."""
    items = heldout_prompts(n, seed=0)
    x = torch.from_numpy(np.stack([np.asarray(render(s, size)) for s, _ in items]))
    x = x.permute(0, 3, 1, 2).to(vae.device, vae.dtype) / 127.5 - 1
    rec = torch.cat([vae.decode(vae.encode(part).latent_dist.mode()).sample.clamp(-1, 1).float().cpu()
                     for part in x.split(50)])
    arrays = ((rec + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    return score_many(list(arrays), [s for s, _ in items])


def negative_prompt(pipe, size: int, n: int = 32) -> dict:
    """ "a circle" without a negative prompt, with negative "red" (the issue's check), and with the
    colour the model paints most for it (it names no colour, so red is rare to begin with): each
    colour's share of the object pixels without and with its name as the negative prompt."""
    def images(neg: str | None) -> list:
        return fresh(pipe)(["a circle"] * n, negative_prompt=[neg] * n if neg else None,
                            num_inference_steps=STEPS, guidance_scale=CFG, height=size, width=size,
                            generator=generators(range(n))).images

    def share(imgs, colour: str) -> float:
        return float(np.mean([object_colour_share(i, colour) for i in imgs]))

    plain = images(None)
    favourite = max(COLOURS, key=lambda c: share(plain, c))
    return {colour: {"without": share(plain, colour), "with it as the negative prompt": share(images(colour), colour)}
            for colour in dict.fromkeys(("red", favourite))} | {"favourite colour": favourite}


def img2img_layout(i2i, size: int, n: int = 50) -> float:
    items = heldout_prompts(n, seed=1)
    kept = 0
    for start in range(0, n, 25):
        part = items[start:start + 25]
        out = fresh(i2i, start)(
            [p for _, p in part], image=[render(s, size) for s, _ in part], strength=0.3,
            num_inference_steps=STEPS, guidance_scale=CFG,
            generator=generators(range(start, start + len(part)))).images
        kept += sum(check(img, scene).found.get("position") == scene.objects[0].position
                    for img, (scene, _) in zip(out, part))
    return kept / n


def inpaint_blue_square(inp, size: int, n: int = 24, seed: int = 0) -> dict:
    """"a blue square" inpainted into one masked grid cell of a flat background. `seed` 0 is the
    record's set (noise seeds 0..n-1); others are validation sets (noise seeds 10,000 seed + i)."""
    rng = np.random.default_rng(seed)
    names = [c for c in COLOURS if c not in ("blue", "cyan", "purple")]
    cells = list(POSITIONS)
    blue_in_mask, changed_outside, share = 0, 0, []
    for i in range(n):
        bg = names[rng.integers(len(names))]
        cell = cells[rng.integers(len(cells))]
        base = render(Scene(objects=(), background=bg), size)
        cx, cy = POSITIONS[cell]
        half = size // 6
        box = (int(cx * size) - half, int(cy * size) - half, int(cx * size) + half, int(cy * size) + half)
        mask = Image.new("L", (size, size), 0)
        mask.paste(255, box)
        noise = 10_000 * seed + i
        out = fresh(inp, noise)("a blue square", image=base, mask_image=mask, height=size, width=size,
                                 strength=1.0, num_inference_steps=STEPS, guidance_scale=CFG,
                                 generator=generators([noise])).images[0]
        out = composite(out, base, mask)
        region = np.asarray(out.crop(box).convert("RGB"), dtype=np.float32).reshape(-1, 3)
        blue = float(np.mean([nearest_colour(p) == "blue" for p in region]))
        share.append(blue)
        blue_in_mask += blue >= 0.25
        outside = np.asarray(mask) == 0
        changed_outside += int(np.any(np.asarray(out)[outside] != np.asarray(base)[outside]))
    return {"blue object in mask (>=25% blue pixels)": blue_in_mask / n,
            "mean blue share in mask": float(np.mean(share)),
            "images with any changed pixel outside the mask": changed_outside}


def reference_colour(pipe, size: int, n: int = 24, strength: float = 0.8,
                     colour: str = REFERENCE_COLOUR) -> dict:
    """Reference-only attention with a circle of `colour` as the reference: the share of object
    pixels of that colour for "a circle on a gray background" without and with it (same seeds)."""
    from studio.generation.reference import Reference, ReferenceGuidance
    from .world import Obj
    ref = Reference(colour, render(Scene((Obj("circle", colour, "large", "center"),), "gray"), size))
    res = {}
    for label, s in (("without reference", 0.0), (f"with reference (strength {strength})", strength)):
        shares = []
        for i in range(n):
            p = fresh(pipe, i)
            with ReferenceGuidance(p, [ref], s, size, size, seed=i):
                img = p("a circle on a gray background", num_inference_steps=STEPS, guidance_scale=CFG,
                        height=size, width=size, generator=generators([i])).images[0]
            shares.append(object_colour_share(img, colour))
        res[label] = float(np.mean(shares))
    return res


def speed(pipe, size: int, runs: int = 7) -> float:
    times = []
    for i in range(runs + 1):
        t = time.perf_counter()
        fresh(pipe, i)("a red circle on a blue background", num_inference_steps=STEPS,
                        guidance_scale=CFG, height=size, width=size, generator=generators([i]))
        times.append(time.perf_counter() - t)
    return statistics.median(times[1:])


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m embedded.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    p.add_argument("--n", type=int, default=200, help="held-out prompts (>= 200 for the record)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--readme", action="store_true", help="write the figures into MODEL/README.md")
    p.add_argument("--quick", action="store_true", help="fewer samples everywhere (smoke)")
    p.add_argument("--draws", type=int, default=RECORD_DRAWS,
                   help=f"draws of --n held-out prompts, pooled for the figures (the record: {RECORD_DRAWS})")
    p.add_argument("--student", action="store_true",
                   help="the few-step student (MODEL/lcm-unet) beside its teacher: fidelity at 1, 2, 3, 4, 6 and 8 "
                        "steps, the teacher at 20 and at 4, latency; written to lcm-unet/evaluation.json")
    p.add_argument("--validation", action="store_true",
                   help="score --draws validation draws of held-out prompts instead (for choosing settings "
                        "without the test set) and nothing else")
    args = p.parse_args(argv)
    if args.draws < 1:
        p.error("--draws must be at least 1")
    pipe, i2i, inp, blend = load(args.model, args.device)
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    if args.student:
        from .evaluate_student import student_figures
        return student_figures(pipe, args.model, args.n, size, args.draws, args.validation, args.quick)
    if args.validation:
        runs = [fidelity_scores(pipe, args.n, size, draw=d, validation=True) for d in range(1, args.draws + 1)]
        pooled = [x for r in runs for x in r]
        fig = {"validation prompts": len(pooled), "fidelity by validation draw": [shares(r) for r in runs],
               "fidelity": shares(pooled), "colour by held-out pair": colour_by_pair(pooled)}
        print(json.dumps(fig, indent=2))
        return fig
    q = args.quick
    t0 = time.time()
    runs = [fidelity_scores(pipe, args.n, size, draw=d) for d in range(args.draws)]
    results = [x for r in runs for x in r]
    fig = {
        "held-out prompts": len(results),
        "fidelity": shares(results),
        "fidelity, 95% intervals": {k: wilson(v, len(results)) for k, v in shares(results).items()},
        "fidelity by draw": [{"prompt seed": draw_seeds(d)[0], "prompts": len(r), **shares(r)}
                             for d, r in enumerate(runs)],
        "colour by held-out pair": colour_by_pair(results),
        "fidelity, prompts without a position word": fidelity(pipe, args.n, size, position=False),
        "VAE reconstructions of the held-out scenes": reconstruction(pipe.vae, args.n, size),
        "negative prompt: the colour's share of object pixels": negative_prompt(pipe, size, 4 if q else 32),
        "img2img 0.3 keeps position": img2img_layout(i2i, size, 4 if q else 50),
        "inpaint 'a blue square'": inpaint_blue_square(inp, size, 2 if q else 24),
        "inpainting UNet": blend is not None,
        REFERENCE_KEY: reference_colour(pipe, size, 2 if q else 24),
        "seconds per 20-step image (median)": speed(pipe, size, 2 if q else 7),
        "settings": {"sampler": DEFAULT_SCHEDULER, "steps": STEPS, "cfg": CFG, "size": size,
                     "device": args.device, "torch threads": torch.get_num_threads(),
                     "machine": machine_name()},
        "eval_seconds": round(time.time() - t0, 1),
    }
    if blend is not None:   # for comparison: the text-to-image UNet with latent blending
        fig["inpaint 'a blue square', text-to-image UNet (latent blending)"] = inpaint_blue_square(
            blend, size, 2 if q else 24)
    print(json.dumps(fig, indent=2))
    if args.readme:
        (args.model / "evaluation.json").write_text(json.dumps(fig, indent=2), encoding="utf-8")
        from .model_card import write_readme   # imports this module's settings
        write_readme(args.model, fig)
    return fig


if __name__ == "__main__":
    main()
