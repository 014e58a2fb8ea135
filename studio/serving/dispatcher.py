"""The dispatcher: the one door every job goes through.

Callers (the tabs, the gradio_client endpoints, the REST API, animation frames, plot cells, live
previews, Extras and the hires fix's upscales) `submit(request, user=...)` a request (a
generation, or a picture to upscale) and get a `Job` back: its updates (queue position,
progress, previews), `stop()`, and `result()`.

The dispatcher owns the one queue and runs `slots` jobs at a time, each on a worker thread that
calls its backend's `run` (studio/serving/backend.py): in-process (one slot: the one GPU), or Ray Serve replicas
(studio/workers/, one slot a replica: a job is handed to Ray only when a replica is free, so
the waiting stays here, where it can be reordered).
The queue is fair between users (a login name, else a browser session): start-time fair queueing
(Goyal, Vin & Cheng, SIGCOMM 1996) with every job costing one unit, so users take turns: a
newcomer waits for the running job and at most one job of each other user, never behind a
backlog (with one other user who queued ten: after at most one of theirs). One user may hold at
most half the waiting places, so no one can fill the queue for everyone else.

Live previews (`lane="live"`: a picture that follows the prompt as it is typed) take turns in the
same fair queue, so someone typing never starves the others, and are latest-wins: a session has
at most one live job waiting, and a newer one replaces it. They are not saved (the backend hears
`save=False`) and are not counted against the jobs-per-minute limit, which latest-wins already
bounds.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from studio.errors import GenerationStopped, QueueFull, StudioError
from studio.requests import GenerationRequest, GenerationResult
from studio.serving.rate_limit import RateLimiter

log = logging.getLogger(__name__)

# what runs one request: a Backend's run(request, on_step=..., should_stop=..., on_preview=..., save=...,
# preview_every_s=..., waited_s=...)
RunJob = Callable[..., GenerationResult]
LANES = ("queue", "live")


@dataclass(frozen=True)
class Update:
    """One thing a waiting caller may show: `queued` (ahead = jobs that start first), `started`,
    `progress` (done of total denoising steps), `preview` (a picture), `done` (call result())."""
    kind: str
    ahead: int = 0
    done: int = 0
    total: int = 0
    picture: Any = None


class Job:
    """A handle on one submitted request. Thread-safe; made by the dispatcher only."""

    def __init__(self, request: GenerationRequest, user: str, session: str, preview_every_s: float,
                 dispatcher: "Dispatcher", lane: str = "queue", save: bool = True, owner: str | None = None) -> None:
        self.request, self.user, self.session, self.lane = request, user, session, lane
        self.owner = owner                         # whose space its pictures are saved in (None: the folder's)
        self.save = save and lane != "live"        # False: the pictures are held for the caller
        self.preview_every_s = preview_every_s     # 0: no previews
        self.state = "queued"                      # -> running -> done | failed | stopped
        self.queued_at = time.monotonic()
        self.started_at: float | None = None
        self.start_tag = 0.0                       # its place in the fair order (start-time fair queueing)
        self._dispatcher = dispatcher
        self._stop = threading.Event()
        self._skip = threading.Event()
        self._finished = threading.Event()
        self._updates: queue.Queue[Update] = queue.Queue()
        self._last_preview = 0.0
        self._preview_waiting = threading.Event()   # a preview is queued and not yet taken
        self._result: GenerationResult | None = None
        self._error: BaseException | None = None

    # -- for callers -----------------------------------------------------------------------------
    @property
    def finished(self) -> bool:
        return self._finished.is_set()

    def stop(self) -> None:
        """Stop at the next denoising step (images already finished are kept), or never start."""
        self._stop.set()
        self._dispatcher._cancel_if_queued(self)

    def skip(self) -> None:
        """Skip the batch being drawn (A1111's Skip); the job goes on with its next batch."""
        if self.state == "running":
            self._skip.set()

    def updates(self) -> Iterator[Update]:
        """Updates until the job ends (the last one is `done`); blocks between them."""
        while True:
            update = self._updates.get()
            if update.kind == "preview":
                self._preview_waiting.clear()
            yield update
            if update.kind == "done":
                return

    def result(self, timeout: float | None = None) -> GenerationResult:
        """The saved images; raises what the engine raised (a StudioError says what to fix)."""
        if not self._finished.wait(timeout):
            raise TimeoutError("the job has not finished")
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result

    # -- for the worker ----------------------------------------------------------------------------
    def _put(self, update: Update) -> None:
        self._updates.put(update)

    def _take_skip(self) -> bool:
        """True once per skip() (the engine asks at every step)."""
        if self._skip.is_set():
            self._skip.clear()
            return True
        return False

    def _on_step(self, done: int, total: int) -> None:
        self._put(Update("progress", done=done, total=total))

    def _on_preview(self, make: Callable[[], Any]) -> None:
        """At most one picture per preview_every_s, made only when the last one was taken."""
        if not self.preview_every_s or time.monotonic() - self._last_preview < self.preview_every_s:
            return
        if self._preview_waiting.is_set():
            return
        self._last_preview = time.monotonic()
        try:
            self._preview_waiting.set()
            self._put(Update("preview", picture=make()))
        except Exception:  # noqa: BLE001 - a preview that cannot be made is skipped
            self._preview_waiting.clear()
            log.debug("no preview", exc_info=True)

    def _finish(self, state: str, result: GenerationResult | None = None,
                error: BaseException | None = None) -> None:
        self.state, self._result, self._error = state, result, error
        self._finished.set()
        self._put(Update("done"))


class Dispatcher:
    """One queue in front of `slots` workers, fair between users, with a bound on waiting jobs and
    per-user rate limits."""

    def __init__(self, backend: RunJob, *, max_queued: int = 16, jobs_per_minute: int = 0,
                 slots: int = 1) -> None:
        self._backend = backend
        self.slots = max(1, slots)
        self.max_queued = max_queued                # 0: no bound
        self.max_per_user = max(1, max_queued // 2) if max_queued else 0
        self.rate = RateLimiter(jobs_per_minute)
        self._lock = threading.Condition()
        self._heap: list[tuple[float, int, Job]] = []   # (start tag, arrival, job)
        self._arrival = itertools.count()
        self._finish_tag: dict[str, float] = {}     # each user's last finish tag
        self._virtual = 0.0                         # the start tag of the job last put in service
        self._running: list[Job] = []
        self._workers: list[threading.Thread] = []
        self._stopped_at: dict[str, float] = {}     # session -> when its Stop was last pressed

    # -- callers -----------------------------------------------------------------------------------
    def submit(self, request: GenerationRequest, *, user: str, session: str | None = None,
               preview_every_s: float = 0.0, lane: str = "queue", save: bool = True,
               owner: str | None = None) -> Job:
        """Queue a request; QueueFull when max_queued jobs wait or `user` holds half of them,
        InvalidRequest when `user` is over their jobs per minute (none counts as a job). In the
        live lane the session's waiting live job, if any, is replaced (it ends stopped).
        `save=False`: the pictures come back held, with their metadata, for a caller that saves
        them itself (animation frames, under their frame names)."""
        if lane not in LANES:
            raise ValueError(f"lane must be one of {LANES}")
        with self._lock:                  # (reentrant: a replaced job is cancelled under it, so it cannot start)
            if lane == "live":
                for old in [j for j in self.order() if j.lane == "live" and j.session == (session or user)]:
                    old.stop()
            if self.max_queued and self.waiting() >= self.max_queued:
                raise QueueFull(f"Queue is full: {self.waiting()} generations are waiting; try again "
                                "in a moment.")
            mine = sum(1 for *_, j in self._heap if j.user == user)
            if self.max_per_user and mine >= self.max_per_user:
                raise QueueFull(f"You have {mine} generations waiting, the most one user may queue "
                                "here; wait for one of them to start.")
            if lane != "live":
                self.rate.admit(user)
            job = Job(request, user, session or user, preview_every_s, self, lane, save, owner)
            start = max(self._virtual, self._finish_tag.get(user, 0.0))
            self._finish_tag[user] = start + 1
            heapq.heappush(self._heap, (start, next(self._arrival), job))
            self._tell_positions()
            self._ensure_workers()
            self._lock.notify_all()
        return job

    # A job belongs to its user and session, both decided by the server (a login, else an
    # unguessable connection id; a client may name any session, never another's user): Stop and
    # the rest act on jobs of both, so a session name that is guessed stops nothing of another's.
    def check_room(self, user: str, jobs: int = 1) -> None:
        """QueueFull now when `jobs` more of `user`'s would not be let in: a caller that must decode
        or prepare much before submitting asks first, and spends nothing on a full queue."""
        with self._lock:
            waiting = self.waiting()
            mine = sum(1 for *_, j in self._heap if j.user == user)
        if self.max_queued and waiting + jobs > self.max_queued:
            raise QueueFull(f"Queue is full: {waiting} generations are waiting and this asks for {jobs}; try "
                            "again in a moment.")
        if self.max_per_user and mine + jobs > self.max_per_user:
            raise QueueFull(f"You have {mine} generations waiting and this asks for {jobs}; one user may queue "
                            f"{self.max_per_user} here.")

    def stop(self, session: str, user: str) -> bool:
        """Stop every job of this user's session (running or queued); False when it has none.
        The time is kept, so a caller running several jobs in turn (`Sequence`) also stops when
        Stop is pressed between two of them."""
        now = time.monotonic()
        with self._lock:     # (an hour-old press can no longer matter to a run: forget it)
            self._stopped_at = {s: t for s, t in self._stopped_at.items() if now - t < 3600}
            self._stopped_at[(user, session)] = now
        jobs = self.jobs_of(session, user)
        for job in jobs:
            job.stop()
        return bool(jobs)

    def stop_live(self, session: str, user: str) -> None:
        """End this session's live jobs (Live switched off, or Generate pressed); not a Stop press,
        so a run of several jobs (`Sequence`) goes on."""
        for job in self.jobs_of(session, user):
            if job.lane == "live":
                job.stop()

    def stopped_since(self, session: str, since: float, user: str) -> bool:
        """Whether this user's session pressed Stop after `since` (a time.monotonic() value)."""
        with self._lock:
            return self._stopped_at.get((user, session), float("-inf")) >= since

    def jobs_of(self, session: str, user: str) -> list[Job]:
        """This user's session's jobs: the running one first, then the waiting ones in start order."""
        with self._lock:
            mine = [*self._running, *self.order()]
            return [j for j in mine if j.session == session and j.user == user]

    def waiting(self) -> int:
        with self._lock:
            return sum(1 for *_, j in self._heap if j.state == "queued")

    def order(self) -> list[Job]:
        """Waiting jobs in the order they will start."""
        with self._lock:
            return [j for *_, j in sorted(self._heap, key=lambda e: e[:2]) if j.state == "queued"]

    # -- the queue ---------------------------------------------------------------------------------
    def _cancel_if_queued(self, job: Job) -> None:
        with self._lock:
            if job.state != "queued":
                return
            self._heap = [e for e in self._heap if e[2] is not job]
            heapq.heapify(self._heap)
            self._settle_turn(job.user)
        job._finish("stopped", result=GenerationResult(request=job.request, images=[], seed=job.request.seed,
                                                       stopped=True, notes=["Stopped before it started."]))
        self._tell_positions()

    def _settle_turn(self, user: str) -> None:
        """After a cancel, the user's next job starts where their remaining ones end (a stopped
        backlog must not push their next job behind everyone else's turns)."""
        ends = [start + 1 for start, _, j in self._heap if j.user == user]
        ends += [j.start_tag + 1 for j in self._running if j.user == user]
        if ends:
            self._finish_tag[user] = max(ends)
        else:
            self._finish_tag.pop(user, None)

    def _tell_positions(self) -> None:
        """Each waiting job hears how many start before it (a running one included when every
        slot is busy: it has to end first)."""
        with self._lock:
            busy = len(self._running) >= self.slots
            for i, job in enumerate(self.order()):
                job._put(Update("queued", ahead=i + busy))

    def _ensure_workers(self) -> None:
        self._workers = [w for w in self._workers if w.is_alive()]
        while len(self._workers) < self.slots:
            worker = threading.Thread(target=self._work, name=f"gpu-queue-{len(self._workers)}", daemon=True)
            self._workers.append(worker)
            worker.start()

    def _next(self) -> Job:
        with self._lock:
            while not self._heap:
                self._lock.wait()
            start, _, job = heapq.heappop(self._heap)
            self._virtual, job.start_tag, job.state, job.started_at = start, start, "running", time.monotonic()
            self._running.append(job)
            # a finish tag at or below the virtual time changes nothing (max() picks the latter)
            self._finish_tag = {u: t for u, t in self._finish_tag.items() if t > self._virtual}
        return job

    def _work(self) -> None:
        while True:
            job = self._next()
            self._tell_positions()
            job._put(Update("started"))
            outcome = self._run(job)
            with self._lock:            # no longer running before anyone hears it ended
                self._running.remove(job)
            job._finish(*outcome)

    def _run(self, job: Job) -> tuple:
        """(state, result, error) of running the job on the backend."""
        try:
            result = self._backend(job.request, on_step=job._on_step, should_stop=job._stop.is_set,
                                   should_skip=job._take_skip,
                                   on_preview=job._on_preview if job.preview_every_s else None,
                                   save=job.save, preview_every_s=job.preview_every_s,
                                   waited_s=job.started_at - job.queued_at, owner=job.owner)
        except GenerationStopped as exc:
            return "stopped", None, exc
        except StudioError as exc:
            return "failed", None, exc
        except BaseException as exc:  # noqa: BLE001 - handed to the caller; the worker goes on
            log.exception("Generation failed")
            return "failed", None, exc
        return ("stopped" if result.stopped else "done"), result, None
