"""The training run: a LoRA on the model's UNet or transformer (and, when asked, its text
encoders and the new words' own vectors), in its own process, writing everything to the job folder
(studio/finetune/folder.py). SD 1.x, 2.x, SDXL and Flux.1: what differs between them is in tables
(text.py: how captions are read; objectives.py: what the denoiser learns and the file's layout).

Stages: load the model (the studio's ModelManager, as the server loads it) -> with prior
preservation, the model's own class pictures (prior.py) -> cache the pictures' latents and the
captions' text -> add PEFT LoRA layers to a copy of the denoiser (and the text encoders; the new
words' rows, words.py) -> steps (the family's objective; captions dropped at a rate; the class
pictures' loss weighted beside; AdamW; warm-up then cosine/linear/constant) -> every N steps a
checkpoint (the kohya file and the full state) and sample pictures -> an evaluation -> export to
models/loras/NAME.safetensors (textual inversion: models/embeddings/).

Resume restores the LoRA weights, the optimiser, the data order, the random generator and the
step, so N steps + resume + N steps equals 2N steps straight (tested). Sample pictures are
ordinary generation requests with the checkpoint's LoRA file, through a Studio in this process
(its dispatcher and engine, the same code the server runs), so they look as the LoRA will in
txt2img. A loss that is not finite stops the run with a message and writes no LoRA file.
"""

from __future__ import annotations

import copy
import math
import os
import time
from pathlib import Path

import torch

from studio.finetune import buckets, text as txt
from studio.finetune.dataset import read_dataset
from studio.finetune.export import TEXT_TARGETS, write_lora
from studio.finetune.folder import JobFolder
from studio.finetune.objectives import OBJECTIVES
from studio.finetune.prior import FOLDER as CLASS_FOLDER, ClassPicture, class_captions, class_pictures, new_words
from studio.finetune.results import draw, evaluation, export, lora_tensors, samples
from studio.finetune.run import Run, TrainingFailed
from studio.finetune.settings import TrainSettings, has_layers, sample_interval, total_steps
from studio.finetune.text import side_of
from studio.finetune.words import learn_words

SCHEDULES = {"constant": lambda p: 1.0, "cosine": lambda p: 0.5 * (1 + math.cos(math.pi * p)),
             "linear": lambda p: 1.0 - p}
SMOOTHING = 0.9           # the smoothed loss and the seconds a step: exponential moving averages


# -- stage 1: the model and the data ----------------------------------------------------------------

def sample_studio(job: JobFolder, settings: TrainSettings, device: str):
    """A Studio over the job's own models folder (where checkpoint LoRAs are put for samples)."""
    from studio.config import PRESETS_DIR
    from studio.models.library import ModelLibrary
    from studio.models.manager import ModelManager
    from studio.outputs.folder import HeldPictures
    from studio.prompts.presets import load_presets
    from studio.serving.studio import Studio

    (job.path / "models" / "loras").mkdir(parents=True, exist_ok=True)
    manager = ModelManager(settings.model, device=device, dtype="auto", fast="off")
    return Studio.over(manager=manager, outputs=HeldPictures(), presets=load_presets(PRESETS_DIR),
                  library=ModelLibrary(job.path / "models"), start_model=settings.model)


def prepare(job: JobFolder, settings: TrainSettings, datasets: Path, device: str) -> Run:
    dataset = read_dataset(datasets / settings.dataset, settings.trigger, settings.repeats)
    studio = sample_studio(job, settings, device)
    info = studio.model_info()
    check_family(info, settings)
    pipe = studio.local.manager.pipeline("txt2img")     # the weights trained are the ones the samples use
    run = Run(job, settings, dataset, studio, pipe, device, settings.resolution or info.native_size,
              total_steps(settings, dataset.with_repeats), side=side_of(info.family),
              objective=OBJECTIVES[info.arch](pipe))
    run.words = new_words([i.caption for i in dataset.items], settings.trigger, info.vocabulary)
    if settings.prior_weight > 0:
        run.prior = make_class_pictures(run, info)
    run.data = encode(run)
    return run


