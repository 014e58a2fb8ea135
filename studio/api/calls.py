"""REST generation calls: submitted to the dispatcher like any tab's, and watched so that
`/progress`, `/interrupt` and `/skip` can answer without waiting for them.

Who is calling: with logins, the login (its REST calls are one session, `api:<login>`, so
interrupt stops that login's REST jobs and never a browser's nor another login's); without, the
client's address (`api@<address>`, in the session `api`). A job is the caller's by user and
session together, both decided here: interrupt, skip and progress act on the caller's own jobs
only, whatever session name a browser claims, and a picture in the making is never shown to
another user. (A1111's interrupt is global; here it is the caller's.)
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from studio.api.convert import Translated
from studio.inputs import encode_base64
from studio.requests import GenerationResult
from studio.serving.dispatcher import Job
from studio.serving.sequence import Sequence
from studio.serving.studio import Studio

PREVIEW_EVERY_S = 1.0


@dataclass(frozen=True)
class Caller:
    user: str          # whom the queue is fair to
    session: str       # what interrupt, skip and progress act on


@dataclass
class Call:
    """One REST call being served: its jobs (one per init image) and what they last said."""
    kind: str
    jobs: list[Job]
    current: int = 0               # the job being drawn
    ahead: int = 0                 # jobs that start before it (while queued)
    started: float | None = None
    done: int = 0                  # denoising steps of the current job
    total: int = 0
    preview: Any = None            # the latest preview picture
    interrupted: bool = False
    timestamp: str = field(default_factory=lambda: time.strftime("%Y%m%d%H%M%S"))


class Calls:
    def __init__(self, studio: Studio) -> None:
        self.studio = studio
        self._lock = threading.Lock()
        self._active: dict[str, list[Call]] = {}

    def run(self, translated: Translated, caller: Caller) -> list[GenerationResult]:
        """Submit every request of the call (each waits its turn), follow them, and return their
        results; an interrupted call returns what finished. A hires fix runs its passes in turn."""
        call = Call(translated.kind, [])
        with self._lock:
            self._active.setdefault(caller, []).append(call)
        try:
            if translated.hires is not None:
                return [self._hires(call, translated, caller)]
            for request in translated.requests:
                call.jobs.append(self.studio.submit(request, user=caller.user, session=caller.session,
                                                    preview_every_s=PREVIEW_EVERY_S))
            return [self._follow(call, i, job) for i, job in enumerate(call.jobs)]
        except BaseException:
            for job in call.jobs:
                job.stop()
            raise
        finally:
            with self._lock:
                self._active[caller].remove(call)
                if not self._active[caller]:
                    del self._active[caller]

    def _follow(self, call: Call, index: int, job: Job) -> GenerationResult:
        for update in job.updates():
            _hear(call, index, update)
        return job.result()

    def _hires(self, call: Call, translated: Translated, caller: Caller) -> GenerationResult:
        """A composing run (the hires fix; a size far above the model's, drawn at its own and
        upscaled): the jobs one after another (call.jobs grows as each is queued); the answer has
        the finished pictures, as A1111's does."""
        sequence = Sequence(self.studio, user=caller.user, session=caller.session, preview_every_s=PREVIEW_EVERY_S,
                            on_submit=call.jobs.append, on_update=lambda update: _hear(call, len(call.jobs) - 1, update))
        result = translated.tool(self.studio, translated.hires, sequence)
        first = translated.requests[0]
        return GenerationResult(request=first, images=result.images, seed=result.seed if result.seed is not None
                                else first.seed, stopped=result.stopped, notes=result.notes)

    # -- interrupt, skip, progress ----------------------------------------------------------------
    def interrupt(self, caller: Caller) -> None:
        with self._lock:
            for call in self._active.get(caller, []):
                call.interrupted = True
        self.studio.stop(caller.session, caller.user)

    def skip(self, caller: Caller) -> None:
        for job in self.studio.jobs_of(caller.session, caller.user):
            job.skip()

    def progress(self, caller: Caller, with_image: bool) -> dict[str, Any]:
        """A1111's progress answer for the caller's calls; idle: progress 0, job_count 0."""
        with self._lock:
            calls = list(self._active.get(caller, []))
        running = next((c for c in calls if c.started is not None), calls[0] if calls else None)
        if running is None:
            return _answer(0.0, 0.0, _state(job_count=0), None, None)
        job = running.jobs[running.current] if running.current < len(running.jobs) else None
        batches = job.request.batch_count if job is not None else 1
        per_batch = max(1, running.total // batches) if running.total else 0
        job_no = (running.done - 1) // per_batch if per_batch and running.done else 0
        fraction = (running.current + (running.done / running.total if running.total else 0)) / max(1, len(running.jobs))
        elapsed = time.monotonic() - running.started if running.started else 0.0
        eta = elapsed / fraction - elapsed if fraction > 0 else 0.0
        state = _state(job=running.kind, job_count=batches * len(running.jobs), job_no=job_no,
                       sampling_step=running.done - job_no * per_batch if per_batch else 0,
                       sampling_steps=per_batch, interrupted=running.interrupted, job_timestamp=running.timestamp)
        text = (f"Waiting: {running.ahead} job(s) before yours" if running.started is None
                else f"Step {running.done}/{running.total}")
        image = encode_base64(running.preview) if with_image and running.preview is not None else None
        return _answer(fraction, eta, state, image, text)


def _hear(call: Call, index: int, update) -> None:
    """What a job of the call said, kept for /progress."""
    if update.kind == "queued" and index == call.current:
        call.ahead = update.ahead
    elif update.kind == "started":
        call.current, call.started, call.done, call.total, call.preview = index, time.monotonic(), 0, 0, None
    elif update.kind == "progress":
        call.done, call.total = update.done, update.total
    elif update.kind == "preview":
        call.preview = update.picture


def _state(job: str = "", job_count: int = 0, job_no: int = 0, sampling_step: int = 0, sampling_steps: int = 0,
           interrupted: bool = False, job_timestamp: str = "0") -> dict[str, Any]:
    return {"skipped": False, "interrupted": interrupted, "stopping_generation": interrupted, "job": job,
            "job_count": job_count, "job_timestamp": job_timestamp, "job_no": job_no,
            "sampling_step": sampling_step, "sampling_steps": sampling_steps}


def _answer(progress: float, eta: float, state: dict, image: str | None, text: str | None) -> dict[str, Any]:
    return {"progress": round(progress, 4), "eta_relative": round(eta, 2), "state": state,
            "current_image": image, "textinfo": text}


