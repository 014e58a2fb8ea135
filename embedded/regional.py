"""Regional prompts taught to the embedded UNet (`python -m embedded.train --regions`): a share of
its training pictures is conditioned region by region, through the studio's own masked
cross-attention (studio/control/regions.py: the same masks, the same mix), so what it learns is
what an artist's ADDCOL / ADDROW / ADDBASE prompt does at generation.

Why: the model trained on two-object pictures drew both objects of a regional prompt "an orange
circle at the top ... ADDROW a cyan square at the bottom ..." right in 5% of pictures (columns
32%), the second region's object nearly always and the first's rarely: each region's text
describes a picture with one object, and the model had never seen a picture assembled from two
texts. Masking self-attention between the regions too (DenseDiffusion's idea) or mixing the
regions' noise predictions instead (Regional Prompter's Latent mode) did not fix it (15 prompts a
layout of evaluate_regions' choosing draw, columns / rows right: 2 / 1, masked 2 / 2, latent 5 / 10).
After 1,500 + 600 steps of this (36 min on 2 cores) regions alone put both objects right in 82% /
74% (100 prompts a layout), under a base 79% / 79%, and every single-object figure rose or stayed
within its interval (README).

Each picture carries three texts, laid side by side on the token axis (the whole caption, then
each region's) with two boxes and a base ratio: ratio 1 is the plain caption (every chunk the
same), 0 the regions alone, between the regions under the caption as their base
(`world.regional_dataset`).
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from studio.control.regions import Regions, masks

CHUNKS = 3          # the whole caption, the first region's, the second's


class RegionalTraining:
    """The regions of a training set's pictures: boxes (N, 2, 4) and base ratios (N,), for texts
    encoded (N, CHUNKS, T) by `encode`; `batch(idx)` picks a step's, `attending(unet)` wraps the
    UNet's cross-attention layers for the phase (its latents: the UNet's sample size square)."""

    def __init__(self, boxes: np.ndarray, ratios: np.ndarray):
        self.boxes, self.ratios = boxes, torch.as_tensor(ratios)
        self.size = (0, 0)
        self._masks: dict[tuple, torch.Tensor] = {}
        self._batch: tuple[list, torch.Tensor] | None = None

    def batch(self, idx: torch.Tensor) -> None:
        self._batch = ([tuple(map(tuple, self.boxes[i].tolist())) for i in idx.tolist()], self.ratios[idx])

    def mix(self, outs: list[torch.Tensor], positions: int) -> torch.Tensor:
        """The base's, the first region's and the second's attention outputs (B, P, C) mixed."""
        boxes, ratio = self._batch
        m = torch.stack([self._mask(b, positions) for b in boxes]).to(outs[0])      # (B, 2, P, 1)
        r = ratio.to(outs[0]).view(-1, 1, 1)
        return r * outs[0] + (1 - r) * (m[:, 0] * outs[1] + m[:, 1] * outs[2])

    def _mask(self, boxes: tuple, positions: int) -> torch.Tensor:
        key = (boxes, positions)
        if key not in self._masks:
            self._masks[key] = masks(Regions(("", ""), boxes), positions, *self.size)
        return self._masks[key]

    @contextlib.contextmanager
    def attending(self, unet):
        self.size = (unet.config.sample_size, unet.config.sample_size)
        saved = dict(unet.attn_processors)
        unet.set_attn_processor({name: _Attention(p, self) if name.endswith("attn2.processor") else p
                                 for name, p in saved.items()})
        try:
            yield
        finally:
            unet.set_attn_processor(saved)


class _Attention:
    def __init__(self, inner, owner: RegionalTraining):
        self.inner, self.owner = inner, owner

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, **kw):
        tokens = encoder_hidden_states.shape[1] // CHUNKS
        outs = [self.inner(attn, hidden_states, encoder_hidden_states[:, i * tokens:(i + 1) * tokens],
                           attention_mask, **kw) for i in range(CHUNKS)]
        return self.owner.mix(outs, hidden_states.shape[1])


def encode(text, tok: torch.Tensor) -> torch.Tensor:
    """Token ids (B, T) -> (B, T, D), or (B, CHUNKS, T) -> the chunks side by side (B, CHUNKS*T, D)."""
    if tok.dim() == 2:
        return text(tok)[0]
    b, c, t = tok.shape
    return text(tok.reshape(b * c, t))[0].reshape(b, c * t, -1)
