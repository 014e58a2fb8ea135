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

import numpy as np

from studio.config import Settings
from studio.control.maps import preview_map
from studio.control.models import model_title
from studio.control.preprocessors import names as preprocessor_names
from studio.errors import GenerationStopped
from studio.models.library import ModelLibrary
from studio.models.manager import ModelManager
from studio.models.picker import ModelPicker
from studio.models.sources import ModelInfo
from studio.outputs.folder import OutputFolder, space_name
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
    spaces: bool = False             # logins: each has its own space (pictures, history, animations)
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
                   backend=backend(local, settings) if backend else None, spaces=bool(settings.auth))

    @classmethod
    def over(cls, manager: ModelManager, outputs, presets: Presets, library: ModelLibrary | None = None,
             start_model: str = "", **kw) -> "Studio":
        """A studio whose jobs run in this process over these parts (tests, benchmarks, a trainer's
        sample pictures)."""
        local = InProcess(manager=manager, outputs=outputs, presets=presets, library=library,
                          picker=ModelPicker(manager, library, start_model))
        return cls(local=local, **kw)

    # -- the models folder and the presets -----------------------------------------------------
    def names(self, kind: str, rescan: bool = False) -> list[str]:
        """What the models folder offers of `kind` (checkpoints, loras, vae, embeddings,
        ip-adapter, upscalers, controlnet), by name; `rescan`: read the folder again first."""
        library = self.local.library
        if library is None:
            return []
        return (library.scan() if rescan else library.names())[kind]

    def control_title(self, name: str) -> str:
        """A control model as sd-webui-controlnet lists it: "name [short hash]"."""
        return model_title(self.local.library.get("controlnet", name))

    def detect(self, module: str, picture: np.ndarray, **settings) -> np.ndarray:
        """A preprocessor's map of `picture` (RGB uint8), to look at before generating; the
        settings as a control unit takes them (processor_res, threshold_a/b, mask, width and
        height of the picture to be made: 0 for the map at the preprocessor's resolution)."""
        library, annotators = self.local.library, self.local.manager.annotators
        folder = None if library is None else library.folder("annotators")
        return preview_map(module, picture, annotate=lambda a, rgb: annotators.run(a, rgb, folder), **settings)

    def lora_families(self, rescan: bool = False) -> list[tuple[str, str]]:
        """The LoRAs by name, each with the model family it was made for ("" where its keys do not say)."""
        from studio.families.loras import file_family
        return [(name, file_family(self.file_of("loras", name))) for name in self.names("loras", rescan)]

    def file_of(self, kind: str, name: str) -> Path:
        """Where a file the models folder offers is (for listings: a path is never taken from a caller)."""
        return self.local.library.get(kind, name).path

    def preset_names(self) -> list[str]:
        return self.local.presets.negative_names()

    def style_names(self) -> list[str]:
        return self.local.presets.style_names()

    def styles(self) -> dict:
        """The styles by name (their prompt and negative prompt)."""
        return dict(self.local.presets.styles)

    # -- each login's space -------------------------------------------------------------------------
    def space(self, user: str | None) -> str | None:
        """The folder name of `user`'s space when logins have their own (`user` is then the login
        the server checked, never a name a client sent); None: everyone shares the outputs folder."""
        return space_name(user) if self.spaces and user else None

    def search_history(self, query, user: str | None = None) -> tuple[int, list[dict]]:
        """The history, of `user`'s pictures only when logins have their own space."""
        return self.history.search(query, self.space(user))

    def history_choices(self, column: str, user: str | None = None) -> list[str]:
        return self.history.choices(column, self.space(user))

    # -- the outputs folder and the content filter --------------------------------------------------
    def save(self, image, parameters: str, data: dict, *, seed: int = 0, kind: str | None = None,
             user: str | None = None) -> Path:
        """Save a picture made of others (a plot's grid) with its metadata, as every picture is, in
        `user`'s space."""
        return self.local.outputs.space(self.space(user)).save(image, parameters, data, seed=seed, kind=kind)

    def outputs_root(self, user: str | None = None) -> Path:
        """The outputs folder; `user`'s own within it when logins have their own space."""
        return self.local.outputs.space(self.space(user)).root

    def remove_stale_outputs(self) -> int:
        """Unfinished temporary files an earlier crash left in the outputs folder: removed."""
        return self.local.outputs.remove_stale()

    def safety_on(self) -> bool:
        return self.local.content_filter.enabled

    def safety_status(self) -> str:
        """What the content filter does, in a few words."""
        return self.local.content_filter.status()

    # -- Stop ---------------------------------------------------------------------------------------
    def stop(self, session: str, user: str) -> bool:
        """Stop this user's session's jobs (running and waiting); False when it has none."""
        return self.dispatcher.stop(session, user)

    def stop_live(self, session: str, user: str) -> None:
        """End this session's live pictures (Live switched off, or Generate pressed)."""
        self.dispatcher.stop_live(session, user)

    def stopped_since(self, session: str, since: float, user: str) -> bool:
        return self.dispatcher.stopped_since(session, since, user)

    def jobs_of(self, session: str, user: str) -> list[Job]:
        return self.dispatcher.jobs_of(session, user)

    # -- the models ---------------------------------------------------------------------------------
    def model_info(self) -> ModelInfo:
        return self.local.manager.info()

    def model_choices(self, rescan: bool = False) -> list[str]:
        """What the model picker offers (studio/models/picker.py)."""
        return self.local.picker.choices(rescan)

    def current_choice(self) -> str:
        return self.local.picker.current()

    def select_model(self, choice: str) -> ModelInfo:
        """Switch to a model named in the picker (or the API); never a path."""
        return self.local.picker.select(choice)

    def model_loaded(self) -> bool:
        return self.local.manager.loaded

    def memory_mode(self) -> str:
        return self.local.manager.memory

    def set_memory(self, mode: str) -> str:
        """The memory savers for the model (auto, none, low, offload, sequential); returns what was done."""
        return self.local.manager.set_memory(mode)

    def known_model_sha256(self) -> str | None:
        """The loaded model's full sha256 when it was hashed already (nothing is read)."""
        return self.local.manager.known_sha256()

    def model_source(self) -> str:
        """The loaded model as a source another process can load (a path or hub id; "" = embedded)."""
        return self.local.manager.source

    def where_jobs_run(self) -> str:
        """For the model banner: "" in this process, else the backend's own words."""
        return self.backend.describe()

    # -- generating --------------------------------------------------------------------------------
    def make_request(self, mode: str, **raw) -> GenerationRequest:
        """Check raw fields once (the boundary every caller uses: tabs, gradio_client, REST)
        against this studio's limits, presets, styles and models folder."""
        return make_request(mode=mode, limits=self.limits, known_presets=self.preset_names(),
                            known_styles=self.style_names(), known_loras=self.names("loras"),
                            known_vaes=self.names("vae"), known_controlnets=self.names("controlnet"),
                            known_preprocessors=preprocessor_names(), **raw)

    def submit(self, request: GenerationRequest, *, user: str, session: str | None = None,
               preview_every_s: float = 0.0, save: bool = True) -> Job:
        """Queue a request with the dispatcher (fair between users); the job handle has its
        progress, previews, stop() and result(). `save=False`: pictures held for the caller."""
        return self.dispatcher.submit(request, user=user, session=session, preview_every_s=preview_every_s,
                                      save=save, owner=self.space(user))

    def check_room(self, user: str, jobs: int = 1) -> None:
        """QueueFull now, before anything is decoded, when `jobs` more would not be let in."""
        self.dispatcher.check_room(user, jobs)

    def live(self, request: GenerationRequest, *, user: str, session: str) -> GenerationResult | None:
        """One live picture (held, not saved) through the dispatcher's live lane; None when newer
        input replaced it while it waited, or Live was switched off."""
        job = self.dispatcher.submit(request, user=user, session=session, lane="live")
        try:
            result = job.result()
        except GenerationStopped:
            return None
        return None if result.stopped else result

    def keep(self, picture: GeneratedImage, user: str | None = None) -> Path:
        """Save a live picture with the metadata it was made with, as every picture is saved."""
        return self.save(picture.image, picture.parameters, picture.data, seed=picture.seed, user=user)

    def explain_prompt(self, request: GenerationRequest) -> dict:
        """How the prompts are read, by the backend that holds the weights."""
        return self.backend.explain(request)

    def warm_up(self) -> threading.Thread:
        """The backend's start-up work on a background thread (the page is usable meanwhile)."""
        return in_background(self.backend.warm_up, "warm-up")
