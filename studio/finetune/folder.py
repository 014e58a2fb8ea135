"""A training job's folder: the only thing the trainer process and the web server share.

    job.json       who started it, when, on which model and folders (written once)
    settings.json  the checked TrainSettings
    status.json    state, step/total, loss, seconds a step, ETA, message (replaced atomically)
    loss.jsonl     one {"step", "loss"} a line
    samples/       step_NNNNN_K.png with samples.jsonl (step, prompt, seed, file)
    checkpoints/   step_NNNNN.safetensors: the LoRA at that step, in the final file's layout
    state.pt       the latest checkpoint's full state (weights, optimiser, RNG, step): Resume
    stop           written by Stop; the trainer saves and exits
    log.txt        the process's output
No torch here: the UI reads the folder without importing it.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

STATES_RUNNING = ("starting", "running", "sampling", "saving")


class JobFolder:
    def __init__(self, path: Path):
        self.path = Path(path)

    @property
    def id(self) -> str:
        return self.path.name

    def file(self, name: str) -> Path:
        return self.path / name

    # -- written once --------------------------------------------------------------------------
    def job(self) -> dict[str, Any]:
        return self._read("job.json") or {}

    def settings_json(self) -> dict[str, Any]:
        return self._read("settings.json") or {}

    def write_json(self, name: str, data: dict) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        tmp = self.path / f".{name}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
        os.replace(tmp, self.path / name)

    # -- status --------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        return self._read("status.json") or {"state": "starting", "step": 0, "total": 0}

    def set_status(self, **changes) -> dict[str, Any]:
        status = {**self.status(), **changes, "updated": time.time()}
        self.write_json("status.json", status)
        return status

    # -- the loss curve ------------------------------------------------------------------------
    def append_loss(self, step: int, loss: float) -> None:
        with open(self.file("loss.jsonl"), "a", encoding="utf-8") as f:
            f.write(json.dumps({"step": step, "loss": round(loss, 6)}) + "\n")

    def losses(self) -> list[tuple[int, float]]:
        path = self.file("loss.jsonl")
        if not path.exists():
            return []
        out = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
                out.append((int(row["step"]), float(row["loss"])))
            except (ValueError, KeyError, TypeError):
                continue               # a line cut by a crash
        return out

    def keep_losses_until(self, step: int) -> None:
        """On resume: forget the losses of steps after the checkpoint (they are made again)."""
        kept = [json.dumps({"step": s, "loss": v}) for s, v in self.losses() if s <= step]
        tmp = self.file(".loss.tmp")
        tmp.write_text("".join(k + "\n" for k in kept), encoding="utf-8")
        os.replace(tmp, self.file("loss.jsonl"))

    # -- samples and checkpoints -----------------------------------------------------------------
    def samples(self) -> list[dict[str, Any]]:
        path = self.path / "samples" / "samples.jsonl"
        if not path.exists():
            return []
        rows = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue
        return [r for r in rows if (self.path / "samples" / r.get("file", "")).is_file()]

    def add_sample(self, row: dict[str, Any]) -> None:
        (self.path / "samples").mkdir(parents=True, exist_ok=True)
        with open(self.path / "samples" / "samples.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")

    def checkpoints(self) -> list[Path]:
        return sorted((self.path / "checkpoints").glob("step_*.safetensors"))

    # -- stop ----------------------------------------------------------------------------------
    def request_stop(self) -> None:
        self.file("stop").write_text("stop\n", encoding="utf-8")

    def stop_requested(self) -> bool:
        return self.file("stop").exists()

    def clear_stop(self) -> None:
        self.file("stop").unlink(missing_ok=True)

    def _read(self, name: str) -> dict[str, Any] | None:
        try:
            return json.loads(self.file(name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
