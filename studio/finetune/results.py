"""What a training run leaves behind: the LoRA file as it is now (checkpoints, the samples'
preview), sample pictures drawn through the run's own Studio, the evaluation after the last step
(evaluate.py, and the model's own check where its package plugs one in), and the export into
models/loras (or models/embeddings) with kohya's metadata, A1111's sidecar and a preview."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from studio.finetune.dataset import Dataset, with_trigger
from studio.finetune.export import (embedding_files, kohya_tensors, lora_state, sidecar, training_metadata,
                                    write_embedding, write_lora)
from studio.finetune.jobs import LOCAL, lora_name
from studio.finetune.prior import without_words
from studio.finetune.run import Run
from studio.finetune.settings import TrainSettings, has_layers
from studio.finetune.words import bundle_tensors


def lora_tensors(run: Run) -> dict:
    tensors = run.objective.tensors(run) if run.settings.lr else {}
    if run.settings.text_encoder_lr > 0:
        for encoder, prefix in zip(run.text_encoders, run.side.prefixes):
            tensors |= kohya_tensors(lora_state(encoder), prefix, run.settings.alpha)
    return tensors | bundle_tensors(run.learned)


# -- samples --------------------------------------------------------------------------------------------

def sample_prompts(settings: TrainSettings, dataset: Dataset) -> list[str]:
    """The trigger (or the first caption), a caption from the pictures, and the same caption
    without the trigger: a control that shows whether the LoRA leaks into other prompts."""
    if settings.sample_prompts:
        return [with_trigger(p, settings.trigger) for p in settings.sample_prompts]
    caption = dataset.items[settings.seed % len(dataset.items)].caption
    first = settings.trigger or dataset.items[0].caption
    prompts = [first, caption]
    if settings.trigger:
        prompts.append(without_words(caption, [settings.trigger]) or "a picture")
    return list(dict.fromkeys(prompts))


PREVIEW = "preview.safetensors"      # the LoRA as it is now, in the job's own models/loras


def write_preview(run: Run) -> None:
    write_lora(run.job.path / "models" / "loras" / PREVIEW, lora_tensors(run), {"ss_output_name": "preview"})
    run.studio.names("loras", rescan=True)


def draw(run: Run, prompt: str, seed: int, weight: float = 0.0):
    """One picture as txt2img makes it, through the run's own Studio: the model with the preview
    LoRA at `weight` (0: the model without it) — the samples, class pictures and evaluation."""
    request = run.studio.make_request("txt2img", prompt=prompt, seed=seed, width=run.resolution,
                                      height=run.resolution, loras=[(PREVIEW, weight)] if weight else [])
    return run.studio.submit(request, user="trainer", save=False).result().images[0]


def samples(run: Run) -> list[Path]:
    """Pictures from fixed seeds with the LoRA as it is now (step 0: the model without it)."""
    from studio.outputs.folder import save_as

    run.job.set_status(state="sampling", step=run.step)
    if run.step:
        write_preview(run)
    made = []
    for k, prompt in enumerate(sample_prompts(run.settings, run.dataset)):
        picture = draw(run, prompt, run.settings.seed + k, 1.0 if run.step else 0.0)
        name = f"step_{run.step:05d}_{k}.png"
        made.append(save_as(run.job.path / "samples" / name, picture.image, picture.parameters, picture.data))
        run.job.add_sample({"step": run.step, "k": k, "prompt": prompt, "seed": picture.seed, "file": name})
    run.job.set_status(state="running")
    return made


def lora_check(model_name: str):
    """A model's own reading of a LoRA's pictures, where its package plugs one in (the entry
    point group `sd_studio.lora_checks`, keyed by the model's name: the embedded model's pixel checker)."""
    from importlib.metadata import entry_points

    found = [ep for ep in entry_points(group="sd_studio.lora_checks") if ep.name == model_name]
    return found[0].load() if found else None


def evaluation(run: Run) -> dict:
    """The finished LoRA on the dataset's own captions against the model without it
    (studio/finetune/evaluate.py), written to the job folder."""
    import numpy as np

    from studio.finetune.evaluate import evaluate

    run.job.set_status(state="evaluating", step=run.step)
    write_preview(run)
    captions = [i.caption for i in run.dataset.items]
    pixels = lambda prompt, seed, weight: np.asarray(draw(run, prompt, seed, weight).image)  # noqa: E731
    reader = lora_check(run.studio.model_info().name)
    check = (lambda drawn, draw_: reader(drawn, run.words, [i.path for i in run.dataset.items], draw_,
                                         run.settings.seed + 300_000)) if reader else None
    figures = evaluate(captions, run.words, run.settings.seed, pixels, text_encoder=run.settings.text_encoder_lr > 0,
                       check=check)
    run.job.file("evaluation.json").write_text(json.dumps(figures, indent=1), encoding="utf-8")
    return figures


# -- the whole run --------------------------------------------------------------------------------------

def export(run: Run, models_dir: Path, model_hash: str, figures: dict | None = None) -> Path:
    """The final LoRA into models/loras with its metadata, A1111's sidecar and a preview (a
    run that learns only the words' vectors: their embedding files into models/embeddings)."""
    import shutil

    s, info = run.settings, run.studio.model_info()
    per_epoch = math.ceil(run.dataset.with_repeats / s.batch)
    meta = training_metadata(s, family=info.family, model_name=info.name, model_hash=model_hash,
                             dataset_dirs=run.dataset.dataset_dirs(), tag_frequency=run.dataset.tag_frequency(),
                             images=run.dataset.with_repeats, step=run.step, epoch=math.ceil(run.step / per_epoch),
                             total=run.total, started=run.started, finished=time.time(), resolution=run.resolution,
                             sizes=run.sizes)
    name = lora_name(s.name, run.job.job().get("owner", LOCAL))       # a login's own folder
    if not has_layers(s):                   # textual inversion: the words' vectors alone, as embedding files
        files = embedding_files(bundle_tensors(run.learned), name)
        outs = [write_embedding(models_dir / "embeddings" / f"{stem}.safetensors", tensors, meta)
                for stem, tensors in files.items()]
        out = outs[0]
    else:
        out = write_lora(models_dir / "loras" / f"{name}.safetensors", lora_tensors(run), meta)
    description = f"Trained on {len(run.dataset.items)} pictures of {s.dataset!r} for {run.step} steps." + (
        f" {figures['summary']}" if figures else "")
    (out.with_suffix(".json")).write_text(json.dumps(sidecar(s, info.family, description), indent=1),
                                          encoding="utf-8")
    last = [r for r in run.job.samples() if r["step"] == run.step and r["k"] == 0]
    if last:
        shutil.copyfile(run.job.path / "samples" / last[0]["file"], out.with_suffix(".preview.png"))
    return out
