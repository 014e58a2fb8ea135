"""Studio: what every caller is given. It holds the one ModelManager, the output folder, the
presets and the dispatcher; callers `submit` requests (the dispatcher's worker calls `run`, the
in-process backend). The UI talks to this object only, so it never imports torch or diffusers
(the engine is imported on first use, or by `warm_up`)."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from studio.config import Settings
from studio.errors import GenerationStopped, InvalidRequest
from studio.finetune.jobs import TrainingJobs
from studio.serving.dispatcher import Dispatcher, Job
from studio.models.library import EMBEDDED, ModelLibrary
from studio.models.manager import ModelManager
from studio.models.sources import STUDENT, ModelInfo, looks_like_hub_id, student_available
from studio.outputs.folder import HeldPictures, OutputFolder
from studio.outputs.index import HistoryIndex
from studio.prompts.presets import Presets, load_presets
from studio.requests import GeneratedImage, GenerationRequest, GenerationResult, Limits, make_request
from studio.serving.safety import ContentFilter

log = logging.getLogger(__name__)


@dataclass
class Studio:
    manager: ModelManager
    outputs: OutputFolder
    presets: Presets
    limits: Limits = field(default_factory=Limits)
    dispatcher: Dispatcher = None  # type: ignore[assignment]  # made in __post_init__ when not given
    library: ModelLibrary | None = None
    start_model: str = ""        # what --model named: trusted, it was typed on the command line
    content_filter: ContentFilter = field(default_factory=lambda: ContentFilter(False, Path()))
    queue_size: int = 16         # generations waiting at most (0: no bound)
    history: HistoryIndex | None = None     # the searchable index of the outputs folder
    training: TrainingJobs | None = None    # LoRA training jobs (their own processes)
    workers: Any = None          # the Ray backend when generations run on Ray Serve replicas

    def __post_init__(self) -> None:
        if self.dispatcher is None:     # in-process: one slot, Studio.run on the dispatcher's thread
            self.dispatcher = Dispatcher(self.run, max_queued=self.queue_size,
                                         jobs_per_minute=self.limits.jobs_per_minute)

    @classmethod
    def from_settings(cls, settings: Settings) -> "Studio":
        """The studio `settings` describe; with `workers="ray"`, its dispatcher sends each job to
        a Ray Serve replica (studio/workers/) instead of running it in this process."""
        studio = cls._in_process(settings)
        if settings.workers == "ray":
            from studio.workers.backend import use_ray_workers
            use_ray_workers(studio, settings)
        return studio

    @classmethod
    def _in_process(cls, settings: Settings) -> "Studio":
        history = HistoryIndex(settings.outputs)
        return cls(history=history, manager=ModelManager(settings.model, settings.device, settings.dtype,
                                        settings.allow_pickle, settings.prediction_type,
                                        memory=settings.memory, fast=settings.fast,
                                        compile=settings.compile, compile_mode=settings.compile_mode,
                                        compile_cache=settings.compile_cache),
                   outputs=OutputFolder(settings.outputs, on_saved=history.add), presets=load_presets(settings.presets),
                   limits=settings.limits, queue_size=settings.queue_size,
                   library=ModelLibrary(settings.models_dir, allow_pickle=settings.allow_pickle),
                   start_model=settings.model,
                   training=TrainingJobs(Path(settings.outputs) / "training", Path(settings.models_dir),
                                         Path(settings.datasets), settings.device),
                   content_filter=ContentFilter(
                       settings.content_filter == "on" or (settings.content_filter == "auto" and settings.share),
                       settings.presets / "blocklist.txt", settings.models_dir / "safety-checker"))

    def model_info(self) -> ModelInfo:
        return self.manager.info()

    # -- the model picker ------------------------------------------------------------------------
    def model_choices(self, rescan: bool = False) -> list[str]:
        """What the model picker offers: the embedded model (and its few-step student), the --model
        source, the models folder."""
        names = (self.library.scan() if rescan else self.library.names())["checkpoints"] if self.library else []
        extra = [self.start_model] if self.start_model and self.start_model not in (*names, STUDENT) else []
        return [EMBEDDED, *([STUDENT] if student_available() else []), *extra, *names]

    def current_choice(self) -> str:
        source = self.manager.source
        if not source:
            return EMBEDDED
        if source == STUDENT:
            return STUDENT
        if self.library:
            for name in self.library.names()["checkpoints"]:
                if str(self.library.get("checkpoints", name).path) == source:
                    return name
        return source

    def select_model(self, choice: str) -> ModelInfo:
        """Switch to a model named in the picker (or the API). Paths are never taken from here:
        a name from the models folder, the --model source, or a hub id already in the local cache."""
        choice = str(choice or "").strip()
        allow_download = False
        if choice in ("", EMBEDDED):
            source = ""
        elif choice == STUDENT and student_available():
            source = STUDENT
        elif choice == self.start_model:
            source, allow_download = choice, True
        elif self.library and choice in self.library.names()["checkpoints"]:
            source = str(self.library.get("checkpoints", choice).path)
        elif looks_like_hub_id(choice):
            from huggingface_hub import try_to_load_from_cache
            if not isinstance(try_to_load_from_cache(choice, "model_index.json"), str):
                raise InvalidRequest(
                    f"{choice} is not in the local Hugging Face cache, and the studio downloads only "
                    f"what is named at start: python app.py --model {choice}")
            source = choice
        else:
            where = self.library.folder("checkpoints") if self.library else "the models folder"
            raise InvalidRequest(f"Unknown model {choice!r}: pick one from the list, put the file in "
                                 f"{where} and press refresh, or give a hub id (owner/name) that is "
                                 "in the local Hugging Face cache.")
        if source == self.manager.source:
            return self.manager.info()
        return self.manager.switch(source, allow_download=allow_download)

    # -- generating --------------------------------------------------------------------------------
    def make_request(self, mode: str, **raw) -> GenerationRequest:
        """Check raw fields once (the boundary every caller uses: tabs, gradio_client, REST)
        against this studio's limits, presets, styles and models folder."""
        names = self.library.names() if self.library else {"loras": [], "vae": []}
        return make_request(mode=mode, limits=self.limits, known_presets=self.presets.negative_names(),
                            known_styles=self.presets.style_names(), known_loras=names["loras"],
                            known_vaes=names["vae"], **raw)

    def submit(self, request: GenerationRequest, *, user: str, session: str | None = None,
               preview_every_s: float = 0.0, save: bool = True) -> Job:
        """Queue a request with the dispatcher (fair between users); the job handle has its
        progress, previews, stop() and result(). `save=False`: pictures held for the caller."""
        return self.dispatcher.submit(request, user=user, session=session, preview_every_s=preview_every_s,
                                      save=save)

    def live(self, request: GenerationRequest, *, user: str, session: str) -> GenerationResult | None:
        """One live picture (held, not saved) through the dispatcher's live lane; None when newer
        input replaced it while it waited, or Live was switched off."""
        job = self.dispatcher.submit(request, user=user, session=session, lane="live")
        try:
            result = job.result()
        except GenerationStopped:
            return None
        return None if result.stopped else result

    def keep(self, picture: GeneratedImage) -> Path:
        """Save a live picture with the metadata it was made with, as every picture is saved."""
        return self.outputs.save(picture.image, picture.parameters, picture.data, seed=picture.seed)

    def run(self, request: GenerationRequest, on_step=None, should_stop=None,
            on_preview=None, should_skip=None, save: bool = True, outputs=None,
            preview_every_s: float = 0.0, waited_s: float = 0.0) -> GenerationResult:
        """The in-process backend: run one request now, on this thread. The dispatcher's worker
        calls it; callers submit instead, so that the queue stays fair. A request that names a
        model runs on it (switching first if another user switched since it was queued). With
        `save=False` (a live picture) the pictures are held, not written (their `path` is None);
        `outputs` (a Ray worker's) takes them instead of the folder. The job's preview rate and
        wait are a remote backend's business (the dispatcher's Job paces previews here)."""
        from studio.generation.engine import generate

        if request.model:
            self.select_model(request.model)
        if outputs is None:
            outputs = self.outputs if save else HeldPictures()
        return generate(request, self.manager, outputs, self.presets,
                        on_step=on_step, on_preview=on_preview, should_stop=should_stop,
                        should_skip=should_skip, library=self.library,
                        content_filter=self.content_filter)

    def explain_prompt(self, request: GenerationRequest) -> dict:
        if self.workers is not None:            # the weights live on the workers
            return self.workers.explain(request)
        from studio.generation.engine import explain
        return explain(request, self.manager, self.presets)

    def warm_up(self) -> threading.Thread:
        """Import torch and diffusers and hash the model file in the background so the first click
        does not wait; when the fast path compiles (CUDA by default), also load the model and run a
        2-step picture at its native size so the compilation happens while the page is already
        usable (a request that comes first waits on the model lock, it does not fail). With Ray
        workers there is nothing to warm here: each replica loaded its model when it started."""
        def work():
            if self.workers is not None:
                return
            from studio.generation import engine  # noqa: F401
            self.manager.model_hash()       # a large checkpoint's hash, before the first picture
            if not self.manager.will_compile():
                return
            try:
                self.manager.compile_warm_up()
            except Exception:  # noqa: BLE001 - the first real request will say what is wrong
                log.warning("Compilation warm-up failed; the first generation compiles instead",
                            exc_info=True)
        t = threading.Thread(target=work, name="warm-up", daemon=True)
        t.start()
        return t
