"""Memory modes: where the weights live and which savers are on — a table, one row a mode.

    none          everything on the device, fastest
    low           attention slicing + VAE slicing and tiling
    fp8           the denoiser's weights stored in fp8, each layer cast up as it runs (diffusers'
                  layerwise casting): half its bf16 memory, a little less faithful
    cpu-text      the text encoders stay and run on the CPU (T5-XXL: 9.5 GB of bf16 off the GPU);
                  each prompt is encoded once and its embeddings cached on the GPU
    fp8-cpu-text  both: Flux dev in about 12 GB of GPU memory
    offload       diffusers' model CPU offload (CUDA): each part on the GPU only while it runs
    group         diffusers' group offload (CUDA): layers stream to the GPU as they run, the next
                  copy overlapping the current layer (a CUDA stream): for a model no part of which fits
    sequential    sequential CPU offload (CUDA): layer by layer, least memory, slowest
    auto          chosen from free GPU memory when the model loads
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MemoryMode:
    help: str
    savers: bool = False        # attention slicing + VAE slicing and tiling
    fp8: bool = False           # the denoiser's weights stored in fp8
    text_on_cpu: bool = False   # the text encoders kept and run on the CPU
    offload: str = ""           # "model" | "group" | "sequential": hooks that move weights (CUDA only)

    @property
    def hooked(self) -> bool:
        """Hooks on the modules (casting or moving weights): no compile; a switch reloads."""
        return self.fp8 or bool(self.offload)


MODES = {
    "none": MemoryMode("everything on the device, fastest"),
    "low": MemoryMode("attention slicing + VAE slicing and tiling (less memory, a little slower)", savers=True),
    "fp8": MemoryMode("the UNet's or transformer's weights kept in fp8, cast up layer by layer (half the memory)",
                      fp8=True),
    "cpu-text": MemoryMode("the text encoders (T5-XXL: 9.5 GB) stay and run on the CPU; each prompt encoded once",
                           text_on_cpu=True),
    "fp8-cpu-text": MemoryMode("fp8 and cpu-text together (Flux dev in about 12 GB)", fp8=True, text_on_cpu=True),
    "offload": MemoryMode("model CPU offload: each part moves to the GPU only while it runs (CUDA)",
                          savers=True, offload="model"),
    "group": MemoryMode("group offload: layers stream to the GPU as they run, overlapped (CUDA)",
                        savers=True, offload="group"),
    "sequential": MemoryMode("sequential CPU offload: layer by layer, least memory, slowest (CUDA)",
                             savers=True, offload="sequential"),
}
MEMORY_MODES = ("auto", *MODES)
MEMORY_HELP = {"auto": "chosen from free memory at load: none, fp8 or fp8-cpu-text (Flux, SD 3.5, Z-Image), "
                       "low, offload or group", **{name: mode.help for name, mode in MODES.items()}}
HOOKED = tuple(name for name, mode in MODES.items() if mode.hooked)

# `auto` tries these in order and takes the first that fits. fp8 comes before cpu-text: T5-XXL reads
# 512 tokens a prompt (~5 TFLOP), seconds to a minute on a CPU for each new prompt, where fp8 costs
# little time; cpu-text alone (bf16's quality) and sequential are only ever asked for.
AUTO_ORDER = ("none", "fp8", "fp8-cpu-text", "low", "offload", "group")
GiB = 1 << 30
HEADROOM = 1.2                  # the allocator's slack over the weights kept on the GPU
ACTIVATIONS = 3 * GiB           # a 1024 px picture's activations and VAE decode without savers (SDXL, Flux)
ACTIVATIONS_SAVED = 1 * GiB     # ... with attention slicing and a tiled VAE decode

WEIGHTS = ("unet", "transformer", "vae", "text_encoder", "text_encoder_2", "text_encoder_3")
DENOISERS = ("unet", "transformer")
TEXT_ENCODERS = ("text_encoder", "text_encoder_2", "text_encoder_3")


def model_bytes(pipe, names: tuple[str, ...] = WEIGHTS) -> int:
    return sum(p.numel() * p.element_size() for name in names
               if getattr(pipe, name, None) is not None for p in getattr(pipe, name).parameters())


@dataclass(frozen=True)
class Footprint:
    """What `auto` weighs: all the weights, the largest part, and what the family offers to move
    off the GPU's budget (the denoiser's bytes for fp8, the text encoders' for cpu-text: 0 where it
    does not offer it; the transformer families do)."""
    weights: int
    largest: int = 0
    fp8: int = 0
    text: int = 0

    @classmethod
    def of(cls, pipe, offers: bool) -> "Footprint":
        parts = [model_bytes(pipe, (name,)) for name in WEIGHTS]
        return cls(sum(parts), max(parts), model_bytes(pipe, DENOISERS) if offers else 0,
                   model_bytes(pipe, TEXT_ENCODERS) if offers else 0)

    def resident(self, mode: MemoryMode) -> float:
        """Bytes the mode keeps on the GPU (offloads: the largest part, or one layer's worth for group)."""
        if mode.offload:
            return self.largest if mode.offload == "model" else 0
        return self.weights - (self.fp8 / 2 if mode.fp8 else 0) - (self.text if mode.text_on_cpu else 0)

    def offered(self, mode: MemoryMode) -> bool:
        return (self.fp8 > 0 or not mode.fp8) and (self.text > 0 or not mode.text_on_cpu)


def resolve_memory_mode(mode: str, device: str, footprint: Footprint, free: int | None) -> str:
    """The mode in use: an explicit one as asked (offloads only from a CUDA GPU: elsewhere the
    savers still help -> low); `auto` = the first of AUTO_ORDER that the family offers and whose
    resident weights, with headroom and room for the activations, fit free device memory (an
    out-of-memory error still turns the savers on: Manager.savers_on). CPU and MPS: none."""
    if mode in MODES and MODES[mode].offload and device != "cuda":
        return "low"
    if mode != "auto":
        return mode
    if device != "cuda" or free is None:
        return "none"
    for name in AUTO_ORDER:
        row = MODES[name]
        room = footprint.resident(row) * HEADROOM + (ACTIVATIONS_SAVED if row.savers else ACTIVATIONS)
        if footprint.offered(row) and free > room:
            return name
    return "group"


def place(pipe, device: str, mode: str) -> None:
    """Put the pipeline on `device` with the memory savers of `mode` (see MODES)."""
    import torch
    row = MODES[mode]
    if row.offload and device == "cuda":
        OFFLOADERS[row.offload](pipe, device)
    else:
        keep = TEXT_ENCODERS if row.text_on_cpu else ()
        for name, module in pipe.components.items():
            if isinstance(module, torch.nn.Module):
                module.to("cpu" if name in keep else device)
    if row.fp8:
        denoiser = next(getattr(pipe, n) for n in DENOISERS if getattr(pipe, n, None) is not None)
        denoiser.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=denoiser.dtype)
    unet = getattr(pipe, "unet", None)          # the transformer families slice no attention
    if row.savers and unet is not None:
        pipe.enable_attention_slicing(attention_slices(unet))
    elif unet is not None and hasattr(pipe, "disable_attention_slicing"):
        pipe.disable_attention_slicing()
    vae = pipe.vae
    (vae.enable_slicing if row.savers else vae.disable_slicing)()
    (vae.enable_tiling if row.savers else vae.disable_tiling)()


