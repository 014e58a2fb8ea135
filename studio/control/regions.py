"""Regional prompts: each region of the canvas its own prompt, applied by masked cross-attention
in one pass (Regional Prompter's "Attention" mode, re-implemented from its documented behaviour).

The prompt says the regions with Regional Prompter's keywords:

    a garden ADDCOMM                  common: put before every region's prompt
    soft light ADDBASE                base: everywhere, mixed in by the base ratio
    a red circle ADDCOL a cyan square ADDROW grass

`ADDCOL` separates the columns of a row, `ADDROW` starts a new row. The divide ratio says the
sizes: empty, every row and every column of a row alike; `1,2` the columns of a single row (or the
rows of a single column); `1,2,1;2,3,2` one group a row, its first number the row's height, the
rest its columns' widths.

At each cross-attention layer the picture's positions attend to each region's text on its own;
the results are mixed by the regions' masks at that layer's resolution (the base's by the base
ratio everywhere). The unconditional half sees the negative prompt in every region, which mixes
back to exactly the plain negative.
"""

from __future__ import annotations

import contextlib
import math
import re
from dataclasses import dataclass, field

import numpy as np

from studio.errors import InvalidRequest
from studio.requests.parsers import REGION_COLOURS
from studio.requests.request import REGION_KEYWORDS as KEYWORDS

MAX_REGIONS = 16


@dataclass(frozen=True)
class Regions:
    prompts: tuple[str, ...]                          # one a region, the common part in front
    boxes: tuple[tuple[float, float, float, float], ...]   # (left, top, right, bottom) fractions
    base: str | None = None
    base_ratio: float = 0.0
    painted: object = field(default=None, compare=False)   # painted regions instead of boxes: HxW labels

    @property
    def texts(self) -> tuple[str, ...]:
        """What is encoded, in chunk order: the base (when there is one), then each region."""
        return ((self.base,) if self.base is not None else ()) + self.prompts


def has_regions(text: str) -> bool:
    return bool(KEYWORDS.search(text or ""))


