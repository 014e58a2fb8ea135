"""The dispatcher's Ray backend: start or join Ray, deploy the workers, send each job to one.

`ray_workers()` is what app.py hands `Studio.from_settings` for `--workers ray`: a `RayBackend`
(a `Backend`, studio/serving/backend.py) with one slot per replica. The UI process keeps the
queue (fair order, lanes, Stop) and hands a job to Ray only when a replica is free. Pictures are
saved here, by the UI process, from the data the replica streams back, each as soon as it arrives
(a replica that dies later loses none of them).
"""

from __future__ import annotations

import atexit
import logging
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from studio import errors
from studio.config import Settings
from studio.requests import GeneratedImage, GenerationRequest, GenerationResult
from studio.serving.backend import InProcess

log = logging.getLogger(__name__)
APP = "studio-workers"
OBJECT_STORE_BYTES = 256 * 2**20      # pictures are small; Ray's default takes 30% of the memory


class WorkerLost(errors.StudioError):
    """The replica running a job died, and the job could not run again."""


def ray_workers(*, local_testing: bool = False):
    """The backend factory for `Studio.from_settings`: the studio's jobs on Ray Serve replicas
    (Ray started or joined first; `local_testing`: Serve's in-process testing mode, no Ray)."""
    def start(local: InProcess, settings: Settings) -> "RayBackend":
        try:
            if not local_testing:
                start_ray(settings)
            return RayBackend.deploy(local, settings, local_testing=local_testing)
        except errors.StudioError:
            raise
        except Exception as exc:  # noqa: BLE001 - said at start-up, in one line
            raise errors.StudioError(f"the Ray workers did not start: {type(exc).__name__}: {exc}") from exc
    return start


def start_ray(settings: Settings) -> None:
    """Join the cluster at --ray-address, or start one on this machine (stopped at exit)."""
    if settings.ray_address:
        use_token_if_at_hand()
    try:
        import ray
    except ImportError:
        raise errors.StudioError("--workers ray needs Ray: pip install -e '.[ray]'") from None
    if ray.is_initialized():
        return
    if settings.ray_address:
        ray.init(address=settings.ray_address, log_to_driver=False)
        atexit.register(leave_ray)
    else:
        # "local": a Ray of its own even where `ray start` left a cluster's address behind (joining
        # one is --ray-address's job, and a plain ray.init() would join it)
        ray.init(address="local", include_dashboard=False, object_store_memory=OBJECT_STORE_BYTES,
                 log_to_driver=False)
        atexit.register(stop_ray)


def use_token_if_at_hand() -> None:
    """Ray (2.59 on) starts a cluster with `ray start` under token authentication when a token is
    at hand, but a program joining it sends the token only when told to: RAY_AUTH_MODE=token, set
    here by the rule `ray start` itself follows (the mode unset, a token in RAY_AUTH_TOKEN,
    RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token). Without it, joining fails with "InvalidAuthToken"."""
    if "RAY_AUTH_MODE" in os.environ:
        return
    if (os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
            or (Path.home() / ".ray" / "auth_token").is_file()):
        os.environ["RAY_AUTH_MODE"] = "token"


def stop_ray() -> None:
    import ray
    from ray import serve
    try:
        serve.shutdown()
    finally:
        ray.shutdown()


def leave_ray() -> None:
    """The studio leaves a cluster it joined: its workers go, the cluster and its other
    applications stay."""
    import ray
    from ray import serve
    try:
        serve.delete(APP)
    finally:
        ray.shutdown()


