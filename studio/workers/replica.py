"""The Ray Serve side: a generation worker per replica, and the Signals board for Stop and Skip.

Imported only by the Ray backend (it imports Ray). Each event a worker yields is a plain tuple:
    ("started", identity)                  the replica took the job (worker, host, pid, device)
    ("placed", state)                      its model and memory mode for this job
    ("progress", done, total)              denoising steps
    ("preview", picture)                   a PIL image, at most one per preview_every_s
    ("picture", image, parameters, data, seed, kind)   a finished picture and its metadata, unsaved
    ("done", seed, stopped, notes, latents)      the end (latents: per picture, or None)
    ("error", error class name, message)   a StudioError (by name) or another failure
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
from typing import Any, Callable

from ray import serve

from studio import errors
from studio.config import Settings
from studio.requests import GenerationRequest
from studio.serving.backend import InProcess

log = logging.getLogger(__name__)
POLL_S = 0.05           # how often a running job looks for Stop and Skip on the board


@serve.deployment(max_ongoing_requests=10_000, ray_actor_options={"num_cpus": 0})
class Signals:
    """Stop and Skip presses by job id. The UI process writes; the replica running the job reads."""

    def __init__(self) -> None:
        self.jobs: dict[str, list] = {}      # job id -> [stopped, skips]

    def stop(self, job: str) -> None:
        self.jobs.setdefault(job, [False, 0])[0] = True

    def skip(self, job: str) -> None:
        self.jobs.setdefault(job, [False, 0])[1] += 1

    def get(self, job: str) -> tuple[bool, int]:
        stopped, skips = self.jobs.get(job, (False, 0))
        return stopped, skips

    def forget(self, job: str) -> None:
        self.jobs.pop(job, None)


class Streamed:
    """Where the engine "saves" a picture on a replica: onto the job's event stream; the UI
    process writes it into the outputs folder when it arrives."""

    def __init__(self, put: Callable[[tuple], None]) -> None:
        self._put = put

    def save(self, image, parameters: str, data: dict[str, Any], *, seed: int, kind: str | None = None) -> None:
        self._put(("picture", image, parameters, data, seed, kind))
        return None


class Presses:
    """A job's Stop and Skip as the engine asks for them (set by the replica's watcher)."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self._skips_seen = 0
        self._skips_taken = 0

    def saw(self, stopped: bool, skips: int) -> None:
        if stopped:
            self.stop.set()
        self._skips_seen = max(self._skips_seen, skips)

    def take_skip(self) -> bool:
        if self._skips_taken < self._skips_seen:
            self._skips_taken += 1
            return True
        return False


# max_ongoing_requests=1: Ray never queues a job inside a busy replica (the dispatcher admits a
# job only when a replica is free, so the router always finds an idle one)
@serve.deployment(max_ongoing_requests=1, health_check_period_s=2, graceful_shutdown_timeout_s=5)
class GenerationWorker:
    def __init__(self, settings: Settings, signals, threads: int) -> None:
        import torch
        if threads:
            torch.set_num_threads(threads)
        self.signals = signals
        self.local = InProcess.from_settings(settings)
        self.local.manager.base()                    # the model loads once, before the first job
        self.identity = {"worker": _replica_id(), "host": socket.gethostname(), "pid": os.getpid(),
                         "device": str(self.local.manager.device), "threads": torch.get_num_threads()}

    def signals_handle(self):
        return self.signals

    def explain(self, request: GenerationRequest, model: str, memory: str) -> dict:
        self._use(model, memory)
        return self.local.explain(request)

    async def generate(self, job: str, request: GenerationRequest, model: str, memory: str,
                       preview_every_s: float):
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        presses = Presses()

        def put(event: tuple) -> None:
            loop.call_soon_threadsafe(events.put_nowait, event)

        yield ("started", self.identity)
        watcher = asyncio.create_task(self._watch(job, presses))
        work = loop.run_in_executor(None, self._run, request, (model, memory), preview_every_s, put, presses)
        try:
            while True:
                event = await events.get()
                yield event
                if event[0] in ("done", "error"):
                    break
            await work
        finally:                    # also when the caller went away: the engine stops at its next step
            presses.stop.set()
            watcher.cancel()

    async def _watch(self, job: str, presses: Presses) -> None:
        while True:
            presses.saw(*await self.signals.get.remote(job))
            await asyncio.sleep(POLL_S)

    def _run(self, request: GenerationRequest, studio_state: tuple[str, str], preview_every_s: float,
             put: Callable[[tuple], None], presses: Presses) -> None:
        """On a thread of the replica: the request through its InProcess backend, events out
        through `put`."""
        try:
            self._use(*studio_state)
            if request.model and request.model != self.local.picker.current():
                self.local.picker.select(request.model)
            self.local.manager.base()   # loaded first: a fresh replica resolves its memory mode only then
            put(("placed", {"model": self.local.picker.current(), "memory": self.local.manager.memory_in_use}))
            result = self.local.run(request, on_step=lambda done, total: put(("progress", done, total)),
                                     should_stop=presses.stop.is_set, should_skip=presses.take_skip,
                                     on_preview=_previews(put, preview_every_s), outputs=Streamed(put))
            put(("done", result.seed, result.stopped, result.notes, [i.latents for i in result.images]))
        except errors.StudioError as exc:
            put(("error", type(exc).__name__, str(exc)))
        except Exception as exc:  # noqa: BLE001 - told to the caller; the replica goes on
            log.exception("Generation failed on a worker")
            put(("error", "", f"{type(exc).__name__}: {exc}"))

    def _use(self, model: str, memory: str) -> None:
        """The UI's model choice (for a request that names none) and memory mode reach every
        replica with each job."""
        if model and model != self.local.picker.current():
            self.local.picker.select(model)
        if memory and memory != self.local.manager.memory:
            self.local.manager.set_memory(memory)


def _previews(put: Callable[[tuple], None], every_s: float):
    if not every_s:
        return None
    last = [float("-inf")]

    def on_preview(make) -> None:
        now = time.monotonic()
        if now - last[0] >= every_s:
            last[0] = now
            put(("preview", make()))
    return on_preview


def _replica_id() -> str:
    try:
        return serve.get_replica_context().replica_id.unique_id
    except Exception:  # noqa: BLE001 - local testing mode has no replica context
        return f"local-{os.getpid()}"
