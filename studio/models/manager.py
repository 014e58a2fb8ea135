"""ModelManager: one set of weights, loaded lazily, shared by text-to-image, image-to-image and
inpainting through diffusers' `from_pipe`.

Created once in app.py and passed down. Nothing is loaded at import or at UI build; the first
generation loads the model onto the chosen device and later ones reuse it. A lock serialises
loading and generation on the one device.
"""

from __future__ import annotations

import logging
import threading
from types import SimpleNamespace
from pathlib import Path
from typing import Any

from studio.errors import InvalidRequest, ModelLoadError
from studio.families import VARIANTS, family
from studio.models.memory import (MEMORY_MODES, HOOKED, MODES, Footprint, free_device_memory, model_bytes,
                                  place, resolve_memory_mode)
from studio.models.sources import (PLACEHOLDER_NOTICE, ModelInfo, _is_diffusers_folder, placeholder_dir,
                                   read_pipeline, resolve)

log = logging.getLogger(__name__)

def choose_device(requested: str = "auto") -> str:
    import torch

    if requested == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("--device cuda was asked for, but PyTorch sees no CUDA GPU.")
    if requested == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ModelLoadError("--device mps was asked for, but this machine has no MPS backend.")
    return requested


def choose_dtype(requested: str, device: str, arch: str = "sd"):
    import torch

    table = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
    if requested == "auto":
        # Half precision where the hardware is made for it (the family's: bf16 for Flux and
        # SD 3.5, which overflow fp16); full precision on the CPU.
        return table[family(arch).gpu_dtype] if device in ("cuda", "mps") else torch.float32
    return table[requested]


def _sha256_of(info: ModelInfo) -> str:
    from studio.models.hashes import model_sha256

    try:
        location = info.location
        if info.kind == "hub":
            from huggingface_hub import snapshot_download
            location = snapshot_download(info.location, local_files_only=True)
        return model_sha256(location, info.unet or None)
    except Exception:  # noqa: BLE001 - a hash is metadata: never worth a lost picture
        log.warning("Could not hash %s; images get no Model hash", info.location, exc_info=True)
        return ""


