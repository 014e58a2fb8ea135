"""Serving many users: the same load in-process, on Ray with 1 replica (Ray's overhead) and on Ray
with 2 replicas (the scaling), through the studio's dispatcher as every caller uses it.

    python bench/workers.py [--clients 1 2 4] [--jobs 6] [--steps 10] [--configs ...]

For each configuration: Ray's start-up (ray.init, then the deployment with its models loaded) and
its memory (resident memory of Ray's daemons and of the replicas, apart); then K closed-loop
clients (one user each) x M jobs of the embedded model at 64 px: throughput, p50/p95 latency split
into waiting (the dispatcher's queue and Ray's router) and working (on the worker), jobs per
replica; then a skewed load, one user sending 10x the others' jobs at once: Jain's fairness index
over who was served in the first round of jobs, through the dispatcher's fair queue beside the
same submissions in arrival order (first in, first out: what Ray's router or one global lock
alone would do). In-process runs in this process with --threads torch threads; a replica gets
the same threads when alone and half of them each when there are two, or the studio's default
(the cores but one, shared: what `--workers ray` does). Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from studio.config import Settings  # noqa: E402

QUEUE = 100      # room for the skewed load's burst (one user may hold half the places)
# replicas, share of --threads (None: the studio's default for CPU replicas, the cores but one)
CONFIGS = {"in-process": (0, 1.0), "ray x1": (1, 1.0), "ray x1, default threads": (1, None), "ray x2": (2, 0.5)}


@dataclass
class Done:
    user: str
    waited_s: float
    total_s: float
    worker: str
    finished_at: float


def make_studio(config: str, threads: int, outputs: Path, model: str = ""):
    """The studio of one configuration, and what starting it cost. With GPUs in the cluster the
    replicas share them evenly (2 replicas on 1 GPU: half each)."""
    import torch

    from studio.serving.studio import Studio
    replicas, share = CONFIGS[config]
    torch.set_num_threads(threads)
    cost: dict = {}
    if not replicas:
        return Studio.from_settings(Settings(model=model, outputs=outputs, queue_size=QUEUE)), cost
    import ray
    began = time.perf_counter()
    ray.init(include_dashboard=False, object_store_memory=256 * 2**20, log_to_driver=False)
    cost["ray_init_s"] = time.perf_counter() - began
    gpus = ray.cluster_resources().get("GPU", 0.0)
    began = time.perf_counter()
    from studio.workers.backend import ray_workers
    studio = Studio.from_settings(Settings(
        model=model, outputs=outputs, queue_size=QUEUE, workers="ray", replicas=replicas,
        gpus_per_replica=min(1.0, gpus / replicas) if gpus else 1.0,
        worker_threads=0 if share is None else max(1, int(threads * share))), backend=ray_workers())
    cost["deploy_s"] = time.perf_counter() - began
    return studio, cost


def one_job(studio, user: str, seed: int, steps: int, fifo: bool = False, size: int = 64) -> Done:
    request = studio.make_request("txt2img", prompt="a red circle on a blue background", seed=seed,
                                  steps=steps, width=size, height=size)
    began = time.perf_counter()
    job = studio.submit(request, user="everyone" if fifo else user)
    result = job.result()
    total = time.perf_counter() - began
    where = result.images[0].data.get("provenance", {})
    waited = where.get("queue_wait_s", job.started_at - job.queued_at)
    return Done(user, waited, total, where.get("worker", "in-process"), time.perf_counter())


def closed_loop(studio, clients: int, jobs: int, steps: int, size: int = 64) -> dict:
    done: list[Done] = []
    lock = threading.Lock()

    def client(i: int) -> None:
        for j in range(jobs):
            d = one_job(studio, f"user{i}", 1000 * i + j, steps, size=size)
            with lock:
                done.append(d)

    began = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - began
    return {"throughput": len(done) / wall, "total": _pct([d.total_s for d in done]),
            "waiting": _pct([d.waited_s for d in done]), "working": _pct([d.total_s - d.waited_s for d in done]),
            "per_worker": sorted(Counter(d.worker for d in done).values(), reverse=True)}


def skewed(studio, steps: int, light_jobs: int = 3, light_users: int = 3, fifo: bool = False) -> float:
    """One user queues 10x the others' jobs, first; Jain's index over each user's share of the
    first round (light_jobs per user: what a fair queue serves first)."""
    users = {"heavy": 10 * light_jobs, **{f"light{i}": light_jobs for i in range(light_users)}}
    done: list[Done] = []
    lock = threading.Lock()

    def submit_all(user: str, n: int, offset: int) -> None:
        for j in range(n):
            threading.Thread(target=lambda s=offset + j: _keep(done, lock, one_job(studio, user, s, steps, fifo))).start()
            time.sleep(0.002)           # in order: the heavy user's burst lands first

    for k, (user, n) in enumerate(users.items()):
        submit_all(user, n, 10_000 * k)
    while len(done) < sum(users.values()):
        time.sleep(0.05)
    first = sorted(done, key=lambda d: d.finished_at)[: light_jobs * len(users)]
    served = [sum(d.user == u for d in first) for u in users]
    return sum(served) ** 2 / (len(served) * sum(x * x for x in served))


def _keep(done: list, lock, d: Done) -> None:
    with lock:
        done.append(d)


def ray_memory_mb() -> dict:
    """Resident memory of the processes Ray started under this one: replicas apart from daemons."""
    import psutil
    daemons = replicas = 0
    for child in psutil.Process().children(recursive=True):
        try:
            title = " ".join(child.cmdline())
            rss = child.memory_info().rss
        except psutil.Error:
            continue
        if "GenerationWorker" in title:
            replicas += rss
        else:
            daemons += rss
    return {"ray_daemons_mb": daemons / 2**20, "replicas_mb": replicas / 2**20}


def _pct(values: list[float]) -> tuple[float, float]:
    values = sorted(values)
    return statistics.median(values), values[min(len(values) - 1, int(0.95 * len(values)))]


def measure(config: str, threads: int, clients: list[int], jobs: int, steps: int, model: str = "",
            size: int = 64, fairness: bool = True) -> dict:
    """One configuration's figures: start-up and memory (Ray), each client count, fairness."""
    studio, cost = make_studio(config, threads, Path(tempfile.mkdtemp(prefix="bench-workers-")), model)
    try:
        closed_loop(studio, 2, 2, steps, size)          # warm-up: each worker's first pictures
        out = {"start": {**cost, **(ray_memory_mb() if cost else {})}}
        out["clients"] = {k: closed_loop(studio, k, jobs, steps, size) for k in clients}
        if fairness:
            out["jain"] = {"fair": skewed(studio, steps), "fifo": skewed(studio, steps, fifo=True)}
        return out
    finally:
        if config != "in-process":
            from studio.workers.backend import stop_ray
            stop_ray()


