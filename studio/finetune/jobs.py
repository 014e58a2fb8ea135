"""Training jobs as the web server sees them: start one as its own process, list a user's, stop,
resume; no torch. The process (`python -m studio.finetune --job FOLDER`, the command line's own
entry) writes to its job folder; the server only reads it, so a page reload or a server restart
loses nothing and the tab re-attaches. One job trains at a time (one device); a job belongs to
the login that started it and only that login stops or resumes it (without logins every visitor
is the same user, "local").
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from studio.config import ROOT
from studio.errors import InvalidRequest
from studio.finetune.dataset import blocking, dataset_folder, preflight, read_dataset
from studio.finetune.folder import STATES_RUNNING, JobFolder
from studio.finetune.settings import TrainSettings
from studio.outputs.folder import space_name

LOCAL = "local"


def lora_name(name: str, owner: str) -> str:
    """A trained LoRA's name in models/loras: a login's in a folder of its own (no login can
    overwrite another's file; every login may use it, the owner's name on it)."""
    return name if owner == LOCAL else f"{space_name(owner)}/{name}"


def create_job(root: Path, settings: TrainSettings, *, owner: str, models_dir: Path, datasets: Path,
               device: str = "auto") -> JobFolder:
    """A new job folder for `settings` (checked against its dataset first)."""
    problems = blocking(preflight(read_dataset(datasets / settings.dataset, settings.trigger, settings.repeats)))
    if problems:
        raise InvalidRequest("Fix the dataset first: " + " ".join(problems[:5]))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path, n = root / f"{settings.name}-{stamp}", 1
    while path.exists():
        n += 1
        path = root / f"{settings.name}-{stamp}-{n}"
    job = JobFolder(path)
    job.write_json("job.json", {"owner": owner, "created": time.time(), "models_dir": str(models_dir.resolve()),
                                "datasets": str(datasets.resolve()), "device": device, "name": settings.name})
    job.write_json("settings.json", settings.to_json())
    job.set_status(state="starting", step=0, total=0, message="starting")
    return job


def alive(pid: int | None) -> bool:
    """Whether `pid` is a running trainer (not a zombie, not another program that got the pid)."""
    if not pid:
        return False
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        try:
            os.kill(pid, 0)            # not Linux: a signal 0 says whether it exists
            return True
        except OSError:
            return False
    return status.split(")")[-1].split()[0] != "Z" and b"studio.finetune" in cmdline


@dataclass
class TrainingJobs:
    root: Path              # outputs/training
    models_dir: Path
    datasets: Path
    device: str = "auto"

    def __post_init__(self) -> None:
        self._children: dict[str, subprocess.Popen] = {}

    def datasets_of(self, owner: str) -> Path:
        """Where `owner`'s datasets are: the datasets folder, or a login's own folder in it (the
        studio's logins each have their own; without logins everyone is "local")."""
        return self.datasets if owner == LOCAL else self.datasets / space_name(owner)

    @classmethod
    def from_settings(cls, settings) -> "TrainingJobs":
        """The studio's jobs: under outputs/training, datasets and LoRAs in the folders --datasets
        and --models-dir name."""
        return cls(Path(settings.outputs) / "training", Path(settings.models_dir), Path(settings.datasets),
                   settings.device)

    # -- reading ---------------------------------------------------------------------------------
    def folder(self, job_id: str) -> JobFolder:
        job = JobFolder(self.root / str(job_id))
        if not str(job_id) or "/" in str(job_id) or str(job_id).startswith(".") or not job.file("job.json").is_file():
            raise InvalidRequest(f"No training job {job_id!r}.")
        return job

    def status(self, job_id: str, owner: str | None = None) -> dict:
        """The job's status; a job whose process ended without saying so is "interrupted". With
        `owner` (a caller's view), only that user's job is shown."""
        job = self.folder(job_id) if owner is None else self.owned(job_id, owner)
        self._reap()
        status = job.status()
        if status.get("state") in STATES_RUNNING and not alive(status.get("pid")) and job.id not in self._children:
            status = {**status, "state": "interrupted",
                      "message": f"The training process ended at step {status.get('step', 0)} without finishing "
                                 "(see log.txt in the job folder); Resume continues from the last checkpoint."}
        return status

    def jobs(self, owner: str) -> list[str]:
        """The owner's jobs, newest first."""
        if not self.root.is_dir():
            return []
        mine = [p for p in self.root.iterdir() if JobFolder(p).job().get("owner") == owner]
        return [p.name for p in sorted(mine, key=lambda p: JobFolder(p).job().get("created", 0), reverse=True)]

    def last_like(self, settings: TrainSettings) -> dict | None:
        """The status of the latest run like `settings` on this machine (the same model, batch,
        resolution, text encoder trained or not, prior preservation or not, gradient checkpointing
        or not) that made steps: its `s_per_step` and `peak_mb`; None before any."""
        def like(s: dict) -> tuple:
            return (s.get("model"), s.get("batch"), s.get("resolution"), (s.get("text_encoder_lr") or 0) > 0,
                    (s.get("prior_weight") or 0) > 0, bool(s.get("gradient_checkpointing")))
        wanted, best = like(settings.to_json()), (0.0, None)
        for p in self.root.iterdir() if self.root.is_dir() else ():
            job = JobFolder(p)
            status = job.status() if job.job() else {}
            if status.get("s_per_step") and like(job.settings_json()) == wanted:
                best = max(best, (status.get("updated", 0.0), status), key=lambda b: b[0])
        return best[1]

    def running(self) -> str | None:
        if not self.root.is_dir():
            return None
        for p in self.root.iterdir():
            if p.is_dir() and JobFolder(p).job() and self.status(p.name).get("state") in STATES_RUNNING:
                return p.name
        return None

    # -- acting ---------------------------------------------------------------------------------
    def start(self, settings: TrainSettings, owner: str) -> str:
        self._one_at_a_time()
        dataset_folder(self.datasets_of(owner), settings.dataset)        # a name, inside the datasets folder
        job = create_job(self.root, settings, owner=owner, models_dir=self.models_dir, datasets=self.datasets_of(owner),
                         device=self.device)
        self._spawn(job)
        return job.id

    def resume(self, job_id: str, owner: str) -> str:
        job = self.owned(job_id, owner)
        state = self.status(job_id).get("state")
        if state in STATES_RUNNING:
            raise InvalidRequest(f"{job_id} is still running.")
        if state == "done":
            raise InvalidRequest(f"{job_id} has finished; its LoRA is in models/loras.")
        self._one_at_a_time()
        job.set_status(state="starting", message="resuming")
        self._spawn(job)
        return job.id

    def stop(self, job_id: str, owner: str) -> None:
        """Ask the trainer to save a checkpoint and exit (it checks before every step)."""
        job = self.owned(job_id, owner)
        if self.status(job_id).get("state") not in STATES_RUNNING:
            raise InvalidRequest(f"{job_id} is not running.")
        job.request_stop()

    def owned(self, job_id: str, owner: str) -> JobFolder:
        """One of `owner`'s jobs; another's is answered as one that is not there (the same words:
        a guessed id confirms nothing)."""
        try:
            job = self.folder(job_id)
        except InvalidRequest:
            job = None
        if job is None or job.job().get("owner") != owner:
            raise InvalidRequest(f"No training job {str(job_id)[:80]!r}.")
        return job

    def _one_at_a_time(self) -> None:
        busy = self.running()
        if busy:
            raise InvalidRequest(f"A training job is running ({busy}); one trains at a time on this machine. "
                                 "Wait for it or stop it.")

    def _spawn(self, job: JobFolder) -> None:
        env = dict(os.environ)
        threads = str(max(1, (os.cpu_count() or 2) - 1))      # leave a core to the server
        env.setdefault("STUDIO_TRAIN_THREADS", threads)
        env.setdefault("OMP_NUM_THREADS", env["STUDIO_TRAIN_THREADS"])
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
        with open(job.file("log.txt"), "ab") as log:
            child = subprocess.Popen([sys.executable, "-m", "studio.finetune", "--job", str(job.path)],
                                     stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                     cwd=str(ROOT), start_new_session=True)
        self._children[job.id] = child
        job.set_status(pid=child.pid)

    def _reap(self) -> None:
        for job_id, child in list(self._children.items()):
            if child.poll() is not None:
                del self._children[job_id]
