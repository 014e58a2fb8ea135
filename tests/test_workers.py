"""Generations on Ray Serve replicas (studio/workers/): the dispatcher's contract against every
backend (in-process, Ray's local testing mode, a real Ray cluster whose one logical GPU two
replicas share at 0.5 each), then what only a real cluster has: two replicas serving, one killed
mid-job, the app started with --workers ray. CPU replicas throughout; torch sees no CUDA behind
the logical GPU."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from studio.config import Settings
from studio.errors import QueueFull
from studio.outputs.metadata import read_metadata
from studio.serving.dispatcher import Dispatcher
from studio.serving.studio import Studio
from tests.conftest import free_port, start_server, stop_server
from tests.ldm_layout import tiny_pipeline, write_kohya_lora, write_single_file, write_vae_file

if os.environ.get("STUDIO_REQUIRE_RAY") != "1":
    pytest.importorskip("ray", reason="Ray is an optional extra: pip install -e '.[ray]'")
import ray  # noqa: E402  (CI sets STUDIO_REQUIRE_RAY: there a missing Ray fails, it does not skip)
from ray import serve  # noqa: E402

BACKENDS = ("in-process", "ray-local", "ray")


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    """A models folder with an SD1 checkpoint, a LoRA and a VAE: the replicas read the same one."""
    import torch
    root = tmp_path_factory.mktemp("models")
    for kind in ("checkpoints", "loras", "vae"):
        (root / kind).mkdir()
    sd1 = tiny_pipeline("sd1")
    write_single_file(sd1, "sd1", root / "checkpoints" / "sd1.safetensors")
    write_kohya_lora(sd1, root / "loras" / "ink.safetensors", seed=1)
    write_vae_file(sd1.vae, root / "vae" / "warm.safetensors")
    return Settings(model="", models_dir=root, outputs=tmp_path_factory.mktemp("outputs"),
                    worker_threads=torch.get_num_threads())      # the same threads: the same bits


def _studio(settings: Settings, name: str, local_testing: bool = False, **changes) -> Studio:
    from studio.workers.backend import ray_workers
    settings = replace(settings, outputs=settings.outputs / name, **changes)
    studio = Studio.from_settings(settings, backend=ray_workers(local_testing=local_testing)
                                  if settings.workers == "ray" else None)
    studio.select_model("sd1.safetensors")          # the UI's pick: it must reach the replicas
    return studio


@pytest.fixture(scope="module")
def reference(settings):
    return _studio(settings, "reference")


@pytest.fixture(scope="module")
def cluster(settings):
    """A real Ray with one logical GPU that two replicas share (--gpus-per-replica 0.5): what
gets placed is a replica's share of a GPU, as on one real card."""
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, object_store_memory=256 * 2**20,
             log_to_driver=False)
    studio = _studio(settings, "ray", workers="ray", replicas=2, gpus_per_replica=0.5)
    yield studio
    serve.shutdown()
    ray.shutdown()


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request, settings):
    if request.param == "in-process":
        yield _studio(settings, "in-process")
    elif request.param == "ray-local":
        yield _studio(settings, "ray-local", local_testing=True, workers="ray")
    else:
        yield request.getfixturevalue("cluster")


def _request(studio: Studio, **kw):
    return studio.make_request("txt2img", **{"prompt": "a red circle", "seed": 5, "steps": 4, "width": 64,
                                             "height": 64, **kw})


def _pixels(picture) -> np.ndarray:
    return np.asarray(picture.image)


# ------------------------------------------------------------------------------ the contract

