"""Sequence: one caller's run of several requests in turn (a plot's cells, a hires fix's two
passes, later an animation's frames). Each request is an ordinary job, so other users' jobs take
turns between them, and the session's Stop ends the whole run, also when pressed between two jobs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from studio.requests import GeneratedImage, GenerationResult
from studio.requests.tools import without_tools
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


# a composing run: (studio, raw fields, sequence, on_progress(done 0-1, text)) -> ComposedResult
Tool = Callable[..., ComposedResult]


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


Finish = Callable[[GeneratedImage], tuple[GeneratedImage | None, list[str]]]


def finish_each(studio, raw: dict, sequence: Sequence, on_progress, base: Tool | None, mode: str, name: str,
                finish: Finish) -> ComposedResult:
    """A finishing tool's run (Restore faces, the detailer, called `name`): `base` (another tool)
    or a plain `mode` generation of `raw` without the tools' fields, then `finish` on each of its
    pictures (the finished picture and notes; None: stopped). The pictures as drawn come after."""
    say = on_progress or (lambda done, text: None)
    made = _run_base(studio, raw, sequence, base, mode, say)
    if made.stopped or not made.images:
        return made
    result = ComposedResult(first_pass=[*made.images, *made.first_pass], notes=list(made.notes), seed=made.seed)
    for n, picture in enumerate(made.images):
        say(0.5 + n / len(made.images) / 2, f"{name}: picture {n + 1}")
        finished, notes = finish(picture)
        if finished is None:
            result.stopped = True
            result.notes.append(f"Stopped: {name} did not finish the pictures left.")
            break
        result.images.append(finished)
        result.notes += [note for note in notes if note not in result.notes]
    return result


def _run_base(studio, raw: dict, sequence: Sequence, base: Tool | None, mode: str,
              say: Callable[[float, str], None]) -> ComposedResult:
    """The run a finishing tool works on; its progress told as the first half."""
    if base is not None:
        return base(studio, raw, sequence, lambda done, text: say(done / 2, text))
    done = sequence.run(studio.make_request(mode, **without_tools(raw)),
                        lambda u: u.kind == "progress" and say(u.done / u.total / 2, f"Step {u.done}/{u.total}"))
    if done is None or done.stopped:
        return ComposedResult(stopped=True, notes=done.notes if done else ["Stopped."])
    return ComposedResult(images=list(done.images), notes=list(done.notes), seed=done.seed)