def show(r: dict, jobs: int) -> None:
    cost = r["start"]
    if cost:
        print(f"  start-up: ray.init {cost['ray_init_s']:.1f} s, deployment with models loaded "
              f"{cost['deploy_s']:.1f} s; memory: Ray's daemons {cost['ray_daemons_mb']:.0f} MB, "
              f"replicas {cost['replicas_mb']:.0f} MB")
    for k, c in r["clients"].items():
        print(f"  {k} client(s) x {jobs}: {c['throughput']:5.2f} pictures/s; latency p50/p95 "
              f"{c['total'][0]:.2f}/{c['total'][1]:.2f} s = waiting {c['waiting'][0]:.2f}/{c['waiting'][1]:.2f}"
              f" + working {c['working'][0]:.2f}/{c['working'][1]:.2f}; jobs per worker {c['per_worker']}")
    if "jain" in r:
        print(f"  skewed load (one user 10x): Jain's fairness index {r['jain']['fair']:.2f} with the fair queue, "
              f"{r['jain']['fifo']:.2f} first-in-first-out (1 = equal shares, 0.25 = one user of four served)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--jobs", type=int, default=6, help="jobs per client")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--threads", type=int, default=2, help="torch threads in all (in-process, or split)")
    p.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    args = p.parse_args()
    print(f"embedded model, 64 px, {args.steps} steps, {args.threads} torch threads in all")
    for config in args.configs:
        print(config)
        show(measure(config, args.threads, args.clients, args.jobs, args.steps), args.jobs)


if __name__ == "__main__":
    main()