def test_same_picture_bits_and_metadata_as_in_process(backend, reference):
    """The UI's model pick, a LoRA and a VAE by name, two pictures a batch: the same bits and the
    same record; Ray's pictures carry their provenance apart, in the saved file too."""
    req = _request(backend, loras=[["ink.safetensors", 0.8]], vae="warm.safetensors", batch_size=2)
    got = backend.submit(req, user="ann").result(timeout=120)
    want = reference.local.run(req)
    assert len(got.images) == len(want.images) == 2
    for g, w in zip(got.images, want.images):
        assert np.array_equal(_pixels(g), _pixels(w))
        assert g.parameters == w.parameters
        assert {k: v for k, v in g.data.items() if k != "provenance"} == w.data
        parameters, data = read_metadata(g.path)
        assert parameters == g.parameters and data == json.loads(json.dumps(g.data))
    assert got.images[0].data["model"]["name"] == want.images[0].data["model"]["name"]
    if backend.backend is not backend.local:
        where = got.images[0].data["provenance"]
        assert where["model"] == "sd1.safetensors" and where["device"] == "cpu" and where["pid"] > 0
        assert where["queue_wait_s"] >= 0 and where["host"]
        assert not backend.local.manager.loaded, "the UI process must not load the weights"


def test_same_seed_same_picture_a_random_seed_is_reported_and_live_pictures_are_held(backend):
    first = backend.submit(_request(backend, seed=-1), user="ann").result(timeout=120)
    again = backend.submit(_request(backend, seed=first.seed), user="ann").result(timeout=120)
    assert first.seed >= 0 and again.seed == first.seed
    assert np.array_equal(_pixels(first.images[0]), _pixels(again.images[0]))
    live = backend.live(_request(backend, seed=first.seed), user="ann", session="s-live")
    assert live.images[0].path is None and np.array_equal(_pixels(live.images[0]), _pixels(first.images[0]))
    kept = backend.keep(live.images[0])
    assert read_metadata(kept)[0] == first.images[0].parameters


def test_the_memory_mode_reaches_the_workers(backend, reference):
    backend.local.manager.set_memory("low")
    try:
        got = backend.submit(_request(backend), user="ann").result(timeout=120)
    finally:
        backend.local.manager.set_memory("none")
    if backend.backend is not backend.local:
        assert got.images[0].data["provenance"]["memory"] == "low"
    after = backend.submit(_request(backend), user="ann").result(timeout=120)
    assert np.array_equal(_pixels(after.images[0]), _pixels(reference.local.run(_request(reference)).images[0]))


def test_an_upscale_runs_where_the_generations_run_and_is_saved_here(backend, reference):
    """Extras' upscale is a job like a generation: on a replica when Ray serves, the picture
    streamed back and saved by this process as NNNNN-upscale.png, the same bits as in-process."""
    from PIL import Image
    from studio.upscale.extras import read_settings, upscale_picture
    source = Image.fromarray(np.random.default_rng(3).integers(0, 256, (24, 32, 3), dtype=np.uint8))
    got = upscale_picture(backend, source, read_settings(backend, "Lanczos", 2), user="ann")
    want = upscale_picture(reference, source, read_settings(reference, "Lanczos", 2), user="ann")
    assert got.path.name.endswith("-upscale.png") and np.array_equal(np.asarray(got.image), np.asarray(want.image))
    assert got.parameters == want.parameters
    if backend.backend is not backend.local:
        assert read_metadata(got.path)[1]["provenance"]["worker"]


def test_stop_mid_run_and_skip_a_batch(backend):
    job = backend.submit(_request(backend, steps=150, batch_count=3), user="ann", session="s1")
    for update in job.updates():
        if update.kind == "progress" and update.done == 2:
            job.stop()
    stopped = job.result(timeout=120)
    assert stopped.stopped and stopped.images == []
    job = backend.submit(_request(backend, steps=40, batch_count=2), user="ann", session="s1")
    skipped = False
    for update in job.updates():
        if update.kind == "progress" and not skipped:
            job.skip()
            skipped = True
    result = job.result(timeout=120)
    assert not result.stopped and len(result.images) == 1      # the first batch skipped, the second drawn