def replica_options(settings: Settings, cluster_gpus: float) -> dict:
    """One GPU (or the share asked for) a replica where the cluster has GPUs; else a CPU replica
    with its part of this machine's cores as torch threads, one core left to the UI process and
    Ray's daemons (on 2 cores, one replica at 2 threads took 1.03 s a picture, at 1 thread 0.40 s:
    bench/workers.py, docs/performance.md)."""
    gpus = settings.gpus_per_replica if cluster_gpus else 0
    threads = settings.worker_threads or max(1, ((os.cpu_count() or 1) - 1) // settings.replicas)
    return {"num_replicas": settings.replicas, "ray_actor_options": {"num_cpus": 0, "num_gpus": gpus},
            "threads": threads}


@dataclass
class Attempt:
    """What one run of a job on a replica has brought back so far."""
    worker: dict = field(default_factory=dict)
    sent_at: float = field(default_factory=time.monotonic)
    started_at: float | None = None
    pictures: list[GeneratedImage] = field(default_factory=list)
    end: tuple | None = None


class RayBackend:
    """A `Backend` on Ray Serve: a slot per replica. `local` is this process's parts: the model
    the UI picked and the memory mode go with every job, and pictures are saved in its outputs."""

    def __init__(self, local: InProcess, handle, signals, replicas: int) -> None:
        self.local, self.handle, self.signals, self.replicas = local, handle, signals, replicas
        self.slots = replicas
        self.active: dict[str, dict] = {}       # job id -> the worker running it (who is busy now)

    @classmethod
    def deploy(cls, local: InProcess, settings: Settings, *, local_testing: bool = False) -> "RayBackend":
        import ray
        from ray import serve

        from studio.workers.replica import GenerationWorker, Signals
        gpus = 0.0 if local_testing else ray.cluster_resources().get("GPU", 0.0)
        options = replica_options(settings, gpus)
        threads = options.pop("threads")
        app = GenerationWorker.options(**options).bind(settings, Signals.bind(), threads)
        handle = serve.run(app, name=APP, route_prefix=None, _local_testing_mode=local_testing)
        log.info("Ray Serve: %d generation worker(s) ready (%s)", settings.replicas, options["ray_actor_options"])
        return cls(local, handle, handle.signals_handle.remote().result(), settings.replicas)

    # -- the Backend --------------------------------------------------------------------------------
    def run(self, request: GenerationRequest, on_step=None, should_stop=None, on_preview=None,
            should_skip=None, save: bool = True, preview_every_s: float = 0.0,
            waited_s: float = 0.0, owner: str | None = None) -> GenerationResult:
        hooks = dict(on_step=on_step, should_stop=should_stop, should_skip=should_skip, on_preview=on_preview,
                     save=save, preview_every_s=preview_every_s if on_preview else 0.0, waited_s=waited_s,
                     owner=owner)
        first = self._attempt(request, **hooks)
        if first.end is not None:
            return self._result(request, first)
        if first.pictures:                   # saved already: running it again would draw them twice
            return self._result(request, first, note=f"The worker stopped after {len(first.pictures)} "
                                "picture(s); they are saved. Generate again for the rest.")
        if should_stop is not None and should_stop():     # Stop was pressed: nothing to run again
            raise errors.GenerationStopped("Stopped; its worker had stopped too.")
        log.warning("Worker %s died during a job; running it again on another", first.worker.get("worker"))
        second = self._attempt(request, **hooks)
        if second.end is None:
            raise WorkerLost("The worker running this generation stopped twice; try again in a moment.")
        return self._result(request, second, note="Its first worker stopped; it ran again on another.")

    def describe(self) -> str:
        """For the model banner: where generations run."""
        return (f"on {self.replicas} Ray worker{'s' if self.replicas != 1 else ''} "
                f"({len(self.active)} busy), memory: {self.local.manager.memory}")

    def warm_up(self) -> None:
        """Nothing to warm here: each replica loaded its model when it started."""

    def explain(self, request: GenerationRequest) -> dict:
        try:
            return self.handle.explain.remote(request, *self._studio_state()).result()
        except Exception as exc:  # noqa: BLE001 - a RayTaskError wraps the worker's own error
            cause = getattr(exc, "cause", None)
            if isinstance(cause, errors.StudioError):
                raise _error(type(cause).__name__, str(cause)) from None
            raise errors.StudioError(f"The workers could not explain the prompt: {type(exc).__name__}") from exc

    def _studio_state(self) -> tuple[str, str]:
        """What a request does not say but the UI chose for the whole studio: the model picked
        (for a request that names none) and the memory mode. Sent with every job, so every
        replica follows a switch."""
        return self.local.picker.current(), self.local.manager.memory

    # -- one run on a replica ----------------------------------------------------------------------
    def _attempt(self, request, *, on_step, should_stop, should_skip, on_preview, save, preview_every_s,
                 waited_s, owner) -> Attempt:
        """Send the job, follow its stream; `end` stays None when the replica died."""
        from ray.exceptions import ActorUnavailableError, RayActorError

        job, got = uuid.uuid4().hex, Attempt()
        stream = self.handle.options(stream=True).generate.remote(job, request, *self._studio_state(),
                                                                  preview_every_s)
        pressed_stop = False
        try:
            for event in stream:
                if should_stop is not None and should_stop() and not pressed_stop:
                    self.signals.stop.remote(job)
                    pressed_stop = True
                if should_skip is not None and should_skip():
                    self.signals.skip.remote(job)
                self._take(event, got, on_step, on_preview, save, waited_s, owner)
                if event[0] == "started":
                    self.active[job] = got.worker
                if got.end is not None:
                    break
        except (RayActorError, ActorUnavailableError):
            log.warning("Lost the worker of job %s", job, exc_info=True)
        finally:
            self.active.pop(job, None)
            self.signals.forget.remote(job)
        return got

    def _take(self, event: tuple, got: Attempt, on_step, on_preview, save: bool, waited_s: float,
              owner: str | None) -> None:
        kind = event[0]
        if kind == "started":
            got.worker, got.started_at = event[1], time.monotonic()
        elif kind == "placed":
            got.worker = {**got.worker, **event[1]}
        elif kind == "progress" and on_step is not None:
            on_step(event[1], event[2])
        elif kind == "preview" and on_preview is not None:
            on_preview(lambda picture=event[1]: picture)
        elif kind == "picture":
            got.pictures.append(self._keep(event, got, save, waited_s, owner))
        elif kind == "error":
            raise _error(event[1], event[2])
        elif kind == "done":
            got.end = event

    def _keep(self, event: tuple, got: Attempt, save: bool, waited_s: float, owner: str | None) -> GeneratedImage:
        """A finished picture: saved now in its owner's space (unless the caller holds it), with its
        provenance."""
        _, image, parameters, data, seed, kind = event
        data = {**data, "provenance": provenance(got, waited_s)}
        path = self.local.outputs.space(owner).save(image, parameters, data, seed=seed, kind=kind) if save else None
        return GeneratedImage(path=path, image=image, seed=seed, parameters=parameters, data=data)

    def _result(self, request: GenerationRequest, got: Attempt, note: str = "") -> GenerationResult:
        pictures = got.pictures
        if got.end is None:
            return GenerationResult(request=request, images=pictures, seed=pictures[0].seed, stopped=True,
                                    notes=[note])
        _, seed, stopped, notes, latents = got.end
        for picture, kept in zip(pictures, latents):
            picture.latents = kept
        return GenerationResult(request=request, images=pictures, seed=seed, stopped=stopped,
                                notes=[*notes, *([note] if note else [])])


def provenance(got: Attempt, waited_s: float) -> dict[str, Any]:
    """Where and when a picture was made: kept apart from the parameters that reproduce it."""
    ray_wait = (got.started_at or got.sent_at) - got.sent_at
    return {**got.worker, "queue_wait_s": round(waited_s + ray_wait, 4),
            "worked_s": round(time.monotonic() - (got.started_at or got.sent_at), 4)}


def _error(name: str, message: str) -> Exception:
    """The replica's error as the same StudioError class here (the UI shows its message); a
    StudioError of another module as a StudioError; "" (not a StudioError) as a RuntimeError."""
    if not name:
        return RuntimeError(message)
    cls = getattr(errors, name, None)
    return cls(message) if isinstance(cls, type) and issubclass(cls, errors.StudioError) else errors.StudioError(message)
