"""Hires fix: a txt2img picture at the first size, upscaled, then an img2img pass at the bigger
size with its own steps and strength (A1111's "Hires fix"). Two ordinary requests in a Sequence,
so the queue stays fair between them; the first-pass picture is saved too, like every picture.

The second pass records A1111's keys (`Hires upscale`, `Hires steps`, `Hires upscaler`,
`Denoising strength`) and the first pass's steps as `Steps`, so A1111 and the studio's PNG Info
read the picture back as one hires-fix generation. Strength 0 (what A1111's own API tests send)
runs no second pass: the first pass's picture upscaled is the result, saved with the same keys
(a latent upscaler's resized latents alone would decode blurred: Lanczos stands in, with a note).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from PIL import Image

from studio.errors import InvalidRequest, StudioError
from studio.outputs.metadata import add_keys
from studio.requests import GeneratedImage, GenerationRequest
from studio.requests.hires import LATENT, Hires, take_hires
from studio.requests.tools import without_tools
from studio.serving.sequence import ComposedResult, Sequence
from studio.models.upscalers import upscaler_names
from studio.requests.parsers import array
from studio.requests.upscale import UpscaleRequest




def hires_upscalers(studio) -> list[str]:
    """What the hires fix may upscale with: the latent modes, then every picture upscaler."""
    return [*LATENT, *upscaler_names(studio.names("upscalers"))]


def bigger(size: tuple[int, int], scale: float) -> tuple[int, int]:
    """The second pass's size: scaled, on the latent grid (multiples of 8)."""
    return tuple(max(8, round(side * scale / 8) * 8) for side in size)


def second_pass(studio, raw: dict, first: GenerationRequest, hires: Hires, image, seed: int,
                latents: np.ndarray | None = None) -> GenerationRequest:
    """The img2img request of one first-pass picture (`image` already upscaled, and with a latent
    upscaler the upscaled latents it starts from; a blank image to check the request before
    anything runs)."""
    steps = hires.steps or first.steps
    fields = {**raw, "seed": seed, "batch_count": 1, "batch_size": 1, "variation_strength": 0,
              "width": image.shape[1] if isinstance(image, np.ndarray) else image.width,
              "height": image.shape[0] if isinstance(image, np.ndarray) else image.height,
              "steps": steps, "strength": hires.strength, "recipe": hires.recipe(first.steps, steps),
              "latents": latents}
    return studio.make_request("img2img", image=image, **fields)


