"""The fast path: what the studio does to a loaded pipeline so that generation runs faster.

    --fast auto   on for CUDA, off elsewhere (default)
    --fast on     also on the CPU (channels-last; torch.compile only with --compile)
    --fast off    the pipeline exactly as diffusers loads it

On CUDA the pipeline is already in half precision and uses PyTorch's fused scaled-dot-product
attention (diffusers' default processor). The fast path adds
  1. channels-last memory format for the UNet and the VAE (convolutions without layout copies),
  2. torch.compile of the UNet and the VAE decoder with static shapes (one graph per size and
     batch; `--compile-mode` picks inductor's mode, e.g. reduce-overhead for CUDA graphs), its
     artifacts in an on-disk cache (`--compile-cache`) so a restart skips most of the work,
  3. a cache of text embeddings for repeated prompts (ModelManager.text_cache, keyed by
     everything that changes them: the loaded weights, LoRAs, embeddings, clip skip).
Each step's gain is measured by `python bench/speed.py`, which runs the same cases with and
without it. Fused QKV projections are left out of the default: PEFT LoRAs and the reference
attention processors target to_q/to_k/to_v, which a fused to_qkv would bypass silently.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FAST_MODES = ("auto", "on", "off")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass(frozen=True)
class FastPath:
    channels_last: bool = False
    compile: bool = False
    compile_mode: str = "default"
    cache_dir: Path | None = None

    @property
    def enabled(self) -> bool:
        return self.channels_last or self.compile

    def describe(self) -> str:
        if not self.enabled:
            return "off"
        parts = ["channels-last"] if self.channels_last else []
        if self.compile:
            parts.append(f"torch.compile ({self.compile_mode})")
        return " + ".join(parts)


def resolve_fast(mode: str, device: str, compile: bool | None = None, compile_mode: str = "default",
                 cache_dir: Path | None = None) -> FastPath:
    """What the fast path does on `device`: `compile` None means "on with CUDA"."""
    if mode not in FAST_MODES:
        raise ValueError(f"Unknown fast mode {mode!r}; one of {', '.join(FAST_MODES)}.")
    if compile_mode not in COMPILE_MODES:
        raise ValueError(f"Unknown compile mode {compile_mode!r}; one of {', '.join(COMPILE_MODES)}.")
    on = mode == "on" or (mode == "auto" and device == "cuda")
    if not on:
        return FastPath()
    use_compile = (device == "cuda") if compile is None else compile
    return FastPath(channels_last=True, compile=use_compile, compile_mode=compile_mode,
                    cache_dir=cache_dir)


def use_compile_cache(folder: Path | None) -> None:
    """Point inductor's on-disk caches (FX graphs, autotuning, AOT autograd) at `folder` so a
    restart reuses the compiled kernels. Must run before the first compilation."""
    if folder is None:
        return
    folder.mkdir(parents=True, exist_ok=True)
    # importing torch already sets TORCHINDUCTOR_CACHE_DIR to its /tmp default: override it
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(folder)
    os.environ.setdefault("TORCHINDUCTOR_FX_GRAPH_CACHE", "1")
    os.environ.setdefault("TORCHINDUCTOR_AUTOGRAD_CACHE", "1")
    try:
        import torch._inductor.config as inductor

        inductor.fx_graph_cache = True
    except Exception:  # noqa: BLE001 - an older torch without the switch still compiles
        pass


def apply_fast(pipe, fast: FastPath) -> None:
    """Apply the fast path to a loaded pipeline, in place (the modules stay the same objects, so
    img2img and inpaint pipelines made with from_pipe share the compiled UNet)."""
    import torch

    if fast.channels_last:
        for name in ("unet", "vae"):
            module = getattr(pipe, name, None)
            if module is not None:
                module.to(memory_format=torch.channels_last)
    if fast.compile:
        use_compile_cache(fast.cache_dir)
        mode = None if fast.compile_mode == "default" else fast.compile_mode
        # nn.Module.compile compiles in place: the pipelines keep their UNet/VAE classes and
        # configs. dynamic=False: one static graph per resolution and batch.
        for module in (getattr(pipe, "unet", None), getattr(getattr(pipe, "vae", None), "decoder", None)):
            if module is not None:
                module.compile(mode=mode, dynamic=False)
    if fast.enabled:
        log.info("Fast path: %s", fast.describe())


class EmbeddingCache:
    """Text-encoder outputs by key, least recently used dropped first. A repeated prompt (the
    usual case while trying seeds or samplers) skips the text encoders entirely."""

    def __init__(self, size: int = 256):
        self.size = size
        self._items: OrderedDict[Any, Any] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key, compute):
        if key in self._items:
            self._items.move_to_end(key)
            self.hits += 1
            return self._items[key]
        self.misses += 1
        value = compute()
        self._items[key] = value
        if len(self._items) > self.size:
            self._items.popitem(last=False)
        return value

    def clear(self) -> None:
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)
