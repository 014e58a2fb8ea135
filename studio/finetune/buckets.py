"""Aspect-ratio buckets (NovelAI's, as kohya's trainers do them): instead of cutting every picture
to a square, each goes to the size of about the training resolution's area whose shape is nearest
its own (sides multiples of 64 px, at most 2:1 either way), is scaled to cover it and centre-cropped
by what is left; a batch holds pictures of one size. A portrait stays a portrait, so the LoRA
does not learn cut-off heads. Without buckets (or on a model too small for a second size: the
embedded 64 px model) every picture is the square."""

from __future__ import annotations

import math

import torch

STEP = 64                    # px: what SD's, SDXL's and Flux's latents (and Flux's 2x2 packing) divide


def sizes(resolution: int, step: int = STEP) -> list[tuple[int, int]]:
    """(width, height) pairs of at most resolution² pixels, multiples of `step`, ratio <= 2."""
    area, out = resolution * resolution, {(resolution, resolution)}
    for width in range(step, 2 * resolution + 1, step):
        height = min(2 * resolution, area // width // step * step)
        if height >= step and max(width, height) <= 2 * min(width, height):
            out.add((width, height))
    return sorted(out)


def bucket_of(width: int, height: int, options: list[tuple[int, int]]) -> tuple[int, int]:
    """The option whose aspect ratio is nearest (in log ratio) to width x height's; the larger on a tie."""
    ratio = math.log(width / height)
    return min(options, key=lambda o: (abs(math.log(o[0] / o[1]) - ratio), -o[0] * o[1]))


def epoch_batches(groups: dict[tuple[int, int], list[int]], batch: int, gen: torch.Generator) -> list[list[int]]:
    """An epoch's batches: each size's pictures (repeats included) shuffled and cut into batches
    of `batch` (the last of a size may be smaller), then the batches shuffled."""
    batches = []
    for size in sorted(groups):
        pool = torch.tensor(groups[size])
        order = pool[torch.randperm(len(pool), generator=gen)].tolist()
        batches += [order[i:i + batch] for i in range(0, len(order), batch)]
    return [batches[i] for i in torch.randperm(len(batches), generator=gen).tolist()]
