"""Speed: the plain diffusers pipeline against the studio's own generation path, side by side.

    python bench/speed.py                       # CUDA: every case; otherwise the embedded model
    python bench/speed.py --cases sd15 sdxl     # pick cases (real sizes on a CPU take hours)
    python bench/speed.py --cases embedded --steps 4 --repeats 1    # a quick look

Cases: the embedded model on the CPU (64 px, 20 steps); SD1.5 at 512 px and SDXL at 1024 px,
30 steps; SD1.5 img2img (strength 0.75) and inpaint (centre mask) at 512 px. SD1.5 and SDXL use
random weights in the exact published configurations (bench/real_models.py): the cost is the
real one, the pictures are noise. Each (case, path) runs in a fresh process, so that "first image
after start" includes imports, loading and compilation and the peak memory is its own.

Paths: `plain` = diffusers as a user writes it (fp16 on CUDA, fp32 on CPU, default attention,
DPM++ 2M Karras, CFG on); `studio` = the request submitted to the dispatcher as every tab does
(its queue and worker thread, the PNG saved with its metadata), with the studio's defaults for the
device (the fast path is on with CUDA, studio/models/fast.py), twice on CUDA: with an empty compile
cache and again with it filled; `studio, no compile`; `studio + feature cache 3` (DeepCache, off
by default; its quality cost is the PSNR against the plain path's picture of the same seed).

Printed per path: denoising steps/s (batch 1, CFG), seconds per image end to end (text encoding,
every step, VAE decode; the studio's also saves the PNG with its metadata), time to the first
image after the process started, peak memory (CUDA: max allocated; CPU: the process's peak RSS),
speed-up against plain, model-FLOPs utilisation of the denoising loop (UNet FLOPs counted with
torch.utils.flop_counter, against a dense-matmul peak measured on the same device), and PSNR
against the plain picture. Asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
EMBEDDED = ROOT / "assets" / "embedded-model"
PROMPT = "a red circle on a blue background"
REAL_PROMPT = "a watercolour painting of a lighthouse on a cliff at dawn, soft light"

CASES = {   # name: (model, mode, size, steps, cfg, device)
    "embedded": ("embedded", "txt2img", 64, 20, 5.0, "cpu"),
    "sd15": ("sd15", "txt2img", 512, 30, 7.5, None),
    "sdxl": ("sdxl", "txt2img", 1024, 30, 7.5, None),
    "sd15-img2img": ("sd15", "img2img", 512, 30, 7.5, None),
    "sd15-inpaint": ("sd15", "inpaint", 512, 30, 7.5, None),
}


# ------------------------------------------------------------------------------ one measurement

def _inputs(mode: str, size: int):
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)) if mode != "txt2img" else None
    mask = None
    if mode == "inpaint":
        m = np.zeros((size, size), dtype=np.uint8)
        m[size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 255
        mask = Image.fromarray(m)
    return image, mask


def _sync(device: str) -> None:
    import torch
    if device == "cuda":
        torch.cuda.synchronize()


def _peak_flops(device: str, dtype) -> float:
    """Dense matmul FLOP/s measured here: the peak MFU is stated against."""
    import torch
    n = 8192 if device == "cuda" else 2048
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    _sync(device)
    reps = 20 if device == "cuda" else 5
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    _sync(device)
    return 2 * n ** 3 * reps / (time.perf_counter() - t)


def _count_flops(pipe, size: int, device: str) -> dict:
    """FLOPs of one UNet call with CFG (batch 2) and one VAE decode, by torch's flop counter."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    unet, vae = pipe.unet, pipe.vae
    dtype = unet.dtype
    lat = size // 8
    x = torch.randn(2, unet.config.in_channels, lat, lat, device=device, dtype=dtype)
    ctx = torch.randn(2, 77, unet.config.cross_attention_dim, device=device, dtype=dtype)
    extra = {}
    if unet.config.addition_embed_type == "text_time":
        extra["added_cond_kwargs"] = {"text_embeds": torch.randn(2, 1280, device=device, dtype=dtype),
                                      "time_ids": torch.randn(2, 6, device=device, dtype=dtype)}
    with torch.no_grad():
        with FlopCounterMode(display=False) as fc:
            unet(x, 500, encoder_hidden_states=ctx, **extra)
        unet_flops = fc.get_total_flops()
        with FlopCounterMode(display=False) as fc:
            vae.decode(torch.randn(1, 4, lat, lat, device=device, dtype=vae.dtype))
    return {"unet_call_cfg": unet_flops, "vae_decode": fc.get_total_flops()}


