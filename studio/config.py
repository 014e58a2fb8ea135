"""Settings: what app.py parsed from its flags, in one dataclass passed down."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path

from studio.requests import Limits

ROOT = Path(__file__).resolve().parent.parent
EMBEDDED_MODEL = ROOT / "assets" / "embedded-model"
PRESETS_DIR = ROOT / "presets"
DEVICES = ("auto", "cuda", "mps", "cpu")
DTYPES = ("auto", "fp16", "bf16", "fp32")


@dataclass
class Settings:
    model: str = ""                     # "" = the embedded default model
    host: str = "127.0.0.1"
    port: int = 7860
    share: bool = False
    auth: list[tuple[str, str]] = field(default_factory=list)
    device: str = "auto"
    dtype: str = "auto"
    outputs: Path = ROOT / "outputs"
    presets: Path = PRESETS_DIR
    limits: Limits = field(default_factory=Limits)
    models_dir: Path = ROOT / "models"  # checkpoints/, loras/, vae/, embeddings/
    datasets: Path = ROOT / "datasets"  # the Train tab's pictures, one folder a dataset
    queue_size: int = 16                # generations waiting at most (the dispatcher's queue)
    content_filter: str = "auto"        # auto (on with --share) | on | off
    memory: str = "auto"                # studio/models/memory.py's MEMORY_MODES
    allow_pickle: bool = False          # load .ckpt (pickle) checkpoints
    prediction_type: str | None = None  # override for single files
    fast: str = "auto"                  # fast path: auto (CUDA) | on | off (studio/models/fast.py)
    compile: bool | None = None         # torch.compile the UNet and VAE decoder (None: with CUDA)
    compile_mode: str = "default"
    compile_cache: Path = ROOT / ".cache" / "compile"
    api: bool = True                    # AUTOMATIC1111's REST API at /sdapi/v1 (studio/api/)
    workers: str = "local"              # local (this process) | ray (Ray Serve replicas, studio/workers/)
    replicas: int = 1                   # Ray replicas: one per GPU (CPU replicas without one)
    ray_address: str = ""               # an existing Ray cluster ("" starts one on this machine)
    gpus_per_replica: float = 1.0       # fractional shares one GPU (0.5: two replicas on a card)
    worker_threads: int = 0             # torch threads per CPU replica (0: the cores but one / replicas)


def _auth_pair(text: str) -> tuple[str, str]:
    user, sep, password = text.strip().partition(":")
    if not sep or not user or not password:
        raise argparse.ArgumentTypeError(f"expected user:password, got {text!r}")
    return user, password


def read_auth_file(path: str | Path) -> list[tuple[str, str]]:
    """One user:password a line; blank lines and # comments are skipped."""
    pairs = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            pairs.append(_auth_pair(line))
        except argparse.ArgumentTypeError as exc:
            raise argparse.ArgumentTypeError(f"{path}, line {n}: {exc}") from None
    if not pairs:
        raise argparse.ArgumentTypeError(f"{path}: no user:password lines")
    return pairs


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python app.py", description="Stable Diffusion studio")
    p.add_argument("--model", default=os.environ.get("STUDIO_MODEL", ""),
                   help="a diffusers folder or a hub id (default: the embedded model)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=int(os.environ.get("STUDIO_PORT", 7860)))
    p.add_argument("--share", action="store_true", help="create a public Gradio link")
    p.add_argument("--auth", type=_auth_pair, action="append", default=[], metavar="USER:PASSWORD",
                   help="require a login (repeatable)")
    p.add_argument("--auth-file", help="file with one user:password per line")
    p.add_argument("--models-dir", default=os.environ.get("STUDIO_MODELS", str(ROOT / "models")),
                   help="folder with checkpoints/, loras/, vae/ and embeddings/ (default models/)")
    p.add_argument("--allow-pickle", action="store_true",
                   help="allow .ckpt/.pt checkpoints and YOLO .pt detectors (pickles can run code: only for "
                        "files you trust)")
    p.add_argument("--prediction-type", choices=["epsilon", "v_prediction"],
                   help="for a single-file SD 2.x model: epsilon for the 512 base model "
                        "(default: v_prediction, as the 768-v model)")
    p.add_argument("--device", choices=DEVICES, default="auto")
    p.add_argument("--memory", default="auto", metavar="MODE",
                   help="where the weights live and which savers are on: low = attention slicing + VAE "
                        "slicing/tiling; fp8 = the UNet's or transformer's weights stored in fp8; cpu-text = "
                        "the text encoders on the CPU; fp8-cpu-text = both; offload / group / sequential = "
                        "CPU offload (CUDA); auto = chosen from free GPU memory")
    p.add_argument("--dtype", choices=DTYPES, default="auto")
    f = p.add_argument_group("speed (studio/models/fast.py; measure with python bench/speed.py)")
    f.add_argument("--fast", choices=["auto", "on", "off"], default="auto",
                   help="fast path: channels-last + torch.compile + text-embedding cache; auto = on CUDA")
    f.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile the UNet and VAE decoder (default: with CUDA when --fast is on)")
    f.add_argument("--compile-mode", default="default",
                   choices=["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"],
                   help="inductor mode (reduce-overhead uses CUDA graphs)")
    f.add_argument("--compile-cache", default=str(ROOT / ".cache" / "compile"),
                   help="folder for compiled kernels, reused after a restart")
    g = p.add_argument_group("limits for a shared studio (per request, per user)")
    g.add_argument("--max-side", type=int, default=2048, help="largest width or height (default 2048)")
    g.add_argument("--max-steps", type=int, default=150, help="most denoising steps (default 150)")
    g.add_argument("--max-batch", type=int, default=8, help="largest batch size (default 8)")
    g.add_argument("--max-batch-count", type=int, default=16, help="most batches a request (default 16)")
    g.add_argument("--jobs-per-minute", type=int, default=0,
                   help="jobs a user may start a minute (login name, else browser session; 0 = no limit)")
    g.add_argument("--max-body-mb", type=int, default=32,
                   help="largest REST body or upload in MB, refused before it is read (default 32)")
    g.add_argument("--queue-size", type=int, default=16,
                   help="generations waiting at most; more get 'the queue is full' (default 16)")
    g.add_argument("--content-filter", choices=["auto", "on", "off"], default="auto",
                   help="prompt blocklist (presets/blocklist.txt) and, with its weights in "
                        "models/safety-checker, the image safety checker; auto = on with --share")
    p.add_argument("--no-api", dest="api", action="store_false",
                   help="do not serve AUTOMATIC1111's REST API at /sdapi/v1 (served by default, with "
                        "the same logins as the UI)")
    w = p.add_argument_group("workers (studio/workers/; needs pip install -e '.[ray]')")
    w.add_argument("--workers", choices=["local", "ray"], default="local",
                   help="local: generate in this process (default); ray: on Ray Serve replicas")
    w.add_argument("--replicas", type=int, default=1, help="Ray replicas, one per GPU (default 1)")
    w.add_argument("--ray-address", default="",
                   help="join an existing Ray cluster (e.g. ray://head:10001 or auto); default: start one here")
    w.add_argument("--gpus-per-replica", type=float, default=1.0,
                   help="GPU share of a replica; 0.5 puts two on one card (default 1)")
    w.add_argument("--worker-threads", type=int, default=0,
                   help="torch threads per CPU replica (default: the cores but one, divided among the replicas)")
    p.add_argument("--outputs", default=str(ROOT / "outputs"), help="folder for generated images")
    p.add_argument("--datasets", default=str(ROOT / "datasets"),
                   help="folder of training datasets, one folder each (the Train tab; default datasets/)")
    p.add_argument("--presets", default=str(PRESETS_DIR), help=argparse.SUPPRESS)
    return p


def _limits(p: argparse.ArgumentParser, args) -> Limits:
    for name in ("max_side", "max_steps", "max_batch", "max_batch_count", "queue_size", "max_body_mb"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.max_side < 64 or args.max_side % 8:
        p.error("--max-side must be a multiple of 8, at least 64")
    if args.jobs_per_minute < 0:
        p.error("--jobs-per-minute must be 0 (no limit) or more")
    return Limits(max_side=args.max_side, max_pixels=args.max_side ** 2,
                  max_batch_size=args.max_batch, max_batch_count=args.max_batch_count,
                  max_steps=args.max_steps, jobs_per_minute=args.jobs_per_minute,
                  max_body_bytes=args.max_body_mb * 2**20)


def settings_from_args(argv: list[str] | None = None) -> Settings:
    p = parser()
    args = p.parse_args(argv)
    auth = list(args.auth)
    if args.auth_file:
        try:
            auth += read_auth_file(args.auth_file)
        except (OSError, argparse.ArgumentTypeError) as exc:
            p.error(f"--auth-file: {exc}")
    return Settings(model=args.model, host=args.host, port=args.port, share=args.share, auth=auth,
                    device=args.device, dtype=args.dtype, outputs=Path(args.outputs),
                    presets=Path(args.presets), allow_pickle=args.allow_pickle,
                    models_dir=Path(args.models_dir), datasets=Path(args.datasets), memory=args.memory, queue_size=args.queue_size,
                    content_filter=args.content_filter,
                    limits=_limits(p, args),
                    prediction_type=args.prediction_type, fast=args.fast, compile=args.compile,
                    compile_mode=args.compile_mode, compile_cache=Path(args.compile_cache), api=args.api,
                    **_workers(p, args))


def _workers(p: argparse.ArgumentParser, args) -> dict:
    if args.replicas < 1:
        p.error("--replicas must be at least 1")
    if not 0 < args.gpus_per_replica <= 1:
        p.error("--gpus-per-replica must be more than 0 and at most 1")
    if args.worker_threads < 0:
        p.error("--worker-threads must be 0 (automatic) or more")
    if args.workers == "local" and (args.replicas != 1 or args.ray_address):
        p.error("--replicas and --ray-address need --workers ray")
    return dict(workers=args.workers, replicas=args.replicas, ray_address=args.ray_address,
                gpus_per_replica=args.gpus_per_replica, worker_threads=args.worker_threads)