def check_family(info, settings: TrainSettings) -> None:
    """What this version trains for the model's family, said before anything is made."""
    if info.arch not in OBJECTIVES or info.own_modes or "Kontext" in info.family:
        raise TrainingFailed(f"Training LoRAs for {info.family} is not in this version of the studio "
                             "(SD 1.x, 2.x, SDXL and Flux.1 dev and schnell are).")
    if not OBJECTIVES[info.arch].text_trainable and (settings.text_encoder_lr or settings.embedding_lr):
        raise TrainingFailed(f"{info.family}: its text encoders are not trained here; set the text encoder's and "
                             "the new words' learning rates to 0.")
    size = settings.resolution or info.native_size
    if size % 16:
        raise TrainingFailed(f"Resolution {size}: a multiple of 16 px.")


def make_class_pictures(run: Run, info) -> list[ClassPicture]:
    """The model's own pictures of the dataset's captions without the new words (cached)."""
    s, captions, words = run.settings, [i.caption for i in run.dataset.items], run.words
    instead = class_words(s)
    wanted = class_captions(captions, words, s.class_pictures or len(run.dataset.items), instead)
    run.job.set_status(state="starting", message=f"making {len(wanted)} class pictures (the model without "
                                                  f"{', '.join(words) or 'the new words'})")

    return class_pictures(run.job.path / CLASS_FOLDER, wanted, s.seed, run.resolution, s.model,
                          lambda prompt, seed: draw(run, prompt, seed).image)


def class_words(settings: TrainSettings) -> list[str]:
    return [w.strip() for w in settings.class_words.split(",") if w.strip()]


def _picture(path: Path, size: tuple[int, int]) -> torch.Tensor:
    """A picture as a 3 x height x width tensor in [-1, 1]: scaled to cover (width, height), centre crop."""
    import numpy as np
    from PIL import Image, ImageOps

    with Image.open(path) as img:
        img = ImageOps.fit(img.convert("RGB"), size, Image.Resampling.LANCZOS)
    return torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 127.5 - 1


def picture_sizes(run: Run) -> list[tuple[int, int]]:
    """Each picture's (width, height): its aspect-ratio bucket (buckets.py), or the square."""
    from PIL import Image

    square = (run.resolution, run.resolution)
    if not run.settings.buckets:
        return [square] * len(run.dataset.items)
    options = buckets.sizes(run.resolution)
    out = []
    for item in run.dataset.items:
        with Image.open(item.path) as img:
            out.append(buckets.bucket_of(*img.size, options))
    return out


@torch.no_grad()
def encode(run: Run) -> dict:
    """Latents of every picture (and its mirror image with `flip`) and every caption's text
    (text.py: token ids, or, when no text encoder is trained, what the encoders make of them):
    made once, before step 1. The class pictures (prior preservation) and the empty caption
    (caption dropout) likewise."""
    run.sizes = picture_sizes(run)
    latents = []                    # per picture: variants x C x h x w (its bucket's size)
    for item, size in zip(run.dataset.items, run.sizes):
        picture = _picture(item.path, size)[None]
        latents.append(_latents(run, torch.cat([picture, picture.flip(-1)]) if run.settings.flip else picture))
    data = {"latents": latents, "text": _text(run, [i.caption for i in run.dataset.items])}
    square = (run.resolution, run.resolution)
    if run.prior:
        data["class_latents"] = _latents(run, torch.stack([_picture(c.path, square) for c in run.prior]))
        data["class_text"] = _text(run, [c.caption for c in run.prior])
    if run.settings.caption_dropout > 0:
        data["empty_text"] = _text(run, [""])
    return data


def _latents(run: Run, pictures: torch.Tensor) -> torch.Tensor:
    vae = run.pipe.vae
    return torch.cat([run.objective.latents(vae, pictures[i:i + 8].to(run.device, vae.dtype)).cpu()
                      for i in range(0, len(pictures), 8)])


