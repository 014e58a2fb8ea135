"""Reference images named in the prompt with `{image}` / `{image:name}`.

Reference-only attention (training-free; the idea of ControlNet's "reference_only"): at every
denoising step the reference's latents, noised to that step's noise level, go through the UNet
first; each self-attention layer keeps what it saw, and in the real pass each self-attention
also attends to those reference features. The output of each such layer is
`strength * attention(own + reference) + (1 - strength) * attention(own)`, so strength 0 is
exactly the plain generation (the hooks are not even installed). Works with any
UNet2DConditionModel: SD 1.x, 2.x, SDXL, inpainting UNets, the embedded model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from studio.errors import InvalidRequest

TAG = re.compile(r"\{image(?::([^{}|]*))?\}")


@dataclass(frozen=True)
class Reference:
    name: str
    image: Image.Image


def take_reference_tags(text: str) -> tuple[str, list[str | None]]:
    """Remove `{image}` / `{image:name}` tags; returns the text and the names (None = `{image}`)."""
    names = [(m.group(1).strip() if m.group(1) is not None else None) for m in TAG.finditer(text)]
    text = TAG.sub("", text)
    text = re.sub(r"[ \t]{2,}", " ", text)
    text = re.sub(r"\s+,", ",", text)
    return text.strip(), names


def select(references: list[Reference], names: list[str | None]) -> list[Reference]:
    """The references the prompt asks for: `{image:name}` by name, `{image}` = the first; a
    prompt without tags uses every attached reference."""
    if not references:
        if names:
            raise InvalidRequest("The prompt names a reference image ({image}) but none is attached: "
                                 "add one in the Reference images panel.")
        return []
    if not names:
        return list(references)
    by_name = {r.name: r for r in references}
    chosen: list[Reference] = []
    for n in names:
        ref = references[0] if n is None else by_name.get(n)
        if ref is None:
            raise InvalidRequest(f"{{image:{n}}}: no reference named {n!r} (attached: "
                                 f"{', '.join(by_name)}).")
        if ref not in chosen:
            chosen.append(ref)
    return chosen


class _Bank:
    def __init__(self, strength: float):
        self.strength = strength
        self.mode = "off"                 # write | read | off
        self.store: dict[int, list[torch.Tensor]] = {}


class _ReferenceAttention:
    """Wraps a self-attention layer's processor."""

    def __init__(self, inner, bank: _Bank, key: int):
        self.inner, self.bank, self.key = inner, bank, key

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, **kw):
        bank = self.bank
        if bank.mode == "write":
            bank.store.setdefault(self.key, []).append(hidden_states.detach())
        plain = self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, **kw)
        if bank.mode != "read" or self.key not in bank.store:
            return plain
        refs = [r if r.shape[0] == hidden_states.shape[0] else r.repeat_interleave(
            hidden_states.shape[0] // r.shape[0], dim=0) for r in bank.store[self.key]]
        context = torch.cat([hidden_states, *refs], dim=1)
        guided = self.inner(attn, hidden_states, context, attention_mask, **kw)
        return bank.strength * guided + (1 - bank.strength) * plain


def _alpha_bar(alphas_cumprod: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """alpha_bar at a (possibly fractional) timestep, by linear interpolation."""
    t = t.float().clamp(0, len(alphas_cumprod) - 1)
    lo = t.floor().long()
    hi = (lo + 1).clamp(max=len(alphas_cumprod) - 1)
    frac = t - lo.float()
    a = alphas_cumprod.to(t.device)
    return a[lo] * (1 - frac) + a[hi] * frac


class ReferenceGuidance:
    """Installs reference-only attention on a pipeline's UNet for one call (a context manager)."""

    def __init__(self, pipe, references: list[Reference], strength: float, width: int, height: int,
                 seed: int):
        self.pipe, self.refs, self.strength = pipe, references, strength
        self.size, self.seed = (width, height), seed
        self._handles = []
        self._saved = None
        self._busy = False

    @torch.no_grad()
    def _latents(self) -> list[torch.Tensor]:
        pipe = self.pipe
        vae = pipe.vae
        out = []
        for ref in self.refs:
            img = ref.image.convert("RGB").resize(self.size, Image.LANCZOS)
            x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 127.5 - 1)
            x = x.permute(2, 0, 1)[None].to(vae.device, vae.dtype)
            lat = vae.encode(x).latent_dist.mode()
            shift = getattr(vae.config, "shift_factor", None) or 0.0
            out.append((lat - shift) * vae.config.scaling_factor)
        return out

    def __enter__(self):
        if self.strength <= 0 or not self.refs:
            return self
        unet = self.pipe.unet
        self.bank = _Bank(self.strength)
        self._saved = dict(unet.attn_processors)
        procs = {}
        for i, (name, proc) in enumerate(self._saved.items()):
            procs[name] = _ReferenceAttention(proc, self.bank, i) if name.endswith("attn1.processor") else proc
        unet.set_attn_processor(procs)
        self.ref_latents = self._latents()
        g = torch.Generator("cpu").manual_seed(self.seed)
        self.noise = [torch.randn(lat.shape, generator=g).to(lat.device, lat.dtype) for lat in self.ref_latents]
        alphas = getattr(self.pipe.scheduler, "alphas_cumprod", None)
        if alphas is None:
            raise InvalidRequest("Reference images need a scheduler with a DDPM noise schedule.")
        self.alphas = alphas
        self._handles.append(unet.register_forward_pre_hook(self._before_unet, with_kwargs=True))
        return self

    def _before_unet(self, unet, args, kwargs):
        if self._busy:
            return None
        sample = args[0] if args else kwargs["sample"]
        t = args[1] if len(args) > 1 else kwargs["timestep"]
        t = torch.as_tensor(t, device=sample.device).reshape(-1)[:1]
        ab = _alpha_bar(self.alphas, t).to(sample.dtype)
        self.bank.store.clear()
        self.bank.mode = "write"
        self._busy = True
        try:
            for lat, noise in zip(self.ref_latents, self.noise):
                noisy = ab.sqrt() * lat + (1 - ab).sqrt() * noise
                noisy = noisy.repeat(sample.shape[0], 1, 1, 1)
                if sample.shape[1] != noisy.shape[1]:     # a 9-channel inpainting UNet: nothing masked
                    extra = sample.shape[1] - noisy.shape[1]
                    known = lat.repeat(sample.shape[0], 1, 1, 1)
                    mask = torch.zeros_like(noisy[:, :1]).expand(-1, extra - known.shape[1], -1, -1)
                    noisy = torch.cat([noisy, mask, known], dim=1)
                ref_kwargs = dict(kwargs)
                ref_kwargs.pop("sample", None)
                rest = args[1:] if args else ()
                if rest:
                    unet(noisy, *rest, **ref_kwargs)
                else:
                    unet(noisy, **ref_kwargs)
        finally:
            self._busy = False
        self.bank.mode = "read"
        return None

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()
        self._handles = []
        if self._saved is not None:
            self.pipe.unet.set_attn_processor(self._saved)
            self._saved = None
        return False