class ModelManager:
    """Lazily loads one model and hands out pipelines for each mode, all sharing its weights."""

    def __init__(self, source: str = "", device: str = "auto", dtype: str = "auto",
                 allow_pickle: bool = False, prediction_type: str | None = None, memory: str = "auto",
                 fast: str = "auto", compile: bool | None = None, compile_mode: str = "default",
                 compile_cache: Path | None = None):
        self.source = source
        self.allow_pickle = allow_pickle          # .ckpt files are pickles: opt-in only
        self.prediction_type = prediction_type    # override for single files (SD 2.x base vs 768-v)
        self._checkpoint = None
        if memory not in MEMORY_MODES:
            raise ModelLoadError(f"Unknown memory mode {memory!r}; one of {', '.join(MEMORY_MODES)}.")
        self.memory = memory                      # what was asked for
        self.memory_in_use = "none"               # what it resolved to for the loaded model
        from studio.models.fast import COMPILE_MODES, FAST_MODES, EmbeddingCache, FastPath
        if fast not in FAST_MODES or compile_mode not in COMPILE_MODES:
            raise ModelLoadError(f"Unknown fast mode {fast!r} / compile mode {compile_mode!r}.")
        self.fast_request = (fast, compile, compile_mode, compile_cache)
        self.fast = FastPath()                    # what the fast path does for the loaded model
        self.text_cache = EmbeddingCache()        # text-encoder outputs for repeated prompts
        self.inject_oom = 0                       # test hook: raise OOM in the next N denoising calls
        self.allow_download = True                # a hub id named on the command line may download
        from studio.models.addons import AddonState
        self.addons = AddonState()                # LoRAs, embeddings, VAE applied to the weights
        from studio.control.annotators import Annotators
        from studio.control.models import ControlModels
        self.controls = ControlModels()           # ControlNets / T2I-Adapters loaded beside the model
        self.annotators = Annotators()            # preprocessors' models (depth), kept across models
        self.requested_device = device
        self.requested_dtype = dtype
        self.lock = threading.RLock()
        self.loads = 0                 # how many times weights were read from disk
        self._info: ModelInfo | None = None
        self._base = None              # the loaded pipeline
        self._derived: dict[str, Any] = {}
        self._own_inpaint = None       # the model's own inpainting UNet, once loaded
        self._preview = None           # (weakref to the VAE, its LatentPreview)
        self._hash: str | None = None  # sha256 of the loaded weights (Model hash: its first 10)
        self.device: str | None = None
        self.dtype = None

    # -- what the model is ---------------------------------------------------------------------
    def info(self) -> ModelInfo:
        if self._info is None:
            self._info, self._checkpoint = resolve(self.source, self.allow_pickle, self.prediction_type)
        return self._info

    @property
    def loaded(self) -> bool:
        return self._base is not None

    # -- loading -------------------------------------------------------------------------------
    def _load(self):
        info = self.info()
        device = choose_device(self.requested_device)
        dtype = choose_dtype(self.requested_dtype, device, info.arch)
        if info.kind == "placeholder" and not _is_diffusers_folder(placeholder_dir()):
            from studio.models.tiny import write_tiny_model
            log.warning(PLACEHOLDER_NOTICE)
            write_tiny_model(placeholder_dir())
            self._info, self._checkpoint = resolve(self.source)
            info = self._info
        pipe = read_pipeline(info, self._checkpoint, dtype, self.allow_pickle, self.allow_download)
        pipe.set_progress_bar_config(disable=True)
        free = None
        if device == "cuda":
            import torch
            free = torch.cuda.mem_get_info()[0]
        self.memory_in_use = resolve_memory_mode(self.memory, device, self._footprint(pipe, info), free)
        place(pipe, device, self.memory_in_use)
        from studio.models.fast import apply_fast, resolve_fast
        fast, compile, compile_mode, cache = self.fast_request
        if self.memory_in_use in HOOKED:
            compile = False             # offload hooks move weights in and out; fp8 hooks cast them
        self.fast = resolve_fast(fast, device, compile, compile_mode, cache)
        apply_fast(pipe, self.fast)
        self.text_cache.clear()
        from studio.models.addons import AddonState
        self._base, self.device, self.dtype = pipe, device, dtype
        self._derived = {}
        self.addons = AddonState()
        self.loads += 1
        log.info("Loaded %s (%s) on %s as %s", info.name, info.family, device, dtype)
        return pipe

    @staticmethod
    def _footprint(pipe, info: ModelInfo) -> Footprint:
        """The weights `auto` weighs; fp8 and text encoders on the CPU offered for the families
        whose table says so (the transformer families)."""
        return Footprint.of(pipe, offers=family(info.arch).lean_modes)

    def base(self):
        with self.lock:
            return self._base if self._base is not None else self._load()

    def pipeline(self, mode: str):
        """The shared pipeline for a mode; img2img and inpaint come from `from_pipe`."""
        with self.lock:
            if mode in self._derived:
                return self._derived[mode]
            from diffusers import (AutoPipelineForImage2Image, AutoPipelineForInpainting,
                                   AutoPipelineForText2Image)

            base = self.base()
            info = self.info()
            if info.inpaint_only and mode != "inpaint":
                what = "9-channel UNet" if info.in_channels == 9 else info.family
                raise InvalidRequest(f"{info.name} is an inpainting model ({what}): use the "
                                     "Inpainting tab, or load a regular model for this tab.")
            if mode in info.own_modes:
                self._derived[mode] = base          # the loaded pipeline is this mode's (Flux Fill)
                return base
            auto = {"txt2img": AutoPipelineForText2Image, "img2img": AutoPipelineForImage2Image,
                    "inpaint": AutoPipelineForInpainting}[mode]
            own_class = dict(VARIANTS[info.variant].mode_classes).get(mode) if info.variant else None
            if own_class:                           # a class AutoPipeline does not map (Kontext's inpainting)
                import diffusers
                auto = getattr(diffusers, own_class)
            own = {"unet": self._inpaint_unet(base)} if mode == "inpaint" and info.inpaint_unet else {}
            pipe = auto.from_pipe(base, **own)
            pipe.set_progress_bar_config(disable=True)
            self._derived[mode] = pipe
            return pipe

    def _inpaint_unet(self, base):
        """The model's own 9-channel inpainting UNet, beside the shared VAE and text encoder, in
        the loaded weights' dtype and on their device, with the same fast path."""
        if self._own_inpaint is not None:
            return self._own_inpaint
        from diffusers import UNet2DConditionModel

        from studio.models.fast import apply_fast
        info = self.info()
        try:
            unet = UNet2DConditionModel.from_pretrained(info.inpaint_unet, torch_dtype=self.dtype,
                                                        local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"Could not load the inpainting UNet of {info.name} "
                                 f"({info.inpaint_unet}): {exc}") from exc
        unet.to(self.device).eval()
        apply_fast(SimpleNamespace(unet=unet), self.fast)
        log.info("Inpainting with %s's own 9-channel UNet", info.name)
        self._own_inpaint = unet
        return unet

    def pipeline_with_scheduler(self, mode: str, scheduler):
        """A pipeline object of its own for one request: same modules, its own scheduler, so a
        running request never sees another's scheduler state."""
        import inspect

        shared = self.pipeline(mode)
        components = dict(shared.components)
        components["scheduler"] = scheduler
        if "requires_safety_checker" in inspect.signature(type(shared).__init__).parameters:
            components["requires_safety_checker"] = False
        pipe = type(shared)(**components)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def set_memory(self, mode: str) -> str:
        """Change the memory mode; takes effect at once if a model is loaded. Returns a note."""
        if mode not in MEMORY_MODES:
            raise InvalidRequest(f"Unknown memory mode {mode!r}; one of {', '.join(MEMORY_MODES)}.")
        with self.lock:
            self.memory = mode
            if self._base is None:
                return f"Memory mode {mode}: applied when the model loads."
            if MODES.get(mode) and MODES[mode].offload and self.device != "cuda":
                raise InvalidRequest(f"Memory mode {mode} needs a CUDA GPU; this studio runs on {self.device}.")
            if self.memory_in_use in HOOKED or mode in HOOKED:
                # offload hooks and fp8 storage cannot be undone in place: reload in the new mode
                source = self.source
                self.unload()
                self.source = source
                self._info = None
                return f"Memory mode {mode}: the model reloads at the next generation."
            free = None
            if self.device == "cuda":
                import torch
                free = torch.cuda.mem_get_info()[0] + model_bytes(self._base)
            self.memory_in_use = resolve_memory_mode(mode, self.device, self._footprint(self._base, self.info()),
                                                     free)
            place(self._base, self.device, self.memory_in_use)
            return f"Memory mode {mode} ({self.memory_in_use}) is on."

    def savers_on(self) -> bool:
        """After an out-of-memory error: attention slicing and VAE slicing/tiling (if not on)."""
        with self.lock:
            if self.memory_in_use != "none" or self._base is None:
                return False
            self.memory_in_use = "low"
            place(self._base, self.device, "low")
            return True

    def ip_adapter(self, folder: Path, strength: float):
        """A context: IP-Adapter loaded on the model (every tab) at `strength`, removed after."""
        import contextlib

        from studio.models.addons import find_ip_adapter

        @contextlib.contextmanager
        def loaded():
            with self.lock:
                base = self.base()
                weights = find_ip_adapter(folder, base.unet.config.cross_attention_dim)
                try:
                    base.load_ip_adapter(str(folder), subfolder="", weight_name=weights.name,
                                         image_encoder_folder="image_encoder", local_files_only=True)
                except Exception as exc:  # noqa: BLE001
                    raise InvalidRequest(f"Could not load the IP-Adapter {weights.name}: "
                                         f"{type(exc).__name__}: {exc}") from None
                base.set_ip_adapter_scale(strength)
                self._derived = {}
                try:
                    yield weights
                finally:
                    base.unload_ip_adapter()
                    self._derived = {}
        return loaded()

    def set_vae(self, name: str | None, path: Path | None) -> None:
        """Use the VAE file `name` (None: the model's own) in every tab."""
        with self.lock:
            base, state = self.base(), self.addons
            if name == state.vae:
                return
            if state.own_vae is None:
                state.own_vae = base.vae
            if name is None:
                vae = state.own_vae
            else:
                from studio.models.addons import load_vae_file
                vae = load_vae_file(path, self.dtype, self.info().family).to(self.device)

                from studio.models.fast import apply_fast
                apply_fast(SimpleNamespace(vae=vae), self.fast)   # channels-last / compiled like the own
            base.register_modules(vae=vae)
            self._derived = {}          # from_pipe copies hold the old VAE
            state.vae = name

    def will_compile(self) -> bool:
        """Whether loading will compile the UNet (the fast path's rule, before anything loads)."""
        from studio.models.fast import resolve_fast
        fast, compile, mode, cache = self.fast_request
        return resolve_fast(fast, choose_device(self.requested_device), compile, mode, cache).compile

    def compile_warm_up(self) -> float:
        """Load the model and run one 2-step picture at its native size (batch 1, CFG on), so
        that torch.compile builds its graphs now; returns the seconds it took. Nothing is saved."""
        import time

        import torch

        started = time.perf_counter()
        with self.lock:
            pipe = self.pipeline("inpaint" if self.info().inpaint_only else "txt2img")
            size = self.info().native_size
            kwargs = dict(prompt="", num_inference_steps=2, height=size, width=size,
                          generator=torch.Generator("cpu").manual_seed(0), output_type="pil")
            if self.info().inpaint_only:
                from PIL import Image
                kwargs.update(image=Image.new("RGB", (size, size)), mask_image=Image.new("L", (size, size), 255))
            pipe(**kwargs)
        seconds = time.perf_counter() - started
        log.info("Warm-up (%s) done in %.1f s", self.fast.describe(), seconds)
        return seconds

    # -- live previews ---------------------------------------------------------------------------
    def preview(self, latents):
        """A cheap RGB picture of the first image in `latents` (studio/models/preview.py); the linear map
        is fitted once per VAE, so a swapped-in VAE file gets its own."""
        import weakref

        from studio.models.preview import MAX_LINEAR_ERROR, LatentPreview, decoded_preview

        with self.lock:
            vae = self.base().vae
            ref, fitted = self._preview if self._preview else (None, None)
            if ref is None or ref() is not vae:
                fitted = LatentPreview.fit(vae)
                self._preview = (weakref.ref(vae), fitted)
            if fitted.error > MAX_LINEAR_ERROR:
                return decoded_preview(vae, latents)
            return fitted.preview(latents)

    def model_hash(self) -> str:
        """A1111's `Model hash` of the model: 10 hex digits of model_sha256; "" when unreadable."""
        return self.model_sha256()[:10]

    def known_sha256(self) -> str | None:
        """The model's sha256 if it was computed already (nothing is read)."""
        return self._hash or None

    def model_sha256(self) -> str:
        """The model's sha256 (studio/models/hashes.py), computed once per load and outside the
        lock (Studio.warm_up starts it in the background); "" when it cannot be read."""
        with self.lock:
            if self._hash is not None:
                return self._hash
            info, source = self.info(), self.source
        value = _sha256_of(info)
        with self.lock:
            if self.source == source:        # not switched meanwhile
                self._hash = value
        return value

    # -- freeing ---------------------------------------------------------------------------------
    def unload(self) -> None:
        with self.lock:
            from studio.models.addons import AddonState
            self._base = None
            self._hash = None
            self._derived = {}
            self._own_inpaint = None
            self.addons = AddonState()
            self.text_cache.clear()
            self.controls.clear()
            free_device_memory()

    def switch(self, source: str, allow_download: bool = True) -> ModelInfo:
        """Use another model: the new one is checked first, then the old one is freed. The new
        one loads lazily, at the next generation (or `base()`)."""
        with self.lock:
            info, checkpoint = resolve(source, self.allow_pickle, self.prediction_type)
            self.unload()
            self.source, self._info, self._checkpoint = source, info, checkpoint
            self.allow_download = allow_download
            return info
