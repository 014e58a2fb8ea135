"""Memory modes: where the weights live and which savers are on.

    none        everything on the device, fastest
    low         attention slicing + VAE slicing and tiling
    fp8         the denoiser's weights stored in fp8, each layer cast up as it runs (diffusers'
                layerwise casting): half its bf16 memory, a little less faithful
    offload     diffusers' model CPU offload (CUDA): each part on the GPU only while it runs
    sequential  sequential CPU offload (CUDA): layer by layer, least memory, slowest
    auto        chosen from free GPU memory when the model loads
"""

from __future__ import annotations


MEMORY_MODES = ("auto", "none", "low", "fp8", "offload", "sequential")
MEMORY_HELP = {
    "auto": "chosen from free memory at load: none, low, fp8 (Flux, SD 3.5) or offload",
    "none": "everything on the device, fastest",
    "low": "attention slicing + VAE slicing and tiling (less memory, a little slower)",
    "fp8": "the UNet's or transformer's weights kept in fp8, cast up layer by layer (half the memory)",
    "offload": "model CPU offload: each part moves to the GPU only while it runs (CUDA)",
    "sequential": "sequential CPU offload: layer by layer, least memory, slowest (CUDA)",
}


WEIGHTS = ("unet", "transformer", "vae", "text_encoder", "text_encoder_2", "text_encoder_3")
DENOISERS = ("unet", "transformer")
HOOKED = ("fp8", "offload", "sequential")   # hooks on the modules: no compile; a switch reloads


def model_bytes(pipe, names: tuple[str, ...] = WEIGHTS) -> int:
    return sum(p.numel() * p.element_size() for name in names
               if getattr(pipe, name, None) is not None for p in getattr(pipe, name).parameters())


def resolve_memory_mode(mode: str, device: str, weights: int, free: int | None, fp8_denoiser: int = 0) -> str:
    """`auto` from free device memory: room for the weights and ~1.5x more for activations ->
    none; room for them with the denoiser in fp8 (`fp8_denoiser`: its bytes, for the families
    that offer it) -> fp8; room for the weights -> low; less -> offload. CPU and MPS: none."""
    if mode in ("offload", "sequential") and device != "cuda":
        return "low"            # offloading is to the CPU from a GPU; elsewhere the savers still help
    if mode != "auto":
        return mode
    if device != "cuda" or free is None:
        return "none"
    if free > weights * 2.5:
        return "none"
    if fp8_denoiser and free > (weights - fp8_denoiser / 2) * 1.3:
        return "fp8"
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
    if mode == "fp8":
        import torch
        denoiser = next(getattr(pipe, n) for n in DENOISERS if getattr(pipe, n, None) is not None)
        denoiser.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=denoiser.dtype)
    low = mode in ("low", "offload", "sequential")
    unet = getattr(pipe, "unet", None)          # the transformer families slice no attention
    if low and unet is not None:
        pipe.enable_attention_slicing(attention_slices(unet))
    elif unet is not None and hasattr(pipe, "disable_attention_slicing"):
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
