"""A fresh diffusers scheduler for each request, from the samplers table (studio/samplers.py).

Each request builds its own scheduler with `from_config` from the loaded model's scheduler
config (schedulers hold per-run state, so one is never shared between requests).
"""

from __future__ import annotations

from typing import Any

from studio.samplers import SCHEDULERS


def build_scheduler(name: str, base_config: Any, *, seed: int | None = None):
    """A fresh scheduler for one request, from the model's own scheduler config."""
    import diffusers

    spec = SCHEDULERS[name]
    cls = getattr(diffusers, spec.cls)
    kwargs = dict(spec.kwargs)
    if spec.seeded and seed is not None:
        kwargs["noise_sampler_seed"] = seed
    return cls.from_config(base_config, **kwargs)
