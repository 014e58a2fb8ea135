"""The captions as each model family reads them while training — a table, not branches in the
trainer. SD 1.x/2.x: one CLIP, its last hidden state. SDXL: CLIP-L and OpenCLIP bigG, each's
penultimate hidden state side by side, the second's pooled projection, and the size conditioning
(original size, crop, target size: the square the pictures are cut to, uncropped), as diffusers'
SDXL pipeline builds them. Each encoder's LoRA keys get kohya's prefix (`te`; `te1`, `te2`) and
a new word's vectors A1111's bundle part (`string_to_param.*`; `clip_l`, `clip_g`).

A caption's text is a dict of tensors with the batch first: `ids` (pictures x encoders x 77)
while an encoder is trained, else what they give: `embeds` and, for SDXL, `pooled`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TextSide:
    encoders: tuple[str, ...]        # the pipeline's attributes
    tokenizers: tuple[str, ...]
    prefixes: tuple[str, ...]        # kohya's LoRA key prefix of each encoder
    bundle_parts: tuple[str, ...]    # A1111's bundled-embedding part of each encoder
    penultimate: bool = False        # SDXL reads the layer before the last
    pooled_from: int | None = None   # which encoder's projection is the pooled text (SDXL: the second)


FAMILIES = {
    "sd": TextSide(("text_encoder",), ("tokenizer",), ("te",), ("string_to_param.*",)),
    "sdxl": TextSide(("text_encoder", "text_encoder_2"), ("tokenizer", "tokenizer_2"), ("te1", "te2"),
                     ("clip_l", "clip_g"), penultimate=True, pooled_from=1),
}


def side_of(family: str) -> TextSide:
    """The table row of a studio family name ("SD 1.x", "SDXL", ...)."""
    return FAMILIES["sdxl" if family.startswith("SDXL") else "sd"]


def token_ids(pipe, side: TextSide, captions: list[str]) -> torch.Tensor:
    """pictures x encoders x max length."""
    out = []
    for name in side.tokenizers:
        tokenizer = getattr(pipe, name)
        out.append(tokenizer(captions, padding="max_length", truncation=True, max_length=tokenizer.model_max_length,
                             return_tensors="pt").input_ids)
    return torch.stack(out, 1)


def encode(side: TextSide, encoders: list, ids: torch.Tensor) -> dict:
    """What the denoiser is given for these token ids by these encoders."""
    embeds, pooled = [], None
    for k, encoder in enumerate(encoders):
        out = encoder(ids[:, k].to(encoder.device), output_hidden_states=side.penultimate)
        embeds.append(out.hidden_states[-2] if side.penultimate else out[0])
        if k == side.pooled_from:
            pooled = out[0]
    text = {"embeds": torch.cat(embeds, -1).float()}
    if pooled is not None:
        text["pooled"] = pooled.float()
    return text


def denoiser_inputs(side: TextSide, text: dict, size: tuple[int, int]) -> dict:
    """The keyword arguments of the UNet's call for this text and pictures of `size` (height, width)."""
    kwargs = {"encoder_hidden_states": text["embeds"]}
    if side.pooled_from is not None:
        n, (h, w) = len(text["embeds"]), map(float, size)
        times = torch.tensor([h, w, 0.0, 0.0, h, w], device=text["embeds"].device).repeat(n, 1)
        kwargs["added_cond_kwargs"] = {"text_embeds": text["pooled"], "time_ids": times}
    return kwargs


# -- a batch of texts (dicts of tensors, batch first) ---------------------------------------------------------

def take(text: dict, idx: torch.Tensor) -> dict:
    return {k: v[idx] for k, v in text.items()}


def join(a: dict, b: dict) -> dict:
    return {k: torch.cat([a[k], b[k]]) for k in a}


def replace(text: dict, mask: torch.Tensor, other: dict) -> dict:
    """`other` (one text) where `mask` is set."""
    return {k: torch.where(mask.view(-1, *[1] * (v.dim() - 1)), other[k], v) for k, v in text.items()}


def to(text: dict, device: str) -> dict:
    return {k: v.to(device) for k, v in text.items()}
