"""Golden pictures: fixed requests through every path that makes a picture (txt2img, img2img,
inpainting, a plot's cells and grid, a hires fix's two passes, a live picture) on the embedded
model, with what each one must come out as: its pixels' sha256, A1111's parameters text and the
studio's JSON record (package versions left out).

    python -m tests.golden --write     record them again (after a change meant to alter pictures)

tests/test_golden.py makes the same pictures and compares. The pixels are compared exactly on a CPU
of the recorded kind (torch's CPU capability: AVX512, AVX2...); other kernels round differently,
so elsewhere they are compared with the stored PNGs within a small tolerance.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

FOLDER = Path(__file__).resolve().parent / "fixtures" / "golden"
RECORD = FOLDER / "golden.json"
USER = {"user": "golden", "session": "golden"}


def input_picture() -> Image.Image:
    """A 64x64 input: an orange disc on a teal ground with a gradient band (no randomness)."""
    image = Image.new("RGB", (64, 64), (30, 140, 150))
    draw = ImageDraw.Draw(image)
    for x in range(64):
        draw.line([(x, 52), (x, 63)], fill=(4 * x, 60, 255 - 4 * x))
    draw.ellipse([14, 10, 44, 40], fill=(240, 130, 20))
    return image


def input_mask() -> Image.Image:
    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).rectangle([8, 8, 40, 40], fill=255)
    return mask


def _studio(outputs: Path):
    from studio.config import Settings
    from studio.serving.studio import Studio
    return Studio.from_settings(Settings(outputs=outputs))


def _submit(studio, mode: str, **raw):
    return studio.submit(studio.make_request(mode, **raw), **USER).result().images


def _cases(studio) -> dict[str, list]:
    """name -> the GeneratedImages it makes, in order."""
    from studio.plots.plot import make_xyz_plot, run_plot, save_grid
    from studio.serving.sequence import Sequence
    from studio.upscale.hires import run_hires

    out = {}
    out["txt2img"] = _submit(studio, "txt2img", prompt="a red circle on a blue background, (large:1.2)",
                             negative_presets=["bad hands"], scheduler="Euler a", steps=4, seed=7, batch_size=2,
                             cfg_scale=6.5)
    out["txt2img_variation"] = _submit(studio, "txt2img", prompt="a green square on a yellow background", steps=3,
                                       seed=11, variation_seed=12, variation_strength=0.4, clip_skip=2)
    out["img2img"] = _submit(studio, "img2img", image=input_picture(), prompt="a purple star", steps=5, seed=3,
                             strength=0.6, scheduler="DDIM")
    out["inpaint"] = _submit(studio, "inpaint", image=input_picture(), mask=input_mask(), prompt="a cyan triangle",
                             steps=4, seed=5, strength=0.9, mask_blur=2)
    out["inpaint_only_masked"] = _submit(studio, "inpaint", image=input_picture(), mask=input_mask(),
                                         prompt="a white ring", steps=3, seed=6, only_masked=True,
                                         only_masked_padding=8)
    base = dict(prompt="a blue triangle on a red background", steps=2, seed=9, variation_seed=10)
    plot = make_xyz_plot(studio, base, [("CFG scale", "3, 9"), ("Sampler", "Euler, DPM++ 2M"), (None, "")], "txt2img")
    result = run_plot(plot, Sequence(studio, **USER))
    grid = save_grid(result, studio)
    out["plot"] = [result.images[key] for key in sorted(result.images)]
    out["plot_grid"] = [Image.open(grid)]
    hires = run_hires(studio, dict(prompt="an orange heart on a grey background", steps=3, seed=13, hires=True,
                                   hires_scale=1.5, hires_steps=2, hires_strength=0.5, hires_upscaler="Lanczos"),
                      Sequence(studio, **USER))
    out["hires"] = [*hires.first_pass, *hires.images]
    live = studio.live(studio.make_request("txt2img", prompt="a yellow moon on a black background", steps=3,
                                           seed=17), **USER)
    out["live"] = live.images
    return out


def describe(picture) -> dict:
    """What a picture must come out as."""
    image = picture if isinstance(picture, Image.Image) else picture.image
    pixels = np.asarray(image.convert("RGB"))
    entry = {"size": list(image.size), "sha256": hashlib.sha256(pixels.tobytes()).hexdigest()}
    if not isinstance(picture, Image.Image):
        data = {k: v for k, v in picture.data.items() if k != "versions"}
        entry.update(parameters=picture.parameters, data=json.loads(json.dumps(data)), saved=picture.path is not None)
    else:
        entry["parameters"] = picture.info.get("parameters", "")
    return entry


def make_all(outputs: Path) -> dict[str, list[tuple[dict, Image.Image]]]:
    """Every case, on one torch thread (the CPU kernels split the sums by threads: the last bits
    of a picture depend on their number)."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        studio = _studio(outputs)
        return {name: [(describe(p), (p if isinstance(p, Image.Image) else p.image).convert("RGB")) for p in pictures]
                for name, pictures in _cases(studio).items()}
    finally:
        torch.set_num_threads(threads)


def cpu_kind() -> str:
    import torch
    return torch.backends.cpu.get_cpu_capability()


def write() -> None:
    FOLDER.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        made = make_all(Path(tmp))
    record = {"cpu": cpu_kind(), "cases": {name: [entry for entry, _ in items] for name, items in made.items()}}
    for name, items in made.items():
        for i, (_, image) in enumerate(items):
            image.save(FOLDER / f"{name}-{i}.png")
    RECORD.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    print(f"wrote {sum(len(v) for v in made.values())} pictures to {FOLDER} ({record['cpu']})")


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit(__doc__)
    write()
