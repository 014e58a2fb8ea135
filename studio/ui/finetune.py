"""The Train tab, where a LoRA is fine-tuned (API: `/train`, `/train_status`, `/train_stop`, `/train_resume`): pictures with
captions in a dataset folder, a preset or one's own settings with the one total of steps shown,
then a LoRA trained in its own process (studio/finetune/); the tab polls the job's folder, so a
reload or a server restart re-attaches. The finished LoRA is in models/loras; "Try it" puts its
tag and trigger in the text-to-image prompt."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import gradio as gr

from studio.errors import StudioError
from studio.finetune import dataset as ds
from studio.finetune.jobs import LOCAL, TrainingJobs, lora_name
from studio.finetune.settings import (OPTIMIZERS, RANGES, TrainSettings, default_preset, explain_total, load_preset,
                                      make_settings, preset_names, total_steps)
from studio.serving.studio import Studio

NUMBER_FIELDS = ("rank", "alpha", "lr", "text_encoder_lr", "steps", "epochs", "repeats", "batch", "resolution",
                 "seed")
PRIOR_FIELDS = ("prior_weight", "class_pictures", "caption_dropout", "embedding_lr")
ADVANCED = ("schedule", "warmup", "min_snr_gamma", "noise_offset", "flip", "gradient_checkpointing", "buckets", "optimizer", "sample_every",
            "save_every",
            *PRIOR_FIELDS, "class_words")
LABELS = {"rank": "Rank", "alpha": "Alpha (scale = alpha / rank)", "lr": "Learning rate (UNet)",
          "text_encoder_lr": "Text encoder learning rate (0: not trained)", "steps": "Steps (0: from epochs)",
          "epochs": "Epochs", "repeats": "Repeats (0: the folder's N_)", "batch": "Batch",
          "resolution": "Resolution (0: the model's)", "seed": "Seed", "schedule": "Learning-rate schedule",
          "warmup": "Warm-up (share of steps)", "min_snr_gamma": "Min-SNR gamma (0: off)",
          "noise_offset": "Noise offset", "flip": "Also mirrored pictures",
          "gradient_checkpointing": "Gradient checkpointing (less memory, slower steps)",
          "optimizer": "Optimiser (adamw8bit: less GPU memory, needs bitsandbytes)",
          "buckets": "Keep each picture's shape (aspect-ratio buckets) instead of a square crop",
          "sample_every": "Sample pictures every N steps (0: four in the run)",
          "save_every": "Checkpoint every N steps (0: with the samples)",
          "prior_weight": "Keep what the model knows: weight of its own pictures (0: off)",
          "class_pictures": "How many of its pictures (0: as many as yours)",
          "caption_dropout": "Caption dropout (share of pictures trained without their caption)",
          "embedding_lr": "Learning rate of the new words' own vectors (0: not learned)",
          "class_words": "What it is a kind of (drawn in its place in the model's pictures: dog; red, blue)"}
SMOOTH = 0.9
# a field a preset leaves out: the settings' own default
PLAIN = {f.name: f.default for f in dataclasses.fields(TrainSettings) if f.default is not dataclasses.MISSING}


def owner(request: gr.Request | None) -> str:
    """Whose job: the login name; without logins every visitor is the same user."""
    return getattr(request, "username", None) or LOCAL


def _jobs(jobs: TrainingJobs | None) -> TrainingJobs:
    if jobs is None:
        raise gr.Error("Training is not set up in this studio.")
    return jobs


def build(studio: Studio, jobs: TrainingJobs | None) -> tuple[gr.Button, Any, list]:
    """The tab over the studio's training `jobs` (None: not set up); returns its "Try it" button,
    the page-load function that re-attaches the user's jobs and lists their datasets, and what it
    fills (the job list, which "Try it" reads first, and the dataset list)."""
    c: dict[str, Any] = {}
    first, reason = _default_preset(studio)
    D = make_settings({"name": "x", "dataset": "x", "preset": first})    # the fields start as the preset
    with gr.Row():
        with gr.Column(scale=3):
            gr.Markdown("#### 1. Pictures and captions")
            with gr.Row():
                c["dataset"] = gr.Dropdown([], value=None, allow_custom_value=True, scale=3,      # (filled per login)
                                           label="Dataset (a folder in datasets/; type a new name to make one)",
                                           elem_id="train-dataset")
                refresh = gr.Button("↻", scale=0, min_width=40, elem_id="train-refresh")
            uploads = gr.File(file_count="multiple", file_types=["image", ".txt"], type="filepath",
                              label="Add pictures (and .txt captions named like them)", elem_id="train-uploads")
            gallery = gr.Gallery(label="Pictures", columns=8, height=160, elem_id="train-gallery")
            captions = gr.Dataframe(headers=["file", "caption"], datatype=["str", "str"], column_count=(2, "fixed"),
                                    interactive=True, label="Captions (edit, then Save captions)",
                                    elem_id="train-captions")
            save_captions = gr.Button("Save captions", size="sm", elem_id="train-save-captions")
            report = gr.Markdown("", elem_id="train-report")
            gr.Markdown("#### 2. What to train")
            with gr.Row():
                c["name"] = gr.Textbox("", label="LoRA name (models/loras/NAME.safetensors)", elem_id="train-name")
                c["trigger"] = gr.Textbox("", label="Trigger word (put before every caption)", elem_id="train-trigger")
                c["preset"] = gr.Dropdown(preset_names(), value=first, label="Preset",
                                          elem_id="train-preset")
            why = gr.Markdown(f"*{reason}*", elem_id="train-why")
            with gr.Row():
                for key in NUMBER_FIELDS:
                    c[key] = gr.Number(getattr(D, key), label=LABELS[key], minimum=RANGES[key][0],
                                       maximum=RANGES[key][1], min_width=110, elem_id=f"train-{key.replace('_', '-')}")
            with gr.Row():       # prior preservation (studio/finetune/prior.py): the model's own pictures beside
                for key in PRIOR_FIELDS:
                    c[key] = gr.Number(getattr(D, key), label=LABELS[key], minimum=RANGES[key][0],
                                       maximum=RANGES[key][1], min_width=110, elem_id=f"train-{key.replace('_', '-')}")
                c["class_words"] = gr.Textbox(D.class_words, label=LABELS["class_words"], elem_id="train-class-words")
            with gr.Accordion("Advanced", open=False):
                with gr.Row():
                    c["schedule"] = gr.Dropdown(["cosine", "constant", "linear"], value=D.schedule,
                                                label=LABELS["schedule"])
                    c["optimizer"] = gr.Dropdown(list(OPTIMIZERS), value=D.optimizer, label=LABELS["optimizer"])
                    for key in ("warmup", "min_snr_gamma", "noise_offset", "sample_every", "save_every"):
                        c[key] = gr.Number(getattr(D, key), label=LABELS[key], minimum=RANGES[key][0],
                                           maximum=RANGES[key][1], min_width=110)
                    c["flip"] = gr.Checkbox(D.flip, label=LABELS["flip"])
                    c["gradient_checkpointing"] = gr.Checkbox(D.gradient_checkpointing,
                                                              label=LABELS["gradient_checkpointing"])
                    c["buckets"] = gr.Checkbox(D.buckets, label=LABELS["buckets"])
            total = gr.Markdown("", elem_id="train-total")
            with gr.Row():
                go = gr.Button("Train", variant="primary", elem_id="train-go")
                stop = gr.Button("Stop (keeps the last checkpoint)", variant="stop", elem_id="train-stop")
                resume = gr.Button("Resume", elem_id="train-resume")
        with gr.Column(scale=2):
            job = gr.Dropdown([], value=None, label="Your training jobs", allow_custom_value=True,
                              elem_id="train-job")
            progress = gr.Markdown("", elem_id="train-progress")
            loss = gr.LinePlot(x="step", y="loss", color="curve", height=220, label="Loss", elem_id="train-loss")
            samples = gr.Gallery(label="Samples (fixed seeds; step 0 is the model without the LoRA)", columns=3,
                                 height=300, elem_id="train-samples")
            try_it = gr.Button("Try it in text to image", visible=False, elem_id="train-try")
    _wire_dataset(jobs, c, refresh, uploads, gallery, captions, save_captions, report, total)
    _wire_settings(jobs, c, why, total)
    attach = _wire_job(studio, jobs, c, go, stop, resume, job, progress, loss, samples, try_it)
    return try_it, attach, [job, c["dataset"]]


def _dataset_names(jobs: TrainingJobs | None, who: str) -> list[str]:
    """`who`'s datasets (a login's own folder when the studio has logins)."""
    return ds.dataset_names(jobs.datasets_of(who)) if jobs else []


def _default_preset(studio: Studio) -> tuple[str, str]:
    """The preset made for the studio's model (the tab opens on it), and why."""
    try:
        return default_preset(studio.model_info())
    except StudioError:
        return "subject", ""


