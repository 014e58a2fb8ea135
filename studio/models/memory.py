"""Memory modes: where the weights live and which savers are on.

    none        everything on the device, fastest
    low         attention slicing + VAE slicing and tiling
    offload     diffusers' model CPU offload (CUDA): each part on the GPU only while it runs
    sequential  sequential CPU offload (CUDA): layer by layer, least memory, slowest
    auto        chosen from free GPU memory when the model loads
"""

from __future__ import annotations


MEMORY_MODES = ("auto", "none", "low", "offload", "sequential")
MEMORY_HELP = {
    "auto": "chosen from free memory at load: none, low or offload",
    "none": "everything on the device, fastest",
    "low": "attention slicing + VAE slicing and tiling (less memory, a little slower)",
    "offload": "model CPU offload: each part moves to the GPU only while it runs (CUDA)",
    "sequential": "sequential CPU offload: layer by layer, least memory, slowest (CUDA)",
}


def model_bytes(pipe) -> int:
    return sum(p.numel() * p.element_size() for name in ("unet", "vae", "text_encoder", "text_encoder_2")
               if getattr(pipe, name, None) is not None for p in getattr(pipe, name).parameters())


def resolve_memory_mode(mode: str, device: str, weights: int, free: int | None) -> str:
    """`auto` from free device memory: room for the weights and ~1.5x more for activations ->
    none; room for the weights -> low; less -> offload. CPU and MPS: none."""
    if mode in ("offload", "sequential") and device != "cuda":
        return "low"            # offloading is to the CPU from a GPU; elsewhere the savers still help
    if mode != "auto":
        return mode
    if device != "cuda" or free is None:
        return "none"
    if free > weights * 2.5:
        return "none"
    if free > weights * 1.3:
        return "low"
    return "offload"


def place(pipe, device: str, mode: str) -> None:
    """Put the pipeline on `device` with the memory savers of `mode` (see MEMORY_HELP)."""
    if mode == "offload" and device == "cuda":
        pipe.enable_model_cpu_offload()
    elif mode == "sequential" and device == "cuda":
        pipe.enable_sequential_cpu_offload()
    else:
        pipe.to(device)
    low = mode in ("low", "offload", "sequential")
    if low:
        pipe.enable_attention_slicing(attention_slices(pipe.unet))
    elif hasattr(pipe, "disable_attention_slicing"):
        pipe.disable_attention_slicing()
    vae = pipe.vae
    (vae.enable_slicing if low else vae.disable_slicing)()
    (vae.enable_tiling if low else vae.disable_tiling)()


def attention_slices(unet) -> str:
    """diffusers' "auto" halves each block's head count, which is 0 for a one-head block (the
    embedded model's first): then "max", one head at a time."""
    heads = unet.config.attention_head_dim
    heads = heads if isinstance(heads, (list, tuple)) else [heads]
    return "max" if any(isinstance(h, int) and h < 2 for h in heads) else "auto"


def free_device_memory() -> None:
    """Collect garbage and hand cached CUDA blocks back (after an unload or an OOM)."""
    import gc

    gc.collect()
    try:
        import torch
    except ImportError:
        return
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
