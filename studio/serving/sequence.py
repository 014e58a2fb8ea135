"""Sequence: one caller's run of several requests in turn (a plot's cells, a hires fix's two
passes, later an animation's frames). Each request is an ordinary job, so other users' jobs take
turns between them, and the session's Stop ends the whole run, also when pressed between two jobs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from studio.requests import GeneratedImage, GenerationResult
from studio.serving.backend import Request
from studio.serving.dispatcher import Job, Update


@dataclass
class ComposedResult:
    """What a run of several jobs hands back: the finished pictures, the ones made on the way
    (a hires fix's first passes, the undetailed pictures), notes, whether it was stopped."""
    images: list[GeneratedImage] = field(default_factory=list)
    first_pass: list[GeneratedImage] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    stopped: bool = False
    seed: int | None = None


class Sequence:
    def __init__(self, studio, *, user: str, session: str, preview_every_s: float = 0.0,
                 on_submit: Callable[[Job], None] | None = None,
                 on_update: Callable[[Update], None] | None = None, save: bool = True) -> None:
        self.studio, self.user, self.session = studio, user, session
        self.save = save                    # False: pictures held for the caller (animation frames)
        self.preview_every_s = preview_every_s
        self.on_submit = on_submit          # the run's watcher (REST progress) hears of each job
        self.on_update = on_update          # and of every update of every job
        self.started = time.monotonic()

    @property
    def stopped(self) -> bool:
        return self.studio.stopped_since(self.session, self.started, self.user)

    def run(self, request: Request, on_update: Callable[[Update], None] | None = None,
            save: bool | None = None) -> GenerationResult | None:
        """Submit one request (a generation or an upscale), wait for it (updates to `on_update`)
        and return its result; None without submitting when the run was stopped. Raises what the
        job raised. `save`: this job's pictures saved or held, if not as the run's."""
        if self.stopped:
            return None
        job = self.studio.submit(request, user=self.user, session=self.session,
                                 preview_every_s=self.preview_every_s, save=self.save if save is None else save)
        if self.on_submit is not None:
            self.on_submit(job)
        try:
            for update in job.updates():
                for listener in (self.on_update, on_update):
                    if listener is not None:
                        listener(update)
            return job.result()
        finally:
            if not job.finished:        # the caller went away: stop at the next step
                job.stop()
