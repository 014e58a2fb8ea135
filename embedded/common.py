"""Shared by the training stages: atomic checkpoints, resume log, interruption hook (tests),
learning-rate schedule, EMA and the progress bar."""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import time
from pathlib import Path

import torch

from .config import TrainConfig


# ---------------------------------------------------------------------------------------------
# Checkpoints: one file per stage, written atomically

def _save(path: Path, state: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _load(path: Path):
    return torch.load(path, map_location="cpu", weights_only=False) if path.exists() else None


def weights_fingerprint(*modules: torch.nn.Module) -> str:
    """A hash of the modules' weights: what a stage started from, kept in its checkpoint."""
    h = hashlib.sha1()
    for m in modules:
        for name, t in m.state_dict().items():
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def check_start(path: Path, state: dict, start: str) -> None:
    """Refuse to resume (or reuse) a stage's checkpoint that began from other weights than the
    run now hands it: the stages before it changed (a layout restart added, another UNet), so
    it is stale. Checkpoints written before this check have no fingerprint and are trusted."""
    if state and state.get("start", start) != start:
        raise SystemExit(f"{path} was trained from other weights than this run's earlier stages give "
                         f"it (the recipe before it changed): move it away or use another --work")


def _ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    with torch.no_grad():
        for e, p in zip(ema.parameters(), model.parameters()):
            e.lerp_(p, 1 - decay)


def machine_name() -> str:
    """What the training records say it ran on: the CPU's model name (Linux: /proc/cpuinfo, where
    `platform.processor()` is empty), its core count and the vector instructions torch uses,
    since a stage's time depends on them (`bf16_native`)."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        isa = torch.backends.cpu.get_cpu_capability()
    except (AttributeError, RuntimeError):
        isa = ""
    return " ".join(part for part in (platform.machine(), cpu, f"{os.cpu_count()} cores", isa) if part)


def _lr_at(step: int, cfg: TrainConfig, total: int, base: float, schedule: str = "cosine") -> float:
    """Linear warm-up over `cfg.warmup` steps, then `base` ("constant") or a cosine decay to a
    tenth of it at `total` ("cosine")."""
    if step < cfg.warmup:
        return base * (step + 1) / cfg.warmup
    if schedule == "constant":
        return base
    progress = (step - cfg.warmup) / max(1, total - cfg.warmup)
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def _stage_time(timings: dict, key: str, began: float, total: float | None) -> None:
    """Record stage `key`'s seconds: this invocation's, and (when it resumed a stage an earlier
    invocation had begun or finished) the rest of `total`, the stage's seconds over every
    invocation, so the timings add up to the whole run."""
    this = time.time() - began
    timings[f"{key}_s"] = this
    if total and total > this + 1:
        timings[f"{key}_s_earlier_invocation"] = total - this


RESUMED: list[str] = []


def log_resume(stage: str, step: int) -> None:
    RESUMED.append(f"{stage} from step {step}")
    print(f"Resuming {stage} from its checkpoint at step {step}", flush=True)


def _interrupt_hook(step: int) -> None:
    """STUDIO_TRAIN_INTERRUPT_AT=N raises KeyboardInterrupt after optimizer step N of a stage:
    how the tests prove that an interrupted run resumes (a real Ctrl-C lands in the same place)."""
    at = os.environ.get("STUDIO_TRAIN_INTERRUPT_AT")
    if at and step == int(at):
        raise KeyboardInterrupt(f"interrupted at step {step} (STUDIO_TRAIN_INTERRUPT_AT)")


def _bar(total: int, initial: int, desc: str):
    from tqdm.auto import tqdm
    return tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True, mininterval=2.0)


def averaged_steps(name: str, checkpoint: Path, key: str, net: torch.nn.Module, average: torch.nn.Module, opt,
                   gen: torch.Generator, cfg, step_fn, decay) -> tuple[int, float, list[float]]:
    """Run `step_fn(step) -> loss` (one optimizer step of `net`) until cfg.steps, or cfg.minutes of
    training in all; `average` follows `net` (decay(step)). Resumes exactly from `checkpoint` (the
    net under `key`, the average, the optimizer, `gen`'s state, the losses), written every
    cfg.checkpoint_every steps and at the end. Returns (steps, seconds, losses)."""
    def state(step: int, seconds: float) -> dict:
        return {key: net.state_dict(), "average": average.state_dict(), "opt": opt.state_dict(),
                "rng": gen.get_state(), "step": step, "seconds": seconds, "losses": losses}

    saved = _load(checkpoint) or {}
    step, seconds, losses = 0, 0.0, []
    if saved:
        log_resume(name, saved["step"])
        net.load_state_dict(saved[key])
        average.load_state_dict(saved["average"])
        opt.load_state_dict(saved["opt"])
        gen.set_state(saved["rng"])
        step, seconds, losses = saved["step"], saved["seconds"], saved["losses"]
    bar, began = _bar(cfg.steps, step, name), time.time()
    while step < cfg.steps and not (cfg.minutes and (seconds + time.time() - began) / 60 >= cfg.minutes):
        losses.append(round(step_fn(step), 6))
        _ema_update(average, net, decay(step))
        step += 1
        bar.update(1)
        if step % 25 == 0:
            bar.set_postfix(loss=f"{sum(losses[-25:]) / 25:.5f}")
        if step % cfg.checkpoint_every == 0:
            _save(checkpoint, state(step, seconds + time.time() - began))
        _interrupt_hook(step)
    bar.close()
    seconds += time.time() - began
    _save(checkpoint, state(step, seconds))
    return step, seconds, losses


def export_fp16(net: torch.nn.Module, out: Path, record_name: str, record: dict) -> Path:
    """A trained model (diffusers save_pretrained) in fp16 in `out`, its training record beside it;
    the model in memory stays fp32."""
    net.to(torch.float16).save_pretrained(out)
    net.to(torch.float32)
    (out / record_name).write_text(json.dumps(record, indent=2) + "\n")
    return out


def command_line(description: str, work: str, smoke_help: str):
    """The arguments the resumable trainings take (the student, the ControlNet), threads at most 2."""
    import argparse
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--model", type=Path, default=Path(__file__).resolve().parents[1] / "assets" / "embedded-model")
    p.add_argument("--work", type=Path, default=Path(work))
    p.add_argument("--steps", type=int)
    p.add_argument("--minutes", type=float)
    p.add_argument("--smoke", action="store_true", help=smoke_help)
    p.add_argument("--out", type=Path, help="export into this model folder (default: --model)")
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    return p


def configured(base, args):
    """A copy of a training config with --steps and --minutes applied."""
    import copy
    cfg = copy.copy(base)
    cfg.steps = args.steps or cfg.steps
    cfg.minutes = args.minutes if args.minutes is not None else cfg.minutes
    return cfg
