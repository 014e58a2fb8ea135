"""What a training run is asked to do: presets (data files in presets/train/) and the checked
settings record every caller builds — the Train tab, `/train`, the command line. No torch here."""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from studio.config import PRESETS_DIR
from studio.errors import InvalidRequest
from studio.fields import bounded

SCHEDULES = ("cosine", "constant", "linear")
OPTIMIZERS = ("adamw", "adamw8bit")      # adamw8bit: bitsandbytes' 8-bit states, on a CUDA GPU
NAME_RULE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# (low, high) for every number a user sets; checked once, at the boundary.
RANGES: dict[str, tuple[float, float]] = {
    "rank": (1, 128), "alpha": (0.01, 256), "lr": (0.0, 1.0), "text_encoder_lr": (0.0, 1.0),
    "steps": (0, 100_000), "epochs": (1, 1000), "repeats": (0, 1000), "batch": (1, 64),
    "resolution": (0, 2048), "seed": (0, 2 ** 32 - 1), "warmup": (0.0, 0.5), "min_snr_gamma": (0.0, 100.0),
    "noise_offset": (0.0, 1.0), "sample_every": (0, 100_000), "save_every": (0, 100_000),
    "embedding_lr": (0.0, 1.0), "prior_weight": (0.0, 10.0), "class_pictures": (0, 2000), "caption_dropout": (0.0, 0.9),
}
INTEGER = {"rank", "steps", "epochs", "repeats", "batch", "resolution", "seed", "sample_every", "save_every",
           "class_pictures"}


@dataclass
class TrainSettings:
    name: str                       # the LoRA's file name in models/loras (without .safetensors)
    dataset: str                    # a folder under the studio's datasets folder
    trigger: str = ""               # prepended to every caption that lacks it
    preset: str = "subject"
    rank: int = 8
    alpha: float = 4.0              # the scale is alpha / rank (written as such in the file)
    lr: float = 1e-4                # UNet
    text_encoder_lr: float = 0.0    # 0: the text encoder is not trained
    embedding_lr: float = 0.0       # > 0: the new words' own vectors learned too (pivotal tuning, words.py)
    steps: int = 0                  # 0: from epochs x repeats x pictures / batch
    epochs: int = 8
    repeats: int = 0                # 0: the folder's `N_` prefix, else 1
    batch: int = 1
    resolution: int = 0             # 0: the model's native size (square, centre crop)
    seed: int = 0
    schedule: str = "cosine"
    warmup: float = 0.05            # share of the steps with a rising learning rate
    min_snr_gamma: float = 5.0      # 0: off (Hang et al. 2023, "5 is recommended by paper")
    noise_offset: float = 0.0
    flip: bool = False              # also train on mirrored pictures
    gradient_checkpointing: bool = False   # less memory for about a third more time a step (SDXL on 12-16 GB)
    buckets: bool = False           # each picture at its own aspect ratio (buckets.py), not cut to a square
    optimizer: str = "adamw"        # adamw8bit: a quarter of AdamW's state memory (bitsandbytes, CUDA)
    evaluate: bool = True           # the check after training (evaluate.py); off: benchmarks of the steps alone
    prior_weight: float = 0.0       # > 0: the model's own pictures trained beside (studio/finetune/prior.py)
    class_pictures: int = 0         # how many of them (0: as many as the dataset's pictures)
    class_words: str = ""           # what the new thing is a kind of ("dog"; "red, blue"): in its place there
    caption_dropout: float = 0.0    # share of the steps' pictures trained with an empty caption
    sample_every: int = 0           # 0: about four times in the run
    save_every: int = 0             # 0: with the samples
    sample_prompts: list[str] = field(default_factory=list)   # empty: trigger, caption, control
    model: str = ""                 # the model's source ("" = the embedded model)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def preset_names(folder: Path = PRESETS_DIR) -> list[str]:
    return sorted(p.stem for p in (folder / "train").glob("*.toml"))


def load_preset(name: str, folder: Path = PRESETS_DIR) -> dict[str, Any]:
    """A preset's fields (and its `why`), from presets/train/NAME.toml."""
    if name not in preset_names(folder):
        raise InvalidRequest(f"Unknown training preset {name!r}: one of {', '.join(preset_names(folder))}.")
    with open(folder / "train" / f"{name}.toml", "rb") as f:
        return tomllib.load(f)