def _why(preset: str) -> str:
    try:
        return "*" + str(load_preset(preset).get("why", "")) + "*"
    except StudioError:
        return ""


# -- the dataset ----------------------------------------------------------------------------------------

def show_dataset(jobs: TrainingJobs | None, name: str | None, trigger: str = "", who: str = LOCAL):
    """Gallery, caption table and pre-flight report of `who`'s dataset `name`."""
    if not name:
        return [], [], "Pick a dataset, or type a new name and add pictures."
    try:
        folder = ds.dataset_folder(_jobs(jobs).datasets_of(who), name)
        if not folder.exists():
            return [], [], f"**{name}** is new: add pictures."
        data = ds.read_dataset(folder, trigger)
    except StudioError as exc:
        return [], [], f"⚠ {exc}"
    problems = ds.preflight(data)
    lines = [f"**{len(data.items)} pictures**, {data.with_repeats} with repeats."]
    lines += [f"- ⚠ {p}" for p in problems[:12]] or ["- Every picture has a caption."]
    return ([(str(i.path), i.caption[:60]) for i in data.items[:64]],
            [[i.path.name, i.caption] for i in data.items], "\n".join(lines))


def _wire_dataset(jobs, c, refresh, uploads, gallery, captions, save_captions, report, total) -> None:
    def load(name, trigger, request: gr.Request):
        return show_dataset(jobs, name, trigger, owner(request))

    def rescan(request: gr.Request):
        return gr.Dropdown(choices=_dataset_names(jobs, owner(request)))

    def add(name, files, trigger, request: gr.Request):
        if not files:
            return gr.skip(), *[gr.skip()] * 3
        try:
            ds.add_files(_jobs(jobs).datasets_of(owner(request)), name, files)
        except StudioError as exc:
            raise gr.Error(str(exc)) from None
        return (gr.Dropdown(choices=_dataset_names(jobs, owner(request)), value=name),
                *show_dataset(jobs, name, trigger, owner(request)))

    def save(name, rows, trigger, request: gr.Request):
        try:
            data = ds.read_dataset(ds.dataset_folder(_jobs(jobs).datasets_of(owner(request)), name))
            table = rows.values.tolist() if hasattr(rows, "values") else (rows or [])
            n = ds.write_captions(data, {str(r[0]): str(r[1]) for r in table if r and r[0]})
        except StudioError as exc:
            raise gr.Error(str(exc)) from None
        gr.Info(f"Saved {n} captions.")
        return show_dataset(jobs, name, trigger, owner(request))

    shown = [gallery, captions, report]
    private = dict(api_visibility="private", queue=False)
    c["dataset"].change(load, [c["dataset"], c["trigger"]], shown, **private)
    c["trigger"].blur(load, [c["dataset"], c["trigger"]], shown, **private)
    refresh.click(rescan, None, c["dataset"], **private)
    uploads.upload(add, [c["dataset"], uploads, c["trigger"]], [c["dataset"], *shown], **private)
    save_captions.click(save, [c["dataset"], captions, c["trigger"]], shown, **private)