def _group_offload(pipe, device: str) -> None:
    """Leaf by leaf, the next layer's copy overlapping the current one's work on a CUDA stream."""
    import torch
    pipe.enable_group_offload(onload_device=torch.device(device), offload_device=torch.device("cpu"),
                              offload_type="leaf_level", use_stream=torch.device(device).type == "cuda")


OFFLOADERS = {
    "model": lambda pipe, device: pipe.enable_model_cpu_offload(),
    "sequential": lambda pipe, device: pipe.enable_sequential_cpu_offload(),
    "group": _group_offload,
}


def encoder_device(pipe, encoder):
    """Where to put a text encoder's token ids: where its weights are — the GPU; the CPU under
    cpu-text; the CPU between calls under model and group offload, whose hooks move the inputs
    with the weights. Under sequential offload the weights wait on the meta device, where ids
    cannot go (the first lent H200 showed it): there, the pipeline's execution device."""
    import torch
    execution = getattr(pipe, "_execution_device", None)
    meta = encoder.device.type == "meta"
    return execution if meta and isinstance(execution, torch.device) else encoder.device


def to_execution_device(pipe, tensor):
    """Embeddings made where the text encoders run, moved to where the denoiser runs."""
    return None if tensor is None else tensor.to(pipe._execution_device)


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
