"""Does fine-tuning teach the embedded model something it does not know? Measured, not eyeballed:

    python -m embedded.finetune_measure [--pictures 20] [--seeds 50] [--references 0] [--set KEY=VALUE ...]

A 13th colour, azure (128, 192, 224), that the model has never seen: 20 pictures of azure shapes
rendered by the world generator with captions in the world's own phrasing, two (azure, shape)
pairs held out of them, and no reference pictures of the world's own colours unless asked
(`--references N`: a `10_world` folder, DreamBooth's class images in small) — a new user has none. The colour is one the embedded model's VAE can draw:
magenta (255, 0, 255), farthest from the twelve, comes back from the VAE as (237, 104, 205), which
is pink, so no LoRA could ever make it; azure comes back as (158, 183, 233), still 107 from the
nearest of the twelve (a scan of the RGB cube through the VAE: the widest margin).
A LoRA is trained with the `quick` preset (or `--preset`, with `--set` over it) through the command line's code (`python -m
studio.finetune`), then the pixel checker (its palette given the 13th colour) reads, on fixed seeds:
- the concept's hit rate (azure read as the object's colour) at LoRA weights 0, 0.5 and 1;
- on the held-out pairs: colour, shape, background and position, without and with the LoRA;
- prompts without the trigger: every axis with the LoRA at 1 against 0, and the mean pixel change;
- the training time on this machine and the file's size.
(The round trip of the file and weight 0's bit-exactness are tests: tests/test_finetune.py.)
Writes `measure.json` in the work folder and prints a table.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import time
from pathlib import Path

from embedded.world import COLOURS, POSITIONS, SHAPES, SIZES, Obj, Scene, caption, full_caption, render

NEW_COLOUR = "azure"
PALETTE = {**COLOURS, NEW_COLOUR: (128, 192, 224)}
HELDOUT_SHAPES = ("star", "ring")          # never azure in the training pictures


def _scene(rng: random.Random, shape: str) -> Scene:
    obj = Obj(shape, NEW_COLOUR, rng.choice(SIZES), rng.choice(list(POSITIONS)))
    return Scene((obj,), rng.choice(list(COLOURS)))


def concept_dataset(folder: Path, n: int = 20, seed: int = 7, size: int = 64) -> list[str]:
    """`n` pictures of azure shapes (not the held-out ones) with `.txt` captions."""
    rng = random.Random(seed)
    trained = [s for s in SHAPES if s not in HELDOUT_SHAPES]
    folder.mkdir(parents=True, exist_ok=True)
    captions, seen = [], set()
    for i in range(n):
        scene = _scene(rng, trained[i % len(trained)])
        while scene in seen:                 # twenty different pictures
            scene = _scene(rng, trained[i % len(trained)])
        seen.add(scene)
        render(scene, size, PALETTE).save(folder / f"{i:03d}.png")
        text = caption(scene, rng)
        (folder / f"{i:03d}.txt").write_text(text + "\n", encoding="utf-8")
        captions.append(text)
    return captions


def reference_pictures(folder: Path, n: int = 20, seed: int = 11) -> None:
    """`n` pictures of the world's own colours with their captions: the toy analogue of
    DreamBooth's class images, so the LoRA learns azure against the other colours, not "paint
    everything azure"."""
    from PIL import Image

    from embedded.world import make_dataset

    folder.mkdir(parents=True, exist_ok=True)
    images, captions, _ = make_dataset(n, seed=seed)
    for i, (image, text) in enumerate(zip(images, captions)):
        Image.fromarray(image).save(folder / f"{i:03d}.png")
        (folder / f"{i:03d}.txt").write_text(text + "\n", encoding="utf-8")


def eval_prompts(n: int, seed: int, shapes: tuple[str, ...]) -> list[tuple[Scene, str]]:
    rng = random.Random(seed)
    return [(s, full_caption(s, i)) for i, s in enumerate(_scene(rng, shapes[i % len(shapes)]) for i in range(n))]


def plain_prompts(n: int, seed: int) -> list[tuple[Scene, str]]:
    """Prompts of the world's own colours (no trigger): what the LoRA must leave alone."""
    from embedded.world import heldout_prompts
    return heldout_prompts(n, seed)


def pictures(studio, prompts: list[str], seeds: list[int], lora: str | None, weight: float) -> list:
    images = []
    for prompt, seed in zip(prompts, seeds):
        request = studio.make_request("txt2img", prompt=prompt, seed=seed,
                                      loras=[(lora + ".safetensors", weight)] if lora else [])
        images.append(studio.submit(request, user="measure", save=False).result().images[0].image)
    return images


def scores(images, scenes) -> dict[str, float]:
    from embedded.checker import score_many
    return {k: round(100 * v, 1) for k, v in score_many(images, scenes, PALETTE).items()}