def test_a_job_waits_in_the_dispatcher_until_a_worker_is_free_in_fair_order_and_the_queue_fills(backend):
    """The dispatcher decides the order: Ray gets a job only when a slot is free, so while every
    slot is busy the rest wait here, where a newcomer is put ahead of a backlog."""
    slots = backend.dispatcher.slots
    d = Dispatcher(backend.dispatcher._backend, max_queued=4, slots=slots)
    long = _request(backend, steps=150)
    running = [d.submit(long, user="ann") for _ in range(slots)]
    deadline = time.time() + 60
    while any(j.state != "running" for j in running) and time.time() < deadline:
        time.sleep(0.05)
    waiting = [d.submit(long, user="ann") for _ in range(2)]
    with pytest.raises(QueueFull, match="the most one user may queue"):
        d.submit(long, user="ann")
    bob = d.submit(long, user="bob")
    cy = d.submit(long, user="cy")
    try:
        assert [j.user for j in d.order()] == ["bob", "cy", "ann", "ann"]   # newcomers first
        with pytest.raises(QueueFull, match="Queue is full"):
            d.submit(long, user="dee")
        if backend.backend is not backend.local:
            assert len(backend.backend.active) <= slots
    finally:
        for job in running + waiting + [bob, cy]:
            job.stop()
        for job in running + waiting + [bob, cy]:
            job.result(timeout=120)


# ------------------------------------------------------------------------------ a real cluster

def test_both_replicas_serve_and_the_ui_process_explains_through_them(cluster):
    jobs = [cluster.submit(_request(cluster, steps=20, seed=i), user=f"user{i}") for i in range(4)]
    workers = {j.result(timeout=120).images[0].data["provenance"]["worker"] for j in jobs}
    assert len(workers) == 2
    assert ray.cluster_resources()["GPU"] == 1 and ray.available_resources().get("GPU", 0) == 0, \
        "both replicas hold half of the one GPU"
    explained = cluster.explain_prompt(_request(cluster, prompt="a red circle, (blue:1.3)"))
    assert explained and not cluster.local.manager.loaded
    from studio.ui.model_bar import model_banner
    assert "on 2 Ray workers" in model_banner(cluster)


def _kill_when(cluster, job, ready) -> dict:
    """SIGKILL the replica running `job` once `ready()`; returns who it was."""
    for update in job.updates():
        if update.kind == "progress" and ready():
            (who,) = cluster.backend.active.values()
            os.kill(who["pid"], signal.SIGKILL)
            return who
    raise AssertionError("the job ended before the replica could be killed")


def _both_running(timeout: float = 90) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        states = serve.status().applications["studio-workers"].deployments["GenerationWorker"].replica_states
        if states.get("RUNNING") == 2 and len(states) == 1:
            return
        time.sleep(0.5)
    raise AssertionError(f"the killed replica was not replaced: {states}")


def test_a_replica_killed_before_any_picture_runs_the_job_again_on_another(cluster):
    job = cluster.submit(_request(cluster, steps=40, seed=9), user="ann")
    killed = _kill_when(cluster, job, lambda: True)
    result = job.result(timeout=120)
    assert len(result.images) == 1 and result.images[0].path.is_file()
    assert result.images[0].data["provenance"]["pid"] != killed["pid"]
    assert "ran again on another" in " ".join(result.notes)
    _both_running()


def test_a_replica_killed_after_a_picture_keeps_what_was_saved(cluster):
    before = set(cluster.local.outputs.root.rglob("*.png"))
    job = cluster.submit(_request(cluster, steps=60, seed=21, batch_count=4), user="ann")
    _kill_when(cluster, job, lambda: len(set(cluster.local.outputs.root.rglob("*-21.png")) - before) >= 1)
    result = job.result(timeout=120)
    assert 1 <= len(result.images) < 4 and result.stopped
    assert all(p.path.is_file() for p in result.images)
    assert "they are saved" in " ".join(result.notes)
    _both_running()