def _numbers(text: str, what: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise InvalidRequest(f"Regions' divide ratio: {what} {text!r} must be numbers like 1,2,1.") from None
    if not values or any(not math.isfinite(v) or v <= 0 for v in values):
        raise InvalidRequest(f"Regions' divide ratio: {what} {text!r} must be positive numbers.")
    return values


def _edges(sizes: list[float]) -> list[float]:
    total, out, run = sum(sizes), [0.0], 0.0
    for s in sizes:
        run += s
        out.append(run / total)
    return out


def layout(rows: list[int], ratio: str) -> list[tuple[float, float, float, float]]:
    """The boxes of `rows` (the number of columns of each row) by the divide ratio."""
    ratio = (ratio or "").strip()
    if ";" in ratio:
        groups = [_numbers(g, "a row") for g in ratio.split(";")]
        if [len(g) - 1 or 1 for g in groups] != rows:
            raise InvalidRequest(f"Regions' divide ratio {ratio!r} describes {len(groups)} rows of "
                                 f"{[len(g) - 1 or 1 for g in groups]} columns; the prompt has {len(rows)} rows of "
                                 f"{rows} (ADDROW starts a row, ADDCOL a column).")
        heights, widths = [g[0] for g in groups], [g[1:] or [1.0] for g in groups]
    elif ratio:
        values = _numbers(ratio, "the ratio")
        if len(rows) == 1 and len(values) == rows[0]:
            heights, widths = [1.0], [values]
        elif all(n == 1 for n in rows) and len(values) == len(rows):
            heights, widths = values, [[1.0]] * len(rows)
        else:
            raise InvalidRequest(f"Regions' divide ratio {ratio!r} has {len(values)} numbers for {len(rows)} rows "
                                 f"of {rows} columns: give one a region of a single row or column, or a row "
                                 "each as height,widths...;height,widths...")
    else:
        heights, widths = [1.0] * len(rows), [[1.0] * n for n in rows]
    ys = _edges(heights)
    return [(xs[c], ys[r], xs[c + 1], ys[r + 1]) for r in range(len(rows))
            for xs in [_edges(widths[r])] for c in range(len(widths[r]))]


def read_regions(text: str, ratio: str, base_ratio: float, painted=None) -> Regions | None:
    """The regions a prompt asks for (None: no keyword in it); with `painted` (a label map), the
    first region is the unpainted part and the others the colours in order."""
    if not has_regions(text):
        return None
    if painted is not None:
        return _painted(text, ratio, base_ratio, painted)
    common, base = "", None
    if "ADDCOMM" in text:
        common, _, text = text.partition("ADDCOMM")
    if "ADDBASE" in text:
        base, _, text = text.partition("ADDBASE")
        base = " ".join(filter(None, (common.strip(), base.strip())))
    if KEYWORDS.search(common) or (base and KEYWORDS.search(base)):
        raise InvalidRequest("Regional prompts: ADDCOMM comes first, then ADDBASE, then the regions.")
    rows = [[c.strip() for c in row.split("ADDCOL")] for row in text.split("ADDROW")]
    if sum(len(r) for r in rows) > MAX_REGIONS:
        raise InvalidRequest(f"Regional prompts: at most {MAX_REGIONS} regions.")
    prompts = tuple(", ".join(filter(None, (common.strip(), c))) for row in rows for c in row)
    return Regions(prompts, tuple(layout([len(r) for r in rows], ratio)), base,
                   base_ratio if base is not None else 0.0)


def _painted(text: str, ratio: str, base_ratio: float, painted) -> Regions:
    """Regions painted in colours: the prompt's parts (ADDCOL or ADDROW between them) are the
    unpainted part's, then the first colour's, the second's..."""
    if (ratio or "").strip():
        raise InvalidRequest("Regions are painted: leave the divide ratio empty (it sizes regions that are not).")
    boxes = read_regions(re.sub(r"\bADDROW\b", "ADDCOL", text), "", base_ratio)
    colours = len(boxes.prompts) - 1
    used = {int(v) for v in np.unique(painted)} - {0}
    if colours > len(REGION_COLOURS) or not used <= set(range(1, colours + 1)):
        extra = sorted(used - set(range(1, colours + 1)))
        raise InvalidRequest(f"Regions are painted in {len(used)} colours but the prompt has {colours} region "
                             f"prompts after the unpainted part's (no prompt for "
                             f"{', '.join(REGION_COLOURS[k - 1][0] for k in extra)}).")
    missing = [REGION_COLOURS[k - 1][0] for k in range(1, colours + 1) if k not in used]
    if missing:
        raise InvalidRequest(f"Region prompt for {', '.join(missing)}: nothing is painted in that colour.")
    return Regions(boxes.prompts, (), boxes.base, boxes.base_ratio, painted)


# -------------------------------------------------------------------------------------------------
# the attention

def masks(regions: Regions, positions: int, height: int, width: int):
    """(regions, positions, 1) masks for a layer of `positions` = h*w, the latent (height,
    width) halved k times (rounded up, as the UNet's convolutions do)."""
    import torch

    for k in range(8):
        h, w = math.ceil(height / 2 ** k), math.ceil(width / 2 ** k)
        if h * w == positions:
            break
    else:
        raise ValueError(f"no layer of {positions} positions in a {height}x{width} latent")
    if regions.painted is not None:     # each region's share of the painted pixels a position covers
        labels = torch.as_tensor(np.asarray(regions.painted, dtype=np.int64))
        one_hot = torch.stack([(labels == k).float() for k in range(len(regions.prompts))])[None]
        out = torch.nn.functional.adaptive_avg_pool2d(one_hot, (h, w))[0]
    else:
        out = torch.zeros(len(regions.boxes), h, w)
        for i, (x0, y0, x1, y1) in enumerate(regions.boxes):
            out[i, round(y0 * h):round(y1 * h), round(x0 * w):round(x1 * w)] = 1.0
    return out.reshape(len(out), h * w, 1)


class _RegionalAttention:
    """Wraps a cross-attention layer's processor: one attention a region, mixed by masks."""

    def __init__(self, inner, regions: Regions, tokens: int, height: int, width: int):
        self.inner, self.regions, self.tokens = inner, regions, tokens
        self.size = (height, width)
        self._masks: dict[int, object] = {}

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, **kw):
        n = len(self.regions.texts)
        if not hasattr(encoder_hidden_states, "shape") or encoder_hidden_states.shape[1] != n * self.tokens:
            return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, **kw)
        outs = [self.inner(attn, hidden_states, encoder_hidden_states[:, i * self.tokens:(i + 1) * self.tokens],
                           attention_mask, **kw) for i in range(n)]
        positions = hidden_states.shape[1]
        if positions not in self._masks:
            self._masks[positions] = masks(self.regions, positions, *self.size).to(hidden_states.device,
                                                                                 hidden_states.dtype)
        m = self._masks[positions]
        if self.regions.base is not None:
            base, outs = outs[0], outs[1:]
            mixed = sum(mi * o for mi, o in zip(m, outs))
            return self.regions.base_ratio * base + (1 - self.regions.base_ratio) * mixed
        return sum(mi * o for mi, o in zip(m, outs))