def upscaled(picture: GeneratedImage, hires: Hires, sequence: Sequence) -> tuple[Image.Image | None, np.ndarray | None]:
    """The first-pass picture at the second pass's size (an upscale job of the run, held, not
    saved: None when the run was stopped); with a latent upscaler also its latents resized (the
    picture then only stands for them in the record)."""
    size = bigger(picture.image.size, hires.scale)
    if not hires.latent:
        done = sequence.run(UpscaleRequest(image=array(picture.image.convert("RGB")), size=size,
                                           upscaler=hires.upscaler), save=False)
        return (None if done is None or done.stopped else done.images[0].image), None
    import torch
    import torch.nn.functional as F

    factor = picture.image.height // picture.latents.shape[2]          # the model's VAE scale
    mode, antialias = LATENT[hires.upscaler]
    latents = F.interpolate(torch.from_numpy(np.array(picture.latents)), size=(size[1] // factor, size[0] // factor),
                            mode=mode, antialias=antialias)
    return picture.image.resize(size, Image.LANCZOS), latents.numpy()


def saved_upscale(picture: GeneratedImage, size: tuple[int, int], upscaler: str, keys: dict, sequence: Sequence,
                  *, final_size: bool, crop: bool = False):
    """`picture` upscaled to `size` and saved with its parameters and `keys` (`Size` the new one
    when `final_size`, as a hires fix records it; else the drawn one, as Extras keeps it); the
    run's result, or None when stopped."""
    text = add_keys(picture.parameters, {**keys, **({"Size": f"{size[0]}x{size[1]}"} if final_size else {})})
    data = {**picture.data, "width": size[0], "height": size[1], "upscaled": {"upscaler": upscaler, **keys}}
    done = sequence.run(UpscaleRequest(image=array(picture.image.convert("RGB")), size=size, upscaler=upscaler,
                                       crop=crop, parameters=text, data=data))
    return None if done is None or done.stopped else done


def unchanged(picture: GeneratedImage, first: GenerationRequest, hires: Hires, sequence: Sequence):
    """Strength 0: the first-pass picture upscaled and saved as the hires result, recorded as A1111
    records a hires fix (its keys, the bigger size)."""
    keys = dict(hires.recipe(first.steps, hires.steps or first.steps), **{"Denoising strength": 0})
    return saved_upscale(picture, bigger(picture.image.size, hires.scale), "Lanczos" if hires.latent else hires.upscaler,
                         keys, sequence, final_size=True)


def plan_hires(studio, raw: dict) -> tuple[GenerationRequest, Hires]:
    """The first pass and the hires settings, both passes checked before anything runs."""
    raw = dict(raw)
    hires = take_hires(raw, hires_upscalers(studio), studio.limits)
    if hires is None:
        raise InvalidRequest("Hires fix is off.")
    raw = without_tools(raw)
    first = studio.make_request("txt2img", keep_latents=hires.latent, **raw)
    native = studio.model_info().native_size
    width, height = bigger((first.width or native, first.height or native), hires.scale)
    second_pass(studio, raw, first, hires, np.zeros((height, width, 3), np.uint8), 0)
    return first, hires


def run_hires(studio, raw: dict, sequence: Sequence,
              on_progress: Callable[[float, str], None] | None = None) -> ComposedResult:
    """First pass, then for each of its pictures the upscale and the second pass."""
    first, hires = plan_hires(studio, raw)
    raw = without_tools(raw)
    result = ComposedResult()            # images: the second passes; first_pass: the first
    say = on_progress or (lambda done, text: None)
    made = sequence.run(first, lambda u: u.kind == "progress" and say(u.done / u.total / 2,
                                                                      f"First pass: step {u.done}/{u.total}"))
    if made is None or made.stopped or not made.images:
        result.stopped = made is None or made.stopped
        result.notes += made.notes if made else ["Stopped."]
        return result
    result.first_pass, result.notes, result.seed = made.images, list(made.notes), made.seed
    for n, picture in enumerate(made.images):
        say(0.5 + n / len(made.images) / 2, f"Upscaling picture {n + 1} ({hires.upscaler})")
        if hires.strength == 0:
            done = unchanged(picture, first, hires, sequence)
            if done is None:
                result.stopped = True
                break
            result.images += done.images
            note = "Hires strength 0: no second pass; the first pass's picture upscaled" + (
                " (by Lanczos: a latent upscale needs a second pass)." if hires.latent else ".")
            result.notes += [note] if note not in result.notes else []
            continue
        try:
            image, latents = upscaled(picture, hires, sequence)
            second = None if image is None else second_pass(studio, raw, first, hires, image, picture.seed, latents)
            done = None if second is None else sequence.run(second, lambda u, n=n: (
                u.kind == "progress" and say(0.5 + (n + u.done / u.total) / len(made.images) / 2,
                                             f"Hires pass {n + 1}: step {u.done}/{u.total}")))
        except StudioError as exc:
            result.notes.append(f"Hires pass of picture {n + 1} failed: {exc}; its first pass is saved.")
            continue
        if done is None or done.stopped:
            result.stopped = True
            result.notes.append(f"Stopped: {len(result.images)} of {len(made.images)} hires pictures made; "
                                "the first passes are saved.")
            break
        result.images += done.images
        result.notes += [note for note in done.notes if note not in result.notes]
    return result
