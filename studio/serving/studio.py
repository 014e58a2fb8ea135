"""Studio: what every caller is given, the front door. Callers check raw fields into a request
(`make_request`), `submit` it to the dispatcher (fair between users), and ask for what the pages
and APIs show: the models offered and loaded, a picture's record, how a prompt is read. Jobs run
on the studio's backend (studio/serving/backend.py: in this process, or Ray Serve replicas),
which app.py picks at start. The UI talks to this object only, so it never imports torch or
diffusers (the engine is imported on first use, or by `warm_up`)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from studio.config import Settings
from studio.errors import GenerationStopped
from studio.generation.safety import ContentFilter
from studio.models.library import ModelLibrary
from studio.models.manager import ModelManager
from studio.models.picker import ModelPicker
from studio.models.sources import ModelInfo
from studio.outputs.folder import OutputFolder
from studio.outputs.index import HistoryIndex
from studio.prompts.presets import Presets
from studio.requests import GeneratedImage, GenerationRequest, GenerationResult, Limits, make_request
from studio.serving.backend import Backend, InProcess, in_background
from studio.serving.dispatcher import Dispatcher, Job

# what app.py may hand `from_settings` to run jobs elsewhere: (this process's parts, settings) -> backend
BackendFactory = Callable[[InProcess, Settings], Backend]


@dataclass
class Studio:
    local: InProcess                 # this process's model, outputs, presets, models folder, filter
    limits: Limits = field(default_factory=Limits)
    queue_size: int = 16             # generations waiting at most (0: no bound)
    history: HistoryIndex | None = None     # the searchable index of the outputs folder
    backend: Backend = None  # type: ignore[assignment]   # runs the jobs; `local` when not given
    dispatcher: Dispatcher = field(init=False)

    def __post_init__(self) -> None:
        if self.backend is None:
            self.backend = self.local
        self.dispatcher = Dispatcher(self.backend.run, max_queued=self.queue_size,
                                     jobs_per_minute=self.limits.jobs_per_minute, slots=self.backend.slots)

    @classmethod
    def from_settings(cls, settings: Settings, backend: BackendFactory | None = None) -> "Studio":
        """The studio `settings` describe; `backend` (the Ray workers, studio/workers/) runs its
        jobs elsewhere than in this process."""
        history = HistoryIndex(settings.outputs)
        local = InProcess.from_settings(settings, OutputFolder(settings.outputs, on_saved=history.add))
        return cls(local=local, limits=settings.limits, queue_size=settings.queue_size, history=history,
                   backend=backend(local, settings) if backend else None)

    @classmethod
    def over(cls, manager: ModelManager, outputs, presets: Presets, library: ModelLibrary | None = None,
             start_model: str = "", **kw) -> "Studio":
        """A studio whose jobs run in this process over these parts (tests, benchmarks, a trainer's
        sample pictures)."""
        local = InProcess(manager=manager, outputs=outputs, presets=presets, library=library,
                          picker=ModelPicker(manager, library, start_model))
        return cls(local=local, **kw)

    # -- this process's parts, for the callers that need them -------------------------------------
    @property
    def manager(self) -> ModelManager:
        return self.local.manager

    @property
    def outputs(self) -> OutputFolder:
        return self.local.outputs

    @property
    def presets(self) -> Presets:
        return self.local.presets

    @property
    def library(self) -> ModelLibrary | None:
        return self.local.library

    @property
    def content_filter(self) -> ContentFilter:
        return self.local.content_filter

    # -- the models ---------------------------------------------------------------------------------
    def model_info(self) -> ModelInfo:
        return self.manager.info()

    def model_choices(self, rescan: bool = False) -> list[str]:
        """What the model picker offers (studio/models/picker.py)."""
        return self.local.picker.choices(rescan)

    def current_choice(self) -> str:
        return self.local.picker.current()

    def select_model(self, choice: str) -> ModelInfo:
        """Switch to a model named in the picker (or the API); never a path."""
        return self.local.picker.select(choice)

    def model_source(self) -> str:
        """The loaded model as a source another process can load (a path or hub id; "" = embedded)."""
        return self.manager.source

    def where_jobs_run(self) -> str:
        """For the model banner: "" in this process, else the backend's own words."""
        return self.backend.describe()

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

    def explain_prompt(self, request: GenerationRequest) -> dict:
        """How the prompts are read, by the backend that holds the weights."""
        return self.backend.explain(request)

    def warm_up(self) -> threading.Thread:
        """The backend's start-up work on a background thread (the page is usable meanwhile)."""
        return in_background(self.backend.warm_up, "warm-up")