# -- settings -------------------------------------------------------------------------------------------

def total_text(jobs: TrainingJobs | None, raw: dict, who: str = LOCAL) -> str:
    try:
        settings = make_settings({**raw, "name": raw.get("name") or "x", "dataset": raw.get("dataset") or "x"})
        data = ds.read_dataset(ds.dataset_folder(_jobs(jobs).datasets_of(who), raw.get("dataset") or ""),
                               settings.trigger, settings.repeats)
    except StudioError as exc:
        return f"*{exc}*"
    total = explain_total(settings, len(data.items), data.with_repeats)
    last = _jobs(jobs).last_like(settings)
    if last is None:
        return total + (" — the time and memory are known after the first steps (no run like it on this "
                        "machine yet)")
    seconds, steps = float(last["s_per_step"]), total_steps(settings, data.with_repeats)
    peak = f"; it peaked at {last['peak_mb'] / 1024:.1f} GB of {last.get('memory', 'memory')}" if last.get("peak_mb") else ""
    return total + (f" — about {max(1, round(seconds * steps / 60))} min of steps on this machine "
                    f"({seconds:.2f} s a step in your last run like it{peak}; samples and class pictures come on top)")


def _wire_settings(jobs, c, why, total) -> None:
    keys = list(c)

    def fill(preset):
        try:
            values = load_preset(preset)
        except StudioError as exc:
            raise gr.Error(str(exc)) from None
        return [values.get(k, PLAIN[k]) if k in (*NUMBER_FIELDS, *ADVANCED) else gr.skip() for k in keys] + [
            _why(preset)]

    count = _plain_event(lambda raw, request: total_text(jobs, raw, owner(request)), keys,
                         "The one total of steps these settings give on the dataset.")

    private = dict(api_visibility="private", queue=False, show_progress="hidden")
    c["preset"].change(fill, c["preset"], [*(c[k] for k in keys), why], **private)
    for key in ("dataset", "preset", "steps", "epochs", "repeats", "batch", "trigger"):
        c[key].change(count, [c[k] for k in keys], total, **private)