def test_the_app_with_ray_workers_from_the_rest_api(tmp_path):
    """python app.py --workers ray --replicas 2 starts its own Ray and serves the REST API from its
    replicas; the picture is saved by the UI process with its provenance."""
    server = start_server(None, tmp_path / "outputs", tmp_path / "server.log", "--workers", "ray",
                          "--replicas", "2", timeout=180)
    try:
        body = json.dumps({"prompt": "a red circle", "steps": 3, "seed": 4, "width": 64, "height": 64}).encode()
        call = urllib.request.Request(server.url + "sdapi/v1/txt2img", body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(call, timeout=120) as r:
            answer = json.load(r)
        assert len(answer["images"]) == 1 and json.loads(answer["info"])["seed"] == 4
        (saved,) = (tmp_path / "outputs").rglob("*-4.png")
        assert read_metadata(saved)[1]["provenance"]["device"] == "cpu"
    finally:
        stop_server(server)


def test_a_replica_asks_for_a_whole_gpu_its_share_or_none_on_a_cpu_cluster():
    from studio.workers.backend import replica_options
    base = Settings(workers="ray", replicas=2, worker_threads=0)
    whole = replica_options(base, cluster_gpus=4)
    half = replica_options(replace(base, gpus_per_replica=0.5), cluster_gpus=1)
    cpu = replica_options(replace(base, gpus_per_replica=0.5), cluster_gpus=0)
    assert [o["ray_actor_options"]["num_gpus"] for o in (whole, half, cpu)] == [1, 0.5, 0]
    assert whole["num_replicas"] == 2 and cpu["threads"] == max(1, ((os.cpu_count() or 1) - 1) // 2)


def test_the_app_joins_an_existing_cluster_and_leaves_it_running(tmp_path, monkeypatch):
    """`ray start --head` first (token authentication, one logical GPU), then `python app.py
    --workers ray --replicas 2 --gpus-per-replica 0.5 --ray-address HOST:PORT`: the studio joins
    with the token, its replicas answer the REST API, and stopping the studio (SIGTERM) takes them
    off the cluster and leaves the cluster up. The head keeps its address file in its own temp
    folder, so no other test's plain ray.init() joins it."""
    port, temp = free_port(), Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))   # short: socket paths
    # the cluster's token as an operator hands it out; the studio (started below with this
    # environment) must send it, and so must `ray status`
    monkeypatch.setenv("RAY_AUTH_TOKEN", uuid.uuid4().hex)
    authenticated = dict(os.environ, RAY_AUTH_MODE="token")
    head = subprocess.Popen([str(Path(sys.executable).parent / "ray"), "start", "--head", "--block",
                             f"--port={port}", "--num-cpus=2", "--num-gpus=1", "--include-dashboard=false",
                             "--disable-usage-stats", f"--temp-dir={temp}"],
                            stdout=open(tmp_path / "head.log", "w"), stderr=subprocess.STDOUT, start_new_session=True,
                            env=authenticated)
    try:
        address = f"127.0.0.1:{port}"
        server = start_server(None, tmp_path / "outputs", tmp_path / "server.log", "--workers", "ray",
                              "--replicas", "2", "--gpus-per-replica", "0.5", "--ray-address", address,
                              timeout=180)
        try:
            body = json.dumps({"prompt": "a red circle", "steps": 3, "seed": 8, "width": 64, "height": 64})
            call = urllib.request.Request(server.url + "sdapi/v1/txt2img", body.encode(),
                                          {"Content-Type": "application/json"})
            with urllib.request.urlopen(call, timeout=120) as r:
                assert json.loads(json.load(r)["info"])["seed"] == 8
            (saved,) = (tmp_path / "outputs").rglob("*-8.png")
            assert read_metadata(saved)[1]["provenance"]["device"] == "cpu"
        finally:
            stop_server(server)
        assert head.poll() is None, "the studio stopped the cluster it joined"
        deadline, usage = time.time() + 60, ""
        while "0.0/1.0 GPU" not in usage and time.time() < deadline:     # the replicas' halves come back
            time.sleep(1)
            done = subprocess.run([str(Path(sys.executable).parent / "ray"), "status", f"--address={address}"],
                                  capture_output=True, text=True, timeout=60, env=authenticated)
            usage = done.stdout + done.stderr
        assert "0.0/1.0 GPU" in usage, f"the studio's workers stayed on the cluster:\n{usage}"
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
        shutil.rmtree(temp, ignore_errors=True)