def _text(run: Run, captions: list[str]) -> dict:
    return run.objective.text(run, captions, _text_encoder_trained(run))


# -- stage 2: the LoRA layers ---------------------------------------------------------------------------

def add_lora(run: Run) -> None:
    """PEFT LoRA layers on copies of the UNet (and text encoders) in fp32, and the new words'
    rows; the pipeline's own modules stay as they are (they make the samples, with the exported file)."""
    s = run.settings
    torch.manual_seed(s.seed)                 # PEFT's gaussian init of lora_A
    groups = _denoiser_layers(run) + _text_layers(run)
    if not groups:
        raise TrainingFailed("Learning the new words' vectors alone needs a new word: give a trigger word, or "
                             "a UNet learning rate to train a LoRA.")
    run.params = [p for g in groups for p in g["params"]]
    run.opt = optimizer_class(s.optimizer, run.device)(groups, weight_decay=1e-2)
    run.gen = torch.Generator().manual_seed(s.seed)


def optimizer_class(name: str, device: str):
    """torch's AdamW, or bitsandbytes' 8-bit AdamW (its states in a quarter of the memory) on a CUDA GPU."""
    if name == "adamw":
        return torch.optim.AdamW
    if not device.startswith("cuda"):
        raise TrainingFailed("The 8-bit optimiser (adamw8bit) runs on a CUDA GPU; on this machine use adamw.")
    try:
        import bitsandbytes
    except ImportError:
        raise TrainingFailed("The 8-bit optimiser needs bitsandbytes: pip install bitsandbytes "
                             "(or use adamw).") from None
    return bitsandbytes.optim.AdamW8bit


def _denoiser_layers(run: Run) -> list[dict]:
    """The UNet's or transformer's copy (frozen), with LoRA layers when its rate is set; their
    optimiser group."""
    from peft import LoraConfig

    s = run.settings
    run.denoiser = copy.deepcopy(getattr(run.pipe, run.objective.denoiser)).to(run.device, torch.float32)
    run.denoiser.requires_grad_(False)
    if s.gradient_checkpointing:            # activations made again in the backward pass: less memory, ~30% slower
        run.denoiser.enable_gradient_checkpointing()
    if not s.lr:
        return []
    run.denoiser.add_adapter(LoraConfig(r=s.rank, lora_alpha=s.alpha, init_lora_weights="gaussian",
                                        target_modules=run.objective.targets))
    return [{"params": [p for p in run.denoiser.parameters() if p.requires_grad], "lr": s.lr, "base": s.lr}]


def _text_layers(run: Run) -> list[dict]:
    """Copies of the text encoders with LoRA layers and/or the new words' rows (words.py) learned."""
    from peft import LoraConfig, inject_adapter_in_model

    s, groups = run.settings, []
    if not _text_encoder_trained(run):
        return groups
    run.text_encoders = [copy.deepcopy(getattr(run.pipe, n)).to(run.device, torch.float32).requires_grad_(False)
                         for n in run.side.encoders]
    for encoder, tokenizer, part in zip(run.text_encoders, run.side.tokenizers, run.side.bundle_parts):
        if s.text_encoder_lr > 0:
            # peft directly: transformers' own add_adapter wants a newer peft than diffusers does
            inject_adapter_in_model(LoraConfig(r=s.rank, lora_alpha=s.alpha, init_lora_weights="gaussian",
                                               target_modules=list(TEXT_TARGETS)), encoder)
            for name, p in encoder.named_parameters():
                p.requires_grad_("lora_" in name)
            groups.append({"params": [p for p in encoder.parameters() if p.requires_grad],
                           "lr": s.text_encoder_lr, "base": s.text_encoder_lr})
        if s.embedding_lr > 0:
            spans, rows = learn_words(encoder, getattr(run.pipe, tokenizer), run.words, class_words(s))
            run.learned.append((part, spans, rows))
            groups.append({"params": [rows.rows], "lr": s.embedding_lr, "base": s.embedding_lr, "weight_decay": 0.0})
    return groups


