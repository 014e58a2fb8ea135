"""What a training run's stages share (studio/finetune/trainer.py, results.py): the run's state,
and the one failure a user reads."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from studio.finetune.dataset import Dataset
from studio.finetune.folder import JobFolder
from studio.finetune.settings import TrainSettings
from studio.finetune.text import FAMILIES, TextSide


class TrainingFailed(Exception):
    """The run cannot go on (a non-finite loss, a model it cannot train); the message is the user's."""


@dataclass
class Run:
    """What the stages share."""
    job: JobFolder
    settings: TrainSettings
    dataset: Dataset
    studio: object                      # the in-process Studio that makes the sample pictures
    pipe: object
    device: str
    resolution: int
    total: int
    data: dict = field(default_factory=dict)   # latents, ids or embeddings, per picture
    prior: list = field(default_factory=list)  # the class pictures (studio/finetune/prior.py)
    words: list[str] = field(default_factory=list)   # the new words (prior.new_words)
    learned: list = field(default_factory=list)   # [(bundle part, [(word, token ids)], WordRows)] (words.py)
    side: TextSide = FAMILIES["sd"]            # how the family reads captions (text.py)
    objective: object = None                    # what its denoiser learns (objectives.py)
    denoiser: torch.nn.Module | None = None     # the trained copy of the UNet or transformer
    text_encoders: list = field(default_factory=list)   # trained copies (LoRA layers or the words' rows)
    params: list = field(default_factory=list)
    opt: torch.optim.Optimizer | None = None
    gen: torch.Generator | None = None
    step: int = 0
    sizes: list = field(default_factory=list)        # each picture's (width, height): buckets.py
    order: list[list[int]] = field(default_factory=list)   # this epoch's batches (with repeats)
    position: int = 0
    s_per_step: float = 0.0
    smooth: float | None = None
    started: float = field(default_factory=time.time)