def measure(work: Path, pictures_n: int, seeds_n: int, picture: Path | None = None, preset: str = "quick",
            references: int = 20, settings: dict | None = None) -> dict:
    import numpy as np

    from studio.finetune.__main__ import main as train_cli
    from studio.serving.studio import Studio
    from studio.config import Settings

    if work.exists():
        shutil.rmtree(work)
    data = work / "datasets" / NEW_COLOUR
    concept_dataset(data / f"10_{NEW_COLOUR}", pictures_n)       # kohya folders: 10 repeats each
    if references:
        reference_pictures(data / "10_world", references)
    began = time.perf_counter()
    extra = [a for key, value in (settings or {}).items() for a in (f"--{key.replace('_', '-')}", str(value))]
    code = train_cli([str(data), "--name", NEW_COLOUR, "--preset", preset, "--trigger", NEW_COLOUR, "--repeats", "0",
                      "--models-dir", str(work / "models"), "--jobs", str(work / "jobs"), *extra])
    seconds = time.perf_counter() - began
    assert code == 0, "training failed"
    lora = work / "models" / "loras" / f"{NEW_COLOUR}.safetensors"
    studio = Studio.from_settings(Settings(models_dir=work / "models", outputs=work / "outputs"))
    seeds = list(range(1000, 1000 + seeds_n))
    trained_shapes = tuple(s for s in SHAPES if s not in HELDOUT_SHAPES)
    concept = eval_prompts(seeds_n, 1, trained_shapes)
    heldout = eval_prompts(seeds_n, 2, HELDOUT_SHAPES)
    plain = plain_prompts(seeds_n, 3)
    out: dict = {"training_s": round(seconds, 1), "file_kb": round(lora.stat().st_size / 1024, 1),
                 "pictures": pictures_n, "seeds": seeds_n, "preset": preset, "references": references,
                 "settings": settings or {}}
    for label, prompts in (("concept", concept), ("heldout", heldout), ("plain", plain)):
        for weight in ((0.0, 0.5, 1.0) if label == "concept" else (0.0, 1.0)):
            imgs = pictures(studio, [p for _, p in prompts], seeds, NEW_COLOUR, weight)
            out[f"{label}@{weight}"] = scores(imgs, [s for s, _ in prompts])
            if label == "plain":
                out[f"plain_pixels@{weight}"] = np.stack([np.asarray(i, dtype=np.int16) for i in imgs])
    diff = np.abs(out.pop("plain_pixels@1.0") - out.pop("plain_pixels@0.0"))
    out["plain_mean_abs_diff"] = round(float(diff.mean()), 2)
    if picture:
        before_after(studio, picture)
    return out


def before_after(studio, path: Path, seed: int = 1000) -> Path:
    """The README's picture: six azure prompts (the last two held-out shapes) without the LoRA
    (top row) and with it (bottom), same seeds, 2x nearest-neighbour."""
    from PIL import Image

    prompts = ["a large azure circle on a black background", "a large azure square on a red background",
               "a large azure triangle in the center on a yellow background",
               "a small azure circle in the top left corner on a green background",
               "a large azure star on a purple background", "a large azure ring on a black background"]
    rows = [pictures(studio, prompts, [seed + i for i in range(len(prompts))], NEW_COLOUR, w) for w in (0.0, 1.0)]
    sheet = Image.new("RGB", (len(prompts) * 130, 2 * 130), (255, 255, 255))
    for r, images in enumerate(rows):
        for i, image in enumerate(images):
            sheet.paste(image.resize((128, 128), Image.Resampling.NEAREST), (i * 130 + 1, r * 130 + 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path


def report(out: dict) -> str:
    rows = ["| prompts | LoRA weight | azure / colour | background | position | shape | all four |",
            "|---|---|---|---|---|---|---|"]
    for key, v in out.items():
        if "@" in key and isinstance(v, dict):
            label, weight = key.split("@")
            rows.append(f"| {label} | {weight} | {v['colour']} | {v['background']} | {v['position']} | "
                        f"{v['shape']} | {v['all']} |")
    rows.append(f"\npreset {out['preset']} {out['settings']}, {out['references']} reference pictures; "
                f"training {out['training_s']} s, file {out['file_kb']} KB, {out['pictures']} pictures, "
                f"{out['seeds']} seeds; prompts without the trigger: mean pixel change "
                f"{out['plain_mean_abs_diff']} levels with the LoRA at 1")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pictures", type=int, default=20)
    p.add_argument("--seeds", type=int, default=50)
    p.add_argument("--work", type=Path, default=Path(".cache/finetune-measure"))
    p.add_argument("--picture", type=Path, help="also write the before/after picture (docs/images/finetune-azure.png)")
    p.add_argument("--preset", default="quick")
    p.add_argument("--references", type=int, default=0, help="reference pictures of the world's own colours "
                                                               "in the dataset (0: none, as a new user has)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="training settings over the preset's (prior_weight=1 text_encoder_lr=0 ...)")
    args = p.parse_args(argv)
    settings = dict(item.split("=", 1) for item in args.set)
    out = measure(args.work, args.pictures, args.seeds, args.picture, args.preset, args.references, settings)
    (args.work / "measure.json").write_text(json.dumps(out, indent=1), encoding="utf-8")
    print(report(out))


if __name__ == "__main__":
    main()