def _text_encoder_trained(run: Run) -> bool:
    """Its LoRA layers or the new words' vectors (pivotal tuning: when there are new words) are learned."""
    return run.settings.text_encoder_lr > 0 or (run.settings.embedding_lr > 0 and bool(run.words))


# -- stage 3: the steps ---------------------------------------------------------------------------------

def lr_factor(step: int, total: int, warmup: float, schedule: str) -> float:
    warm = round(warmup * total)
    if step < warm:
        return (step + 1) / warm
    return SCHEDULES[schedule]((step - warm) / max(1, total - warm))


def next_batch(run: Run) -> torch.Tensor:
    """The next batch of the epoch's (pictures of one size, repeats included); a new order each epoch."""
    if run.position >= len(run.order):
        groups: dict[tuple[int, int], list[int]] = {}
        for i, (item, size) in enumerate(zip(run.dataset.items, run.sizes)):
            groups.setdefault(size, []).extend([i] * item.repeats)
        run.order, run.position = buckets.epoch_batches(groups, run.settings.batch, run.gen), 0
    run.position += 1
    return torch.tensor(run.order[run.position - 1])


def loss_of(run: Run) -> torch.Tensor:
    """One step's loss: the batch's pictures (each caption dropped with `caption_dropout`), and
    with prior preservation as many class pictures beside them, their loss weighted by
    `prior_weight` (DreamBooth's prior-preservation loss); each picture's as the family learns
    (objectives.py)."""
    s, data = run.settings, run.data
    idx = next_batch(run)
    variant = torch.randint(len(data["latents"][0]), (len(idx),), generator=run.gen)
    x0 = torch.stack([data["latents"][i][v] for i, v in zip(idx.tolist(), variant.tolist())])
    text = txt.take(data["text"], idx)
    if s.caption_dropout > 0:
        dropped = torch.rand(len(idx), generator=run.gen) < s.caption_dropout
        text = txt.replace(text, dropped, data["empty_text"])
    loss = run.objective.per_sample(run, x0, txt.to(text, run.device)).mean()
    if run.prior:                   # the class pictures: the square, a batch of their own
        pick = torch.randint(len(run.prior), (len(idx),), generator=run.gen)
        kept = txt.to(txt.take(data["class_text"], pick), run.device)
        loss = loss + s.prior_weight * run.objective.per_sample(run, data["class_latents"][pick], kept).mean()
    return loss


def train_steps(run: Run) -> str:
    """Steps until the total, Stop, or a bad loss; returns the state the run ended in."""
    s, job = run.settings, run.job
    every, save_every = sample_interval(s, run.total), s.save_every or sample_interval(s, run.total)
    while run.step < run.total:
        if job.stop_requested():
            checkpoint(run)
            return "stopped"
        began = time.perf_counter()
        for group in run.opt.param_groups:
            group["lr"] = group["base"] * lr_factor(run.step, run.total, s.warmup, s.schedule)
        loss = loss_of(run)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise TrainingFailed(f"The loss became {value} at step {run.step + 1}: the LoRA is broken from here, "
                                 "so no file was written. Lower the learning rate (or alpha) and train again; "
                                 + ("the last good checkpoint is kept." if job.checkpoints() else ""))
        run.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(run.params, 1.0)
        run.opt.step()
        run.step += 1
        _account(run, value, time.perf_counter() - began)
        if run.step % save_every == 0 or run.step == run.total:
            checkpoint(run)
        if run.step % every == 0 or run.step == run.total:
            samples(run)
        if os.environ.get("STUDIO_TRAIN_STOP_AT") == str(run.step):
            job.request_stop()         # the tests' Stop at an exact step (a user's lands between steps too)
    return "done"


