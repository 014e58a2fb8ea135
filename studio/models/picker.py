"""The model picker: which models a studio offers by name, which one is loaded, and switching to
one by its name. Paths are never taken from a caller: a name from the models folder, the model
named with --model at start, the embedded model (and its few-step student), or a hub id already
in the local Hugging Face cache."""

from __future__ import annotations

from dataclasses import dataclass

from studio.errors import InvalidRequest
from studio.models.library import EMBEDDED, MODEL_KINDS, ModelLibrary
from studio.models.manager import ModelManager
from studio.models.sources import STUDENT, ModelInfo, looks_like_hub_id, student_available


@dataclass
class ModelPicker:
    manager: ModelManager
    library: ModelLibrary | None = None
    start_model: str = ""        # what --model named: trusted, it was typed on the command line

    def _models(self, rescan: bool = False) -> dict[str, str]:
        """The models folder's models by picker name -> (kind, name): checkpoints by their name,
        ComfyUI's diffusion_models as diffusion_models/<name>."""
        if not self.library:
            return {}
        names = self.library.scan() if rescan else self.library.names()
        return {(n if kind == "checkpoints" else f"{kind}/{n}"): (kind, n) for kind in MODEL_KINDS for n in names[kind]}

    def choices(self, rescan: bool = False) -> list[str]:
        """What the picker offers: the embedded model (and its few-step student), the --model
        source, the models folder."""
        names = list(self._models(rescan))
        extra = [self.start_model] if self.start_model and self.start_model not in (*names, STUDENT) else []
        return [EMBEDDED, *([STUDENT] if student_available() else []), *extra, *names]

    def current(self) -> str:
        """The loaded model's name in the picker."""
        source = self.manager.source
        if not source:
            return EMBEDDED
        if source == STUDENT:
            return STUDENT
        for choice, (kind, name) in self._models().items():
            if str(self.library.get(kind, name).path) == source:
                return choice
        return source

    def select(self, choice: str) -> ModelInfo:
        """Switch to a model named in the picker (or the API); it loads at the next generation."""
        choice = str(choice or "").strip()
        source, allow_download = self._source(choice)
        if source == self.manager.source:
            return self.manager.info()
        return self.manager.switch(source, allow_download=allow_download)

    def _source(self, choice: str) -> tuple[str, bool]:
        """(what the manager loads, whether it may download) for a name in the picker."""
        if choice in ("", EMBEDDED):
            return "", False
        if choice == STUDENT and student_available():
            return STUDENT, False
        if choice == self.start_model:
            return choice, True
        models = self._models()
        if choice in models:
            return str(self.library.get(*models[choice]).path), False
        if looks_like_hub_id(choice):
            from huggingface_hub import try_to_load_from_cache
            if not isinstance(try_to_load_from_cache(choice, "model_index.json"), str):
                raise InvalidRequest(
                    f"{choice} is not in the local Hugging Face cache, and the studio downloads only "
                    f"what is named at start: python app.py --model {choice}")
            return choice, False
        where = self.library.folder("checkpoints") if self.library else "the models folder"
        raise InvalidRequest(f"Unknown model {choice!r}: pick one from the list, put the file in "
                             f"{where} and press refresh, or give a hub id (owner/name) that is "
                             "in the local Hugging Face cache.")
