"""A fresh diffusers scheduler for each request, from the samplers table (studio/samplers.py).

Each request builds its own scheduler with `from_config` from the loaded model's scheduler
config (schedulers hold per-run state, so one is never shared between requests). A flow-matching
model (Flux, SD 3.5) takes its sampler from the flow table, with the model's shift or the
request's: a shift fixes the schedule (Flux dev otherwise shifts by the picture's size).
"""

from __future__ import annotations

from typing import Any

from studio.samplers import FLOW_SCHEDULERS, SCHEDULERS


def build_scheduler(name: str, base_config: Any, *, seed: int | None = None, flow: bool = False,
                    shift: float = 0.0):
    """A fresh scheduler for one request, from the model's own scheduler config."""
    import diffusers

    spec = (FLOW_SCHEDULERS if flow else SCHEDULERS)[name]
    cls = getattr(diffusers, spec.cls)
    kwargs = dict(spec.kwargs)
    if spec.seeded and seed is not None:
        kwargs["noise_sampler_seed"] = seed
    if flow:
        kwargs.update(_shift(spec.cls, dict(base_config), shift))
    return cls.from_config(base_config, **kwargs)


def _shift(cls: str, config: dict, shift: float) -> dict:
    """The shift as each scheduler names it: FlowMatch* `shift` (a fixed one replaces Flux dev's
    shift by picture size), the solvers `flow_shift` (they keep a model's shift by size: its
    pipeline hands them its `mu`)."""
    if cls.startswith("FlowMatch"):
        return {"shift": shift, "use_dynamic_shifting": False} if shift else {}
    return {"flow_shift": shift or config.get("shift", 1.0)}