def _account(run: Run, loss: float, seconds: float) -> None:
    run.s_per_step = seconds if not run.s_per_step else SMOOTHING * run.s_per_step + (1 - SMOOTHING) * seconds
    run.smooth = loss if run.smooth is None else SMOOTHING * run.smooth + (1 - SMOOTHING) * loss
    run.job.append_loss(run.step, loss)
    if run.step % max(1, run.total // 10) == 0 or run.step == run.total:
        print(f"step {run.step}/{run.total}  loss {run.smooth:.5f}  {run.s_per_step:.3f} s a step  "
              f"about {run.s_per_step * (run.total - run.step):.0f} s left", flush=True)
    if run.step % 5 == 0 or run.step == run.total:
        peak, memory = peak_memory(run.device)
        run.job.set_status(state="running", step=run.step, total=run.total, loss=round(loss, 6),
                           smooth=round(run.smooth, 6), s_per_step=round(run.s_per_step, 4),
                           eta_s=round(run.s_per_step * (run.total - run.step), 1), peak_mb=round(peak), memory=memory)


def peak_memory(device: str) -> tuple[float, str]:
    """The run's peak so far in MB: GPU memory allocated by torch, or the process's resident RAM."""
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2 ** 20, "GPU memory"
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "RAM"


# -- checkpoints and resume ----------------------------------------------------------------------------

def checkpoint(run: Run) -> Path:
    """The LoRA at this step as a kohya file (kept: "use this one") and the full state (replaced)."""
    run.job.set_status(state="saving", step=run.step)
    path = run.job.path / "checkpoints" / f"step_{run.step:05d}.safetensors"
    write_lora(path, lora_tensors(run), {"ss_output_name": run.settings.name, "ss_steps": str(run.step)})
    state = {"weights": [p.detach().clone() for p in run.params], "opt": run.opt.state_dict(),
             "rng": run.gen.get_state(), "step": run.step, "order": run.order, "position": run.position,
             "s_per_step": run.s_per_step, "smooth": run.smooth}
    tmp = run.job.file(".state.tmp")
    torch.save(state, tmp)
    os.replace(tmp, run.job.file("state.pt"))
    run.job.set_status(state="running")
    return path


def resume(run: Run) -> bool:
    """Continue from state.pt when there is one; False for a fresh run."""
    path = run.job.file("state.pt")
    if not path.exists():
        return False
    state = torch.load(path, map_location="cpu", weights_only=False)
    with torch.no_grad():
        for p, saved in zip(run.params, state["weights"], strict=True):
            p.copy_(saved)
    run.opt.load_state_dict(state["opt"])
    run.gen.set_state(state["rng"])
    run.step, run.order, run.position = state["step"], state["order"], state["position"]
    run.s_per_step, run.smooth = state["s_per_step"], state["smooth"]
    run.job.keep_losses_until(run.step)
    return True


def train(job: JobFolder, models_dir: Path, datasets: Path, device: str = "auto") -> str:
    """Run (or resume) the job in this process; returns its final state."""
    settings = TrainSettings(**job.settings_json())
    device = _device(device)
    job.clear_stop()
    job.set_status(state="starting", message="loading the model and the pictures", pid=os.getpid())
    try:
        run = prepare(job, settings, datasets, device)
        add_lora(run)
        resumed = resume(run)
        job.set_status(state="running", step=run.step, total=run.total, resumed=resumed,
                       message=f"{len(run.dataset.items)} pictures, {run.dataset.with_repeats} with repeats")
        if not resumed:
            samples(run)
        state = train_steps(run)
    except TrainingFailed as exc:
        job.set_status(state="failed", message=str(exc))
        return "failed"
    if state == "stopped":
        job.clear_stop()
        job.set_status(state="stopped", message=f"Stopped at step {run.step}/{run.total}; Resume continues.")
        return state
    figures = evaluation(run) if settings.evaluate else None
    out = export(run, models_dir, run.studio.local.manager.model_hash(), figures)
    job.set_status(state="done", step=run.step, result=str(out), eta_s=0, evaluation=figures,
                   message=f"Saved {out.name} ({out.stat().st_size / 1024:.0f} KB) in models/{'loras' if has_layers(settings) else 'embeddings'}. "
                           + (figures["summary"] if figures else ""))
    return "done"


def _device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device
