"""Shared fixtures: tiny real diffusers models written in code, and a real studio server.

Everything runs offline (HF_HUB_OFFLINE=1) on the CPU."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

ROOT = Path(__file__).resolve().parent.parent
MAX_WORKERS = 4     # test processes at most (pyproject.toml runs `-n auto --dist loadfile`)


def pytest_xdist_auto_num_workers(config) -> int:
    """A test process a core, at most MAX_WORKERS: on 2 cores the suite takes ~11 minutes in two
    processes against ~19 in one (servers starting, Ray, the browser and compilation wait on
    different things)."""
    return max(1, min(os.cpu_count() or 1, MAX_WORKERS))


if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    # Each process gets its share of the cores as torch threads: oversubscribed threads slowed
    # tiny pictures 100x on this kind of machine. Set before anything imports torch.
    _threads = str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, _threads)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    from studio.models.tiny import write_tiny_model
    return write_tiny_model(tmp_path_factory.mktemp("models") / "tiny-sd")


@pytest.fixture(scope="session")
def tiny_inpaint_model(tmp_path_factory) -> Path:
    from studio.models.tiny import write_tiny_model
    return write_tiny_model(tmp_path_factory.mktemp("models") / "tiny-sd-inpainting", inpainting=True)


@pytest.fixture(scope="session")
def studio(tiny_model, tmp_path_factory):
    """A Studio over the tiny model, shared by the engine tests (loads once)."""
    from studio.config import Settings
    from studio.serving.studio import Studio
    settings = Settings(model=str(tiny_model), outputs=tmp_path_factory.mktemp("outputs"))
    return Studio.from_settings(settings)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, url: str, outputs: Path, process: subprocess.Popen, log: Path):
        self.url, self.outputs, self.process, self.log = url, outputs, process, log


def start_server(model: Path | None, outputs: Path, log: Path, *extra: str, timeout: float = 90) -> Server:
    """`python app.py` on `model` (None: no --model, the embedded default), offline."""
    port = free_port()
    # each server its own upload folder: Gradio names an upload by its content's hash, so two servers in
    # /tmp/gradio receiving the same canvas at once could read one half-written by the other (CI saw
    # "cannot identify image file .../image.webp" in the inpainting stroke test)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1",
               GRADIO_TEMP_DIR=str(log.parent / f"gradio-uploads-{port}"))
    cmd = [sys.executable, str(ROOT / "app.py"), *(["--model", str(model)] if model else []),
           "--port", str(port), "--outputs", str(outputs), *extra]
    handle = open(log, "w")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return Server(url, outputs, proc, log)
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"server did not start in {timeout}s:\n{log.read_text()}")


def stop_server(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(10)
    except subprocess.TimeoutExpired:
        server.process.kill()


@pytest.fixture(scope="session")
def server(tiny_model, tmp_path_factory):
    """`python app.py` on the tiny model, as a user would start it."""
    base = tmp_path_factory.mktemp("server")
    srv = start_server(tiny_model, base / "outputs", base / "server.log")
    yield srv
    stop_server(srv)


@pytest.fixture(scope="session")
def control_server(tiny_model, tmp_path_factory):
    """`python app.py` on the tiny model with a ControlNet made for it (`shapes`) in its models folder."""
    from tests.ldm_layout import write_controlnet_for
    base = tmp_path_factory.mktemp("control-server")
    write_controlnet_for(tiny_model, base / "models")
    srv = start_server(tiny_model, base / "outputs", base / "server.log", "--models-dir", str(base / "models"))
    yield srv
    stop_server(srv)