# -- the job --------------------------------------------------------------------------------------------

def start(jobs: TrainingJobs | None, model: str, raw: dict, request: gr.Request | None) -> str:
    """Check the settings and start the job (its own process) on `model` unless they name one;
    returns its id."""
    raw = {k: v for k, v in raw.items() if v is not None}
    raw.setdefault("model", model)
    try:
        return _jobs(jobs).start(make_settings(raw), owner(request))
    except StudioError as exc:
        raise gr.Error(str(exc)) from None


def job_view(jobs: TrainingJobs | None, job_id: str | None, user: str = LOCAL) -> tuple:
    """(progress text, loss curve, samples, whether there is a LoRA to try) of one of `user`'s jobs."""
    if not job_id:
        return "", None, [], False
    try:
        status, folder = _jobs(jobs).status(job_id, user), _jobs(jobs).folder(job_id)
    except StudioError as exc:
        return f"⚠ {exc}", None, [], False
    step, total_ = status.get("step", 0), status.get("total", 0)
    text = [f"**{job_id}** · {status.get('state')} · step {step}/{total_ or '?'}"]
    if status.get("state") in ("running", "sampling", "saving") and status.get("s_per_step"):
        text.append(f"{status['s_per_step']:.2f} s a step · about {_duration(status.get('eta_s', 0))} left "
                    f"(training time only)")
    if status.get("loss") is not None:
        text.append(f"loss {status['loss']:.5f} (smoothed {status.get('smooth', 0):.5f})")
    if status.get("message"):
        text.append(str(status["message"]))
    return ("  \n".join(text), _loss_frame(folder.losses()),
            [(str(folder.path / "samples" / r["file"]), f"step {r['step']}: {r['prompt'][:50]}")
             for r in folder.samples()[-12:]], status.get("state") == "done")


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds or 0))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def _loss_frame(losses: list[tuple[int, float]]):
    """Raw and smoothed loss for the plot (at most ~400 points of each)."""
    import pandas as pd

    if not losses:
        return None
    every = max(1, math.ceil(len(losses) / 400))
    rows, smooth = [], None
    for i, (step, value) in enumerate(losses):
        smooth = value if smooth is None else SMOOTH * smooth + (1 - SMOOTH) * value
        if i % every == 0 or i == len(losses) - 1:
            rows += [{"step": step, "loss": value, "curve": "raw"}, {"step": step, "loss": smooth, "curve": "smoothed"}]
    return pd.DataFrame(rows)


