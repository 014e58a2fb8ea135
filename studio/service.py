"""Studio: what the UI is given. It holds the one ModelManager, the output folder, the presets
and the per-session stop flags, and runs the engine. The UI talks to this object only, so it
never imports torch or diffusers (the engine is imported on first use, or by `warm_up`)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from .config import Settings
from .jobs import JobControl
from .models import ModelInfo, ModelManager
from .outputs import OutputFolder
from .presets import Presets, load_presets
from .requests import GenerationRequest, GenerationResult, Limits


@dataclass
class Studio:
    manager: ModelManager
    outputs: OutputFolder
    presets: Presets
    limits: Limits = field(default_factory=Limits)
    jobs: JobControl = field(default_factory=JobControl)

    @classmethod
    def from_settings(cls, settings: Settings) -> "Studio":
        return cls(manager=ModelManager(settings.model, settings.device, settings.dtype,
                                        settings.allow_pickle, settings.prediction_type),
                   outputs=OutputFolder(settings.outputs), presets=load_presets(settings.presets),
                   limits=settings.limits)

    def model_info(self) -> ModelInfo:
        return self.manager.info()

    def run(self, request: GenerationRequest, on_step=None, should_stop=None) -> GenerationResult:
        from .engine import generate

        return generate(request, self.manager, self.outputs, self.presets,
                        on_step=on_step, should_stop=should_stop)

    def warm_up(self) -> threading.Thread:
        """Import torch and diffusers in the background so the first click does not wait."""
        def work():
            from . import engine  # noqa: F401
        t = threading.Thread(target=work, name="warm-up", daemon=True)
        t.start()
        return t