def child(case: str, path: str, steps: int | None, repeats: int, out: Path, cache_dir: str | None,
          feature_cache: int, compile_flag: bool | None, fast: str = "auto") -> dict:
    import torch
    model, mode, size, default_steps, cfg, device = CASES[case]
    steps = steps or default_steps
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.float16 if device == "cuda" else torch.float32
    folder = EMBEDDED if model == "embedded" else __import__("real_models").real_model(model)
    prompt = PROMPT if model == "embedded" else REAL_PROMPT
    image, mask = _inputs(mode, size)
    stamps: list[float] = []

    def stamp(i: int, total: int) -> None:
        if i in (0, total - 1):
            _sync(device)
        stamps.append(time.perf_counter())

    record: dict = {"case": case, "path": path, "device": device, "steps": steps}
    if path == "plain":
        from diffusers import (AutoPipelineForImage2Image, AutoPipelineForInpainting,
                               AutoPipelineForText2Image, DPMSolverMultistepScheduler)
        auto = {"txt2img": AutoPipelineForText2Image, "img2img": AutoPipelineForImage2Image,
                "inpaint": AutoPipelineForInpainting}[mode]
        pipe = auto.from_pretrained(folder, torch_dtype=dtype, local_files_only=True).to(device)
        pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config,
                                                                 use_karras_sigmas=True)
        pipe.set_progress_bar_config(disable=True)

        def run():
            kw = dict(height=size, width=size) if mode != "img2img" else {}
            if image is not None:
                kw.update(image=image, strength=0.75 if mode == "img2img" else 1.0)
            if mask is not None:
                kw["mask_image"] = mask
            def cb(p, i, t, kwargs):
                stamp(i, p.num_timesteps)
                return kwargs
            result = pipe(prompt, num_inference_steps=steps, guidance_scale=cfg,
                          generator=torch.Generator("cpu").manual_seed(0), callback_on_step_end=cb,
                          **kw).images[0]
            _sync(device)
            return result
    else:
        from studio.models.manager import ModelManager
        from studio.outputs.folder import OutputFolder
        from studio.config import PRESETS_DIR
        from studio.prompts.presets import load_presets
        from studio.requests import make_request
        from studio.serving.studio import Studio
        manager = ModelManager("" if model == "embedded" else str(folder), device=device,
                               fast=fast, compile=compile_flag,
                               compile_cache=Path(cache_dir) if cache_dir else None)
        studio = Studio.over(manager=manager, outputs=OutputFolder(out / f"outputs-{case}-{path}"),
                        presets=load_presets(PRESETS_DIR))
        fields = dict(prompt=prompt, steps=steps, cfg_scale=cfg, seed=0, width=size, height=size,
                      scheduler="DPM++ 2M Karras", feature_cache=feature_cache)
        if image is not None:
            fields.update(image=image, strength=0.75 if mode == "img2img" else 1.0)
        if mask is not None:
            fields.update(mask=mask, mask_blur=0)
        request = make_request(mode=mode, **fields)

        def run():     # the path every tab takes: the dispatcher's queue and worker thread
            job = studio.submit(request, user="bench")
            for update in job.updates():
                if update.kind == "progress":
                    stamp(update.done - 1, update.total)
            _sync(device)
            return job.result().images[0].image

    t0 = float(os.environ.get("BENCH_T0", time.time()))
    first = run()
    record["first_image_after_start_s"] = time.time() - t0
    per_image, per_step = [], []
    for _ in range(repeats):
        stamps.clear()
        t = time.perf_counter()
        last = run()
        per_image.append(time.perf_counter() - t)
        if len(stamps) > 1:
            per_step.append((len(stamps) - 1) / (stamps[-1] - stamps[0]))
    record["s_per_image"] = statistics.median(per_image) if per_image else None
    record["it_per_s"] = statistics.median(per_step) if per_step else None
    record["denoising_steps"] = len(stamps)
    if device == "cuda":
        record["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2 ** 30
    else:
        record["peak_memory_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
    (last if repeats else first).save(out / f"{case}-{path}.png")
    if path == "plain":
        record["flops"] = _count_flops(pipe, size, device)
        record["peak_flops"] = _peak_flops(device, dtype)
    else:
        # switching tabs, samplers and presets must never reload the weights
        from studio.generation.schedulers import build_scheduler
        from studio.samplers import SCHEDULERS
        loads = manager.loads
        t = time.perf_counter()
        for m in ("img2img", "inpaint", "txt2img"):
            if not manager.info().inpaint_only:
                manager.pipeline(m)
        record["switch_tab_ms"] = (time.perf_counter() - t) * 1000 / 3
        t = time.perf_counter()
        for name in SCHEDULERS:
            build_scheduler(name, manager.base().scheduler.config, seed=0)
        record["switch_sampler_ms"] = (time.perf_counter() - t) * 1000 / len(SCHEDULERS)
        t = time.perf_counter()
        studio.local.presets.resolve(prompt, "", ["bad hands"], None)
        record["switch_preset_ms"] = (time.perf_counter() - t) * 1000
        record["weights_reloaded"] = manager.loads - loads
        record["fast_path"] = manager.fast.describe()
    return record


# ------------------------------------------------------------------------------------- driver

def _variants(device: str, compiled: bool = True) -> list[tuple[str, dict]]:
    cold = tempfile.mkdtemp(prefix="studio-compile-")
    if device == "cuda":
        return [("plain", {}), ("studio", {"cache_dir": cold}), ("studio, warm cache", {"cache_dir": cold}),
                ("studio, no compile", {"compile": False}),
                ("studio + feature cache 3", {"feature_cache": 3, "compile": False})]
    extra = [("studio --fast on --compile", {"fast": "on", "compile": True, "cache_dir": cold}),
             ("  same, warm compile cache", {"fast": "on", "compile": True, "cache_dir": cold})]
    return [("plain", {}), ("studio", {}), ("studio --fast on", {"fast": "on"}),
            *(extra if compiled else []), ("studio + feature cache 3", {"feature_cache": 3})]


def _psnr(a: Path, b: Path) -> float | None:
    import numpy as np
    from PIL import Image
    if not (a.exists() and b.exists()):
        return None
    x = np.asarray(Image.open(a).convert("RGB"), dtype=np.float64)
    y = np.asarray(Image.open(b).convert("RGB"), dtype=np.float64)
    if x.shape != y.shape:
        return None
    mse = ((x - y) ** 2).mean()
    return float("inf") if mse == 0 else 10 * np.log10(255 ** 2 / mse)


def _fmt(v, spec: str, unit: str = "") -> str:
    return "-" if v is None else f"{v:{spec}}{unit}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", nargs="+", choices=list(CASES))
    p.add_argument("--steps", type=int, help="override every case's step count")
    p.add_argument("--repeats", type=int, default=3, help="timed runs after the first image")
    p.add_argument("--no-compile", action="store_true", help="leave out the compiled variants on the CPU")
    p.add_argument("--variants", nargs="+", metavar="LABEL", help="only these paths (labels as printed)")
    p.add_argument("--out", type=Path, help="folder for the pictures and JSON (default: a temp folder)")
    p.add_argument("--child", nargs=2, metavar=("CASE", "PATH"), help=argparse.SUPPRESS)
    p.add_argument("--cache-dir", help=argparse.SUPPRESS)
    p.add_argument("--feature-cache", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--compile", choices=["on", "off"], help=argparse.SUPPRESS)
    p.add_argument("--fast", choices=["auto", "on", "off"], default="auto", help=argparse.SUPPRESS)
    args = p.parse_args()
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path.insert(0, str(ROOT / "bench"))
    out = args.out or Path(tempfile.mkdtemp(prefix="studio-speed-"))
    out.mkdir(parents=True, exist_ok=True)
    if args.child:
        compile_flag = None if args.compile is None else args.compile == "on"
        rec = child(*args.child, args.steps, args.repeats, out, args.cache_dir, args.feature_cache,
                    compile_flag, args.fast)
        print("RESULT " + json.dumps(rec))
        return

    import torch
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    cases = args.cases or (list(CASES) if cuda else ["embedded"])
    print(f"device: {torch.cuda.get_device_name() if cuda else 'cpu'} · torch {torch.__version__} · "
          f"{os.cpu_count()} CPU cores · {time.strftime('%Y-%m-%d')}")
    print("SD1.5/SDXL cases: random weights in the exact published configs (real cost, noise pictures)\n")
    rows = []
    for case in cases:
        case_device = CASES[case][5] or device
        for label, opts in _variants(case_device, not args.no_compile):
            if args.variants and label.strip() not in args.variants:
                continue
            path = "plain" if label == "plain" else "studio"
            cmd = [sys.executable, str(Path(__file__).resolve()), "--child", case, path,
                   "--repeats", str(args.repeats), "--out", str(out)]
            if args.steps:
                cmd += ["--steps", str(args.steps)]
            if "cache_dir" in opts:
                cmd += ["--cache-dir", opts["cache_dir"]]
            if opts.get("feature_cache"):
                cmd += ["--feature-cache", str(opts["feature_cache"])]
            if "fast" in opts:
                cmd += ["--fast", opts["fast"]]
            if "compile" in opts:
                cmd += ["--compile", "on" if opts["compile"] else "off"]
            env = dict(os.environ, BENCH_T0=repr(time.time()))
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if line is None:
                print(f"{case} / {label}: FAILED (exit {proc.returncode})\n{proc.stderr[-2000:]}")
                continue
            rec = json.loads(line[7:])
            rec["label"] = label
            png = out / f"{case}-{path}.png"
            if path == "studio":        # the next studio variant writes the same name
                slug = "".join(c if c.isalnum() else "_" for c in label.strip())
                png = png.rename(out / f"{case}--{slug}.png")
            rec["png"] = str(png)
            rows.append(rec)
    _report(rows, out)


def _report(rows: list[dict], out: Path) -> None:
    head = (f"{'case':<14}{'path':<27}{'it/s':>8}{'s/image':>9}{'first image':>13}{'peak mem':>10}"
            f"{'speed-up':>10}{'MFU':>7}{'PSNR vs plain':>15}")
    print(head)
    print("-" * len(head))
    plain = {r["case"]: r for r in rows if r["path"] == "plain"}
    for r in rows:
        base = plain.get(r["case"])
        speedup = (r["it_per_s"] / base["it_per_s"]) if base and r.get("it_per_s") and base.get("it_per_s") else None
        mfu = None
        if base and r.get("it_per_s") and base.get("flops"):
            mfu = base["flops"]["unet_call_cfg"] * r["it_per_s"] / base["peak_flops"]
        psnr = _psnr(Path(base["png"]), Path(r["png"])) if base and r is not base else None
        print(f"{r['case']:<14}{r['label']:<27}{_fmt(r.get('it_per_s'), '.2f'):>8}"
              f"{_fmt(r.get('s_per_image'), '.3f'):>9}{_fmt(r.get('first_image_after_start_s'), '.1f', ' s'):>13}"
              f"{_fmt(r.get('peak_memory_gib'), '.2f', ' GiB'):>10}{_fmt(speedup, '.2f', 'x'):>10}"
              f"{_fmt(mfu * 100 if mfu is not None else None, '.1f', '%'):>7}"
              f"{_fmt(psnr, '.1f', ' dB'):>15}")
    print()
    for case, r in plain.items():
        f = r["flops"]
        print(f"{case}: UNet call with CFG {f['unet_call_cfg'] / 1e9:,.3f} GFLOP, VAE decode "
              f"{f['vae_decode'] / 1e9:,.3f} GFLOP; MFU peak = dense matmul measured on {r['device']}: "
              f"{r['peak_flops'] / 1e12:,.2f} TFLOP/s")
    for r in rows:
        if r["path"] == "studio" and "switch_tab_ms" in r:
            print(f"{r['case']} / {r['label']}: fast path {r['fast_path']}; switching tab "
                  f"{r['switch_tab_ms']:.1f} ms, sampler {r['switch_sampler_ms']:.1f} ms, preset "
                  f"{r['switch_preset_ms']:.2f} ms, weights reloaded {r['weights_reloaded']} time(s)")
    (out / "speed.json").write_text(json.dumps(rows, indent=2), encoding="utf-8")
    print(f"\npictures and speed.json in {out}")


if __name__ == "__main__":
    main()
