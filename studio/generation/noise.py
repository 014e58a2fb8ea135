"""The starting noise of a variation: each image's seed noise slerped toward its variation seed's.

Without a variation strength the pipeline draws the noise itself from the per-image generators;
with one, the same draw is made here (same generators, same shapes and dtype, so strength 0 would
be the seed's noise bit for bit) and mixed with the variation seed's before it is handed to the
pipeline as `latents`. The generators keep their state after the draw, so samplers that add noise
at each step (the ancestral ones) go on from the seed's stream as they would without a variation.
"""

from __future__ import annotations


def slerp(t: float, low, high):
    """Spherical interpolation between two noise tensors of one image, as flat vectors: keeps the
    noise's length about right where a straight mix would shrink it. t=0 and t=1 give the ends
    exactly; nearly parallel vectors are mixed linearly."""
    import torch

    if t <= 0:
        return low
    if t >= 1:
        return high
    a, b = low.double().flatten(), high.double().flatten()
    cos = torch.clamp(torch.dot(a, b) / (a.norm() * b.norm()), -1.0, 1.0)
    if cos > 0.9995:
        mixed = (1 - t) * a + t * b
    else:
        omega = torch.acos(cos)
        mixed = (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / torch.sin(omega)
    return mixed.reshape(low.shape).to(low.dtype)


def variation_latents(pipe, generators: list, variation_seeds: list[int], strength: float,
                      width: int, height: int, dtype):
    """The batch's starting latents (on the CPU; the pipeline moves them): per image, the seed's
    noise from its generator, slerped toward a fresh generator's noise for its variation seed."""
    import torch
    from diffusers.utils.torch_utils import randn_tensor

    scale, channels = pipe.vae_scale_factor, pipe.vae.config.latent_channels
    shape = (1, channels, height // scale, width // scale)
    cpu = torch.device("cpu")
    out = []
    for generator, variation_seed in zip(generators, variation_seeds):
        noise = randn_tensor(shape, generator=generator, device=cpu, dtype=dtype)
        other = randn_tensor(shape, generator=torch.Generator("cpu").manual_seed(variation_seed),
                             device=cpu, dtype=dtype)
        out.append(slerp(strength, noise, other))
    latents = torch.cat(out)
    if hasattr(pipe, "_pack_latents"):      # Flux takes its noise as a sequence of 2x2 patches
        latents = pipe._pack_latents(latents, len(out), channels, *shape[2:])
    return latents