def try_prompt(jobs: TrainingJobs | None, job_id: str, who: str = LOCAL) -> str:
    """The text-to-image prompt that uses one of `who`'s finished LoRAs: its tag and trigger word."""
    try:
        folder = _jobs(jobs).owned(job_id, who)
    except StudioError as exc:
        raise gr.Error(str(exc)) from None
    settings = folder.settings_json()
    return f"<lora:{lora_name(settings.get('name', ''), who)}:1> {settings.get('trigger', '')}".strip()


def _plain_event(fn, keys: list[str], doc: str):
    """An event function taking the tab's fields by name (its API parameters) and the request."""
    import inspect

    def event(*values):
        *fields, request = values
        return fn(dict(zip(keys, fields)), request)

    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    event.__signature__ = inspect.Signature([inspect.Parameter(k, kind, default=None) for k in keys]
                                            + [inspect.Parameter("request", kind, default=None)])
    event.__annotations__ = {"request": gr.Request}
    event.__doc__ = doc
    return event


def _wire_job(studio, jobs, c, go, stop, resume, job, progress, loss, samples, try_it):
    keys = list(c)

    def train(raw: dict, request: gr.Request | None):
        job_id = start(jobs, studio.model_source(), raw, request)
        return gr.Dropdown(choices=_jobs(jobs).jobs(owner(request)), value=job_id), job_id

    new_id = gr.Textbox(visible=False)
    go.click(_plain_event(train, keys, "Start training a LoRA: TrainSettings fields (the preset fills what is left "
                                       "out). Returns the job list and the new job's id; poll /train_status."),
             [c[k] for k in keys], [job, new_id], api_name="train", queue=False)

    def status(job_id: str, request: gr.Request) -> dict:
        """One of your training jobs' status: state, step, total, loss, s_per_step, eta_s, message, result."""
        try:
            return _jobs(jobs).status(job_id, owner(request))
        except StudioError as exc:
            raise gr.Error(str(exc)) from None

    gr.api(status, api_name="train_status")

    def listed(request: gr.Request) -> list[str]:
        """Your training jobs' ids, newest first (a new session sees the jobs it started before)."""
        return _jobs(jobs).jobs(owner(request))

    gr.api(listed, api_name="train_jobs")

    def act(action: str):
        def run(job_id: str, request: gr.Request) -> str:
            try:
                getattr(_jobs(jobs), action)(job_id, owner(request))
            except StudioError as exc:
                raise gr.Error(str(exc)) from None
            return job_id
        run.__doc__ = f"{action.capitalize()} a training job of yours (its id)."
        return run

    stop.click(act("stop"), job, None, api_name="train_stop", queue=False)
    resume.click(act("resume"), job, None, api_name="train_resume", queue=False)

    def view(job_id, request: gr.Request):
        text, frame, pictures, done = job_view(jobs, job_id, owner(request))
        return text, frame, pictures, gr.Button(visible=done)

    shown = [progress, loss, samples, try_it]
    gr.Timer(2.0).tick(view, job, shown, api_visibility="private", queue=False, show_progress="hidden")
    job.change(view, job, shown, api_visibility="private", queue=False)

    def attach(request: gr.Request):
        """On page load: the user's jobs, the newest selected (a reload re-attaches), and datasets."""
        mine = jobs.jobs(owner(request)) if jobs else []
        return (gr.Dropdown(choices=mine, value=mine[0] if mine else None),
                gr.Dropdown(choices=_dataset_names(jobs, owner(request))))

    return attach
