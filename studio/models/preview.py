"""Live previews without a VAE decode: a linear map from the 4 latent channels to RGB.

Each loaded VAE gets its own map, fitted once by least squares: a few flat and two-colour test
pictures are encoded, and RGB (averaged over each latent cell) is regressed on the scaled
latents. That costs one small encode, works for any SD-family VAE (SD 1.x/2.x, SDXL, the
embedded model, a swapped-in VAE file) without per-model constants, and a preview is then one
4x3 matrix product per step instead of a full decode.

Stable Diffusion's VAEs are close to linear in this sense; a VAE that is not (the embedded
model's tiny one: mean error ~45/255 on the fitting pictures) gets a real decode of the
preview instead — at most two a second (studio/ui/jobs.py), and such VAEs are the tiny ones.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

MAX_LINEAR_ERROR = 20.0   # mean abs error (0-255) above which the map is not trusted


def _test_pictures(n: int = 24, size: int = 64, seed: int = 0) -> np.ndarray:
    """Flat colours and two-colour splits (N, size, size, 3) in [0, 1]."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, size, size, 3), dtype=np.float32)
    for i in range(n):
        a, b = rng.random(3), rng.random(3)
        out[i] = a
        if i % 2:
            cut = rng.integers(size // 4, 3 * size // 4)
            if i % 4 == 1:
                out[i, :cut] = b
            else:
                out[i, :, :cut] = b
    return out


class LatentPreview:
    """`LatentPreview.fit(vae)` then `preview(latents)` -> a small RGB picture of the first image."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray, error: float = 0.0):
        self.weight, self.bias = weight, bias        # (C, 3), (3,)
        self.error = error                           # mean abs error on the fitting pictures, 0-255

    @classmethod
    def fit(cls, vae) -> "LatentPreview":
        import torch

        pictures = _test_pictures()
        x = torch.from_numpy(pictures).permute(0, 3, 1, 2).mul(2).sub(1)
        param = next(vae.parameters())
        upcast = param.dtype == torch.float16 and getattr(vae.config, "force_upcast", False)
        dtype = torch.float32 if upcast else param.dtype
        try:
            if upcast:
                vae.to(torch.float32)        # SDXL's VAE overflows in fp16, as diffusers knows
            with torch.no_grad():
                z = vae.encode(x.to(param.device, dtype)).latent_dist.mode().float().cpu()
        finally:
            if upcast:
                vae.to(torch.float16)
        z = (z - _shift(vae)) * float(getattr(vae.config, "scaling_factor", 1.0) or 1.0)   # as pipelines scale it
        n, c, h, w = z.shape
        factor = pictures.shape[1] // h
        rgb = pictures.reshape(n, h, factor, w, factor, 3).mean(axis=(2, 4))      # (n, h, w, 3)
        a = np.concatenate([z.permute(0, 2, 3, 1).reshape(-1, c).numpy(), np.ones((n * h * w, 1))], axis=1)
        sol, *_ = np.linalg.lstsq(a, rgb.reshape(-1, 3), rcond=None)
        error = float(np.abs(a @ sol - rgb.reshape(-1, 3)).mean() * 255)
        return cls(sol[:-1].astype(np.float32), sol[-1].astype(np.float32), error)

    def preview(self, latents, scale: int = 4) -> Image.Image:
        z = latents[0].detach().float().cpu().numpy()          # (C, h, w)
        rgb = np.einsum("chw,cd->hwd", z[: self.weight.shape[0]], self.weight) + self.bias
        img = Image.fromarray((np.clip(rgb, 0, 1) * 255).round().astype(np.uint8))
        return img.resize((img.width * scale, img.height * scale), Image.BILINEAR)


def _shift(vae) -> float:
    """The latents' offset of Flux's and SD 3.5's VAEs (diffusers' `shift_factor`); 0 for SD's."""
    return float(getattr(vae.config, "shift_factor", None) or 0.0)


def decoded_preview(vae, latents, scale: int = 4) -> Image.Image:
    """A real decode of the first image, shown at the same size as the linear preview."""
    import torch

    z = latents[:1] / float(getattr(vae.config, "scaling_factor", 1.0) or 1.0) + _shift(vae)
    param = next(vae.parameters())
    with torch.no_grad():
        x = vae.decode(z.to(param.device, param.dtype)).sample[0].float().clamp(-1, 1)
    arr = ((x.permute(1, 2, 0).cpu().numpy() + 1) * 127.5).round().astype(np.uint8)
    h, w = latents.shape[-2:]
    return Image.fromarray(arr).resize((w * scale, h * scale), Image.BILINEAR)