@contextlib.contextmanager
def regional_attention(unet, regions: Regions | None, tokens: int, height: int, width: int):
    """The UNet's cross-attention layers attend region by region while the block runs."""
    if regions is None:
        yield
        return
    saved = dict(unet.attn_processors)
    unet.set_attn_processor({name: _RegionalAttention(p, regions, tokens, height, width)
                             if name.endswith("attn2.processor") else p for name, p in saved.items()})
    try:
        yield
    finally:
        unet.set_attn_processor(saved)


# -------------------------------------------------------------------------------------------------
# the embeddings

class RegionalConditioner:
    """The regions' prompts encoded as one prompt each (the same number of chunks: `tokens`
    positions), laid side by side on the token axis, in the order `regions.texts`; the negative
    prompt once a region. What the engine's denoise stage takes from a Conditioner. Prompt
    editing inside a region changes that region's part at its step; the record's schedule shows
    the regions' prompts of each step range joined by BREAK, Regional Prompter's divider."""

    def __init__(self, conditioner, regions: Regions):
        self.inner, self.regions = conditioner, regions
        self.per_image, self.changes = 1, conditioner.changes
        self.segments = [(end, [" BREAK ".join(ps)], ns[:1]) for end, ps, ns in conditioner.segments]
        kw = conditioner.pipeline_kwargs()
        self.tokens = kw["prompt_embeds"].shape[1]
        self.kwargs = {"prompt_embeds": _side(kw["prompt_embeds"]), "negative_prompt_embeds": _side(kw["negative_prompt_embeds"])}
        if "pooled_prompt_embeds" in kw:     # SDXL: the size conditioning's pooled text is the first prompt's
            self.kwargs.update(pooled_prompt_embeds=kw["pooled_prompt_embeds"][:1],
                               negative_pooled_prompt_embeds=kw["negative_pooled_prompt_embeds"][:1])

    def pipeline_kwargs(self) -> dict:
        return dict(self.kwargs)

    def tensor_inputs(self) -> list[str]:
        return self.inner.tensor_inputs()

    def update(self, pipe, step_index: int, kwargs: dict, images_per_prompt: int) -> dict:
        from studio.prompts.conditioning import Embeds, put_embeds

        e = self.inner.next_embeds(step_index)
        if e is None:
            return kwargs
        first = lambda x: None if x is None else x[:1]  # noqa: E731
        e = Embeds(_side(e.prompt), _side(e.negative), first(e.pooled), first(e.negative_pooled))
        return put_embeds(pipe, kwargs, e, images_per_prompt, self.inner.sdxl)


def _side(x):
    """(regions, L, D) -> (1, regions * L, D): the regions' embeddings side by side."""
    return x.reshape(1, -1, x.shape[-1])
