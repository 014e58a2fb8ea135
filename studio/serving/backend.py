"""What runs a job for the dispatcher: a `Backend`. Two implement it: `InProcess` (here: the
engine on the dispatcher's worker thread, one slot for the one GPU) and the Ray backend
(studio/workers/: one slot per Ray Serve replica). app.py picks one at start; nothing else asks
which it is.

`InProcess` is also what a studio process always holds, whichever backend runs the jobs: the
model manager and picker (the model info the UI shows, the model a job asks for), the outputs
folder pictures are saved in, the presets, the models folder and the content filter. A Ray
replica runs jobs through an `InProcess` of its own.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from studio.config import Settings
from studio.generation.safety import ContentFilter
from studio.models.library import ModelLibrary
from studio.models.manager import ModelManager
from studio.models.picker import ModelPicker
from studio.outputs.folder import HeldPictures, OutputFolder
from studio.prompts.presets import Presets, load_presets
from studio.requests import GenerationRequest, GenerationResult
from studio.requests.upscale import UpscaleRequest

log = logging.getLogger(__name__)


# what a job is: a generation, or a picture to upscale (each a plain-data request)
Request = GenerationRequest | UpscaleRequest


class Backend(Protocol):
    """Runs one job at a time per slot; the dispatcher decides which job goes next."""
    slots: int

    def run(self, request: Request, on_step=None, should_stop=None, on_preview=None,
            should_skip=None, save: bool = True, preview_every_s: float = 0.0,
            waited_s: float = 0.0, owner: str | None = None) -> GenerationResult:
        """Run `request` now; progress, previews, Stop and Skip through the hooks; pictures saved
        (or held, `save=False`) with their metadata, in `owner`'s space (None: the folder's)."""

    def explain(self, request: GenerationRequest) -> dict:
        """How the prompts of `request` are read (where the weights are)."""

    def describe(self) -> str:
        """Where jobs run, for the model banner ("" in this process)."""

    def warm_up(self) -> None:
        """Work done at start so the first job does not wait for it (on a background thread)."""


@dataclass
class InProcess:
    """The engine in this process: one slot."""
    manager: ModelManager
    outputs: OutputFolder
    presets: Presets
    library: ModelLibrary | None = None
    picker: ModelPicker = None  # type: ignore[assignment]   # over the manager and library when not given
    content_filter: ContentFilter = field(default_factory=lambda: ContentFilter(False, Path()))
    slots: int = 1

    def __post_init__(self) -> None:
        if self.picker is None:
            self.picker = ModelPicker(self.manager, self.library)

    @classmethod
    def from_settings(cls, settings: Settings, outputs: OutputFolder | None = None) -> "InProcess":
        manager = ModelManager(settings.model, settings.device, settings.dtype, settings.allow_pickle,
                               settings.prediction_type, memory=settings.memory, fast=settings.fast,
                               compile=settings.compile, compile_mode=settings.compile_mode,
                               compile_cache=settings.compile_cache)
        library = ModelLibrary(settings.models_dir, allow_pickle=settings.allow_pickle)
        return cls(manager=manager, outputs=outputs or OutputFolder(settings.outputs),
                   presets=load_presets(settings.presets), library=library,
                   picker=ModelPicker(manager, library, settings.model),
                   content_filter=ContentFilter(
                       settings.content_filter == "on" or (settings.content_filter == "auto" and settings.share),
                       settings.presets / "blocklist.txt", settings.models_dir / "safety-checker"))

    def run(self, request: Request, on_step=None, should_stop=None, on_preview=None,
            should_skip=None, save: bool = True, preview_every_s: float = 0.0, waited_s: float = 0.0,
            owner: str | None = None, outputs=None) -> GenerationResult:
        """Run one job now, on this thread. A request that names a model runs on it (switching
        first if another user switched since it was queued). With `save=False` (a live picture)
        the pictures are held, not written (their `path` is None); `outputs` (a Ray replica's)
        takes them instead of the folder. The job's preview rate and wait are a remote backend's
        business (the dispatcher's Job paces previews here)."""
        if outputs is None:
            outputs = self.outputs.space(owner) if save else HeldPictures()
        if isinstance(request, UpscaleRequest):
            from studio.generation.upscale import upscale_job
            return upscale_job(request, self.manager, self.library, outputs, should_stop)
        from studio.generation.engine import generate

        if request.model:
            self.picker.select(request.model)
        return generate(request, self.manager, outputs, self.presets,
                        on_step=on_step, on_preview=on_preview, should_stop=should_stop,
                        should_skip=should_skip, library=self.library,
                        content_filter=self.content_filter)

    def explain(self, request: GenerationRequest) -> dict:
        from studio.generation.explain import explain
        if request.model:
            self.picker.select(request.model)
        return explain(request, self.manager, self.presets)

    def describe(self) -> str:
        """The loaded model's device, dtype, memory mode and fast path; or that it loads later."""
        m = self.manager
        if not m.loaded:
            return "loads at the first generation"
        return (f"loaded on {m.device} ({str(m.dtype).replace('torch.', '')}), memory: {m.memory_in_use}, "
                f"fast path: {m.fast.describe()}")

    def warm_up(self) -> None:
        """Import torch and diffusers and hash the model file, so the first click does not wait;
        when the fast path compiles (CUDA by default), also load the model and run a 2-step
        picture at its native size, so the compilation happens while the page is already usable
        (a request that comes first waits on the model lock, it does not fail)."""
        from studio.generation import engine  # noqa: F401
        self.manager.model_hash()       # a large checkpoint's hash, before the first picture
        if not self.manager.will_compile():
            return
        try:
            self.manager.compile_warm_up()
        except Exception:  # noqa: BLE001 - the first real request will say what is wrong
            log.warning("Compilation warm-up failed; the first generation compiles instead", exc_info=True)


def in_background(work, name: str) -> threading.Thread:
    thread = threading.Thread(target=work, name=name, daemon=True)
    thread.start()
    return thread