def default_preset(model: Any, folder: Path = PRESETS_DIR) -> tuple[str, str]:
    """The preset a run on `model` (its ModelInfo) starts from, and why: the first preset whose
    `default_for` names the model's name or family ("name:embedded-shapes", "family:SD 1.x");
    else `subject`."""
    keys = {f"name:{getattr(model, 'name', '')}", f"family:{getattr(model, 'family', '')}"}
    for name in preset_names(folder):
        preset = load_preset(name, folder)
        matched = keys & set(preset.get("default_for", []))
        if matched:
            what = next(iter(matched)).split(":", 1)[1]
            return name, f"The default for {what}: {preset.get('why', '')}"
    return "subject", f"No preset is made for {getattr(model, 'family', 'this model')}: subject, the usual start."


def make_settings(raw: dict[str, Any], folder: Path = PRESETS_DIR) -> TrainSettings:
    """Settings from a preset overlaid with what the caller gave (None or missing: the preset's),
    every field checked; a clear InvalidRequest names the first wrong one."""
    known = {f.name for f in dataclasses.fields(TrainSettings)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise InvalidRequest(f"Unknown training setting(s): {', '.join(unknown)}.")
    preset = str(raw.get("preset") or "subject")
    values = {k: v for k, v in load_preset(preset, folder).items() if k in known}
    values.update({k: v for k, v in raw.items() if v is not None})
    values["preset"] = preset
    for key in ("name", "dataset"):
        if not str(values.get(key) or "").strip():
            raise InvalidRequest(f"Training needs a {key}.")
    values = {k: _checked(k, v) for k, v in values.items()}
    if not NAME_RULE.match(values["name"]):
        raise InvalidRequest(f"LoRA name {values['name']!r}: letters, digits, '_', '-' and '.', up to 64, "
                             "starting with a letter or digit.")
    if not has_layers(TrainSettings(**values)) and not values.get("embedding_lr"):
        raise InvalidRequest("Nothing to train: every learning rate is 0 (UNet, text encoder, the new words).")
    if values.get("optimizer", "adamw") not in OPTIMIZERS:
        raise InvalidRequest(f"Optimizer {values['optimizer']!r}: one of {', '.join(OPTIMIZERS)}.")
    if values.get("schedule", "cosine") not in SCHEDULES:
        raise InvalidRequest(f"Learning-rate schedule {values['schedule']!r}: one of {', '.join(SCHEDULES)}.")
    return TrainSettings(**values)


def _checked(key: str, value: Any) -> Any:
    if key in ("name", "dataset", "trigger", "preset", "schedule", "model", "class_words", "optimizer"):
        text = str(value).strip()
        if len(text) > 200 or any(ord(c) < 32 for c in text):
            raise InvalidRequest(f"{key}: at most 200 printable characters.")
        return text
    if key in ("flip", "gradient_checkpointing", "buckets", "evaluate"):
        return bool(value)
    if key == "sample_prompts":
        prompts = [str(p).strip() for p in (value or []) if str(p).strip()]
        if len(prompts) > 8 or any(len(p) > 500 for p in prompts):
            raise InvalidRequest("sample_prompts: at most 8 prompts of at most 500 characters.")
        return prompts
    return bounded(key, value, *RANGES[key], integer=key in INTEGER)


def has_layers(settings: TrainSettings) -> bool:
    """The run makes LoRA layers (a UNet or text-encoder rate); without, only the new words'
    vectors are learned: textual inversion, written as embedding files."""
    return settings.lr > 0 or settings.text_encoder_lr > 0


def total_steps(settings: TrainSettings, pictures_with_repeats: int) -> int:
    """The one number of steps the run makes: `steps` when set, else epochs x ceil(pictures x
    repeats / batch) — shown to the user before Train, so no hidden default overrides it."""
    if settings.steps:
        return settings.steps
    return settings.epochs * math.ceil(pictures_with_repeats / settings.batch)


def explain_total(settings: TrainSettings, pictures: int, with_repeats: int) -> str:
    if settings.steps:
        return f"**{settings.steps} steps** (set directly), batch {settings.batch}"
    per_epoch = math.ceil(with_repeats / settings.batch)
    return (f"{pictures} pictures × repeats = {with_repeats} a epoch ÷ batch {settings.batch} = {per_epoch} "
            f"steps × {settings.epochs} epochs = **{total_steps(settings, with_repeats)} steps**")


def sample_interval(settings: TrainSettings, total: int) -> int:
    return settings.sample_every or max(1, math.ceil(total / 4))
